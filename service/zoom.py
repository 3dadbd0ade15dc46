"""Reading a number twice: the second time from a window zoomed on the digits the first pass found.

A letterboxed sequence model sees the whole photo at its input size (256 px for ``stn_number``), so a number
that fills a third of a big photo reaches it at a few pixels a stroke. With ``stn.zoom_fill`` in its metadata
(``ModelSpec.zoom_fill``) the v1 routes run it a second time on a square window of the upload centred on
the digits the first pass read, the digits' extent (their crops' bounding box, the longer side) ``zoom_fill``
of the window's side, the window no larger than the upload's longer side (past the photo's edge it is filled
as the letterbox is, with the median of the photo's outer band). The window is cut from the decoded upload
(for a JPEG, the draft-mode decode at least twice the model input: windows down to half the photo are read
at the input's full resolution) and resized to the input with the letterbox's filter.

The two readings combine per image (``combine``): where the window is under ``zoom_alone_below`` of the
upload's longer side the first pass saw the number too small to trust, and the second pass alone answers;
otherwise both passes saw it at about the same resolution, from two framings, and their log-probabilities
(the length's and each position's) add. The digits' places, crops and regions are the second pass's,
mapped into the upload's pixels through the window (``Prepared.to_upload``).

The values of ``stn_number`` (fill 0.8, alone below 0.5) were chosen on its validation photos (MNIST-train
digits, training fonts), never on the held-out set: bench/results/number_zoom_*.md.

The v2 protocol and Triton run the graph once: this is the v1 service's pipeline, like an ensemble around
the model, and ``?zoom=false`` turns it off per request.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from service.geometry import region_points, to_upload
from service.preprocess import Decoded, Prepared, border_median, normalise, resize_to, to_gray
from service.repository import ModelSpec
from service.sequence import Reading


def _softmax(row: np.ndarray) -> list[float]:
    e = np.exp(row - row.max())
    return (e / e.sum()).tolist()  # type: ignore[no-any-return]


def read_length(out: dict[str, np.ndarray]) -> int:
    """The number of digits the answer would read from one image's outputs (``Reading.best``)."""
    reading = Reading(_softmax(out["length_logits"]), [_softmax(r[:-1]) for r in out["digit_logits"]])
    return len(reading.best()[0])


def window(out: dict[str, np.ndarray], prep: Prepared, fill: float) -> tuple[float, float, float]:
    """The square window ``(cx, cy, side)`` in the upload's pixels (edge coordinates) around the digits one
    image's first-pass outputs read (at least the first position's crop), the digits ``fill`` of its side."""
    n = max(1, read_length(out))
    w, h = prep.size
    corners = np.array([region_points(to_upload(t, prep.to_upload), w, h) for t in out["theta"][:n]])
    lo, hi = corners.reshape(-1, 2).min(0), corners.reshape(-1, 2).max(0)
    side = min(float((hi - lo).max()) / fill, float(max(w, h)))
    side = max(side, 1.0)
    return float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, side


def prepare_window(decoded: Decoded, spec: ModelSpec, inverted: bool,
                   win: tuple[float, float, float]) -> Prepared:
    """The model input for the square window ``win`` ``(cx, cy, side)`` (upload pixels) of ``decoded``: cut
    at whole pixels of the decoded image, filled past its edge with its outer band's median, resized to
    the input; ``to_upload`` maps the input's normalised coordinates to the upload's through the window."""
    gray = to_gray(decoded.image)
    gw, gh = gray.size
    kx, ky = gw / decoded.size[0], gh / decoded.size[1]  # decoded px per upload px (a JPEG draft: < 1)
    cx, cy, side = win
    s = max(1, round(side * kx))
    x0, y0 = math.floor(cx * kx - s / 2 + 0.5), math.floor(cy * ky - s / 2 + 0.5)
    canvas = Image.new("L", (s, s), border_median(np.asarray(gray)))
    box = (max(0, x0), max(0, y0), min(gw, x0 + s), min(gh, y0 + s))
    if box[0] < box[2] and box[1] < box[3]:
        canvas.paste(gray.crop(box), (box[0] - x0, box[1] - y0))
    arr = np.asarray(resize_to(canvas, spec.input_size), dtype=np.uint8)
    to_up = (s / gw, (2 * x0 + s) / gw - 1.0, s / gh, (2 * y0 + s) / gh - 1.0)
    return Prepared(normalise(arr, spec, inverted), inverted, decoded.size, to_up)


def _log_softmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    m = a.max(-1, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(-1, keepdims=True))  # type: ignore[no-any-return]


def combine(first: dict[str, np.ndarray], second: dict[str, np.ndarray], alone: bool) -> dict[str, np.ndarray]:
    """One image's outputs from its two passes: the second pass's, its length and digit logits replaced
    (unless ``alone``) by the sum of both passes' log-probabilities (the answer renormalises them)."""
    if alone:
        return second
    out = dict(second)
    for k in ("length_logits", "digit_logits"):
        out[k] = (_log_softmax(first[k]) + _log_softmax(second[k])).astype(np.float32)
    return out


def is_alone(spec: ModelSpec, prep: Prepared, win: tuple[float, float, float]) -> bool:
    """Whether the second pass alone answers: its window under ``zoom_alone_below`` of the longer side."""
    return win[2] < spec.zoom_alone_below * max(prep.size)
