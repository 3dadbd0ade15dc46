"""Reading a number twice: the second time from a window zoomed on the digits the first pass found.

A letterboxed sequence model sees the whole photo at its input size (256 px for ``stn_number``), so a number
that fills a third of a big photo reaches it at a few pixels a stroke. With ``stn.zoom_fill`` in its metadata
(``ModelSpec.zoom_fill``) the v1 routes run it a second time on a square window of the upload centred on
the digits the first pass read, the digits' extent (their crops' bounding box, the longer side) ``zoom_fill``
of the window's side, the window no larger than the upload's longer side (past the photo's edge it is filled
as the letterbox is, with the median of the photo's outer band). The window is read from the decoded upload
(for a JPEG, the draft-mode decode at least twice the model input: windows down to half the photo are read
at the input's full resolution) with the letterbox's filter, only its part inside the photo, so its cost
is bounded by the input's size whatever the window's. Where the first reading's crops are not finite the
first reading answers alone.

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

from service.geometry import region_corners, to_upload
from service.preprocess import Decoded, Prepared, border_median, extent_of, normalise, to_gray
from service.repository import ModelSpec
from service.sequence import Reading


def read_length(out: dict[str, np.ndarray]) -> int:
    """The number of digits the answer would read from one image's outputs (``Reading.best``)."""
    return len(Reading.of(out["length_logits"].tolist(), out["digit_logits"].tolist()).best()[0])


def window(out: dict[str, np.ndarray], prep: Prepared, fill: float) -> tuple[float, float, float] | None:
    """The square window ``(cx, cy, side)`` in the upload's pixels (edge coordinates) around the digits one
    image's first-pass outputs read (at least the first position's crop), the digits ``fill`` of its side;
    None where the crops are not finite (the first reading then stands alone)."""
    n = max(1, read_length(out))
    w, h = prep.size
    corners = np.array([region_corners(to_upload(t, prep.to_upload), w, h) for t in out["theta"][:n]])
    if not np.isfinite(corners).all():
        return None
    lo, hi = corners.reshape(-1, 2).min(0), corners.reshape(-1, 2).max(0)
    side = min(float((hi - lo).max()) / fill, float(max(w, h)))
    side = max(side, 1.0)
    return float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, side


def prepare_window(decoded: Decoded, spec: ModelSpec, inverted: bool,
                   win: tuple[float, float, float], fill: int | None = None) -> Prepared:
    """The model input for the square window ``win`` ``(cx, cy, side)`` (upload pixels) of ``decoded``: the
    part of the window inside the image resized straight to its place in the input (Pillow's ``box``: only
    that region is read, antialiased, whatever the window's size), the rest filled with the image's
    outer-band median as the letterbox fills (``fill``, the first reading's ``Prepared.fill``, where given);
    ``to_upload`` maps the input's normalised coordinates to the upload's through the window."""
    gray = to_gray(decoded.image)
    ex0, ey0, ex1, ey1 = extent_of(decoded)  # the upload in the decoded image's pixels (Decoded.extent)
    kx, ky = (ex1 - ex0) / decoded.size[0], (ey1 - ey0) / decoded.size[1]  # decoded px per upload px
    ih, iw = spec.input_size
    cx, cy, side = win
    # The window in the decoded image's pixels (a JPEG draft: fewer than the upload's), and input px per them.
    sx, sy = side * kx, side * ky
    x0, y0 = ex0 + cx * kx - sx / 2, ey0 + cy * ky - sy / 2
    fx, fy = iw / sx, ih / sy
    if fill is None:
        fill = border_median(np.asarray(gray))
    canvas = Image.new("L", (iw, ih), fill)
    # The input pixels whose whole extent lies inside the upload, and the image region they cover.
    a0, a1 = max(0, math.ceil((ex0 - x0) * fx - 1e-9)), min(iw, math.floor((ex1 - x0) * fx + 1e-9))
    b0, b1 = max(0, math.ceil((ey0 - y0) * fy - 1e-9)), min(ih, math.floor((ey1 - y0) * fy + 1e-9))
    if a0 < a1 and b0 < b1:
        box = (max(ex0, x0 + a0 / fx), max(ey0, y0 + b0 / fy), min(ex1, x0 + a1 / fx), min(ey1, y0 + b1 / fy))
        part = gray.resize((a1 - a0, b1 - b0), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
        canvas.paste(part, (a0, b0))
    arr = np.asarray(canvas, dtype=np.uint8)
    # The window in the upload's normalised coordinates, whatever the decode.
    w, h = decoded.size
    to_up = (side / w, 2 * cx / w - 1.0, side / h, 2 * cy / h - 1.0)
    return Prepared(normalise(arr, spec, inverted), inverted, decoded.size, to_up, fill)


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
