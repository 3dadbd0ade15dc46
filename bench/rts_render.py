"""A second RTS-MNIST generator, written independently of ``model/distort.py`` (whose source was not read).

RTS MNIST after Jaderberg et al. (2015), *Spatial Transformer Networks*, read again: each 28x28 MNIST digit
is rotated and scaled about its ink centre and placed at random on a 42x42 canvas. The recipe here:

- angle ``theta ~ U(-45, 45)`` degrees, positive counter-clockwise as the image is seen (y down);
- scale ``s ~ U(0.7, 1.2)``, both about the digit's **ink centre** (the centre of mass of its intensities);
- placement: the ink centre lands at ``(X, Y) ~ U([0, 42)^2)``, redrawn (with the same angle and scale)
  until the warped digit's ink fits on the canvas: every nonzero pixel of the rendering on a 64x64
  working canvas, moved by the same whole-pixel offset, lies inside the 42x42 canvas. So the placement is
  uniform over every position where **the ink** stays on the canvas, not only those where the whole scaled
  28x28 frame does (``frame_inside`` says which placements the narrower reading would also allow);
- rendering: one Pillow affine warp of the uint8 digit (white on black, fill 0) onto the 42x42 canvas,
  ``Image.transform(..., Image.Transform.AFFINE, resample=Image.Resampling.BILINEAR)``;
- randomness: ``numpy.random.default_rng(seed)``, default seed ``SEED = 20261204``; per image, in order:
  angle, scale, then ``(X, Y)`` pairs until one fits. The first ``n`` images of a set do not depend on
  how many follow.

Convention: pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)`` in ``(x, y)`` coordinates, its
centre at ``(j + 0.5, i + 0.5)`` (Pillow's own). The warp maps the digit's point ``p`` to
``C + s R(theta) (p - c)``, ``c`` the ink centre in the 28x28 frame, ``C = (X, Y)`` on the canvas,
``R(theta) = [[cos, sin], [-sin, cos]]``; Pillow is given the inverse (canvas -> digit sample point).
The working canvas cannot clip: a rendering whose ink touches its border raises.

    python -m bench.rts_render --out /tmp/rts --n 16   # a PNG montage and the parameters of 16 digits
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 20_261_204
CANVAS = 42
FRAME = 28
MAX_ANGLE_DEG = 45.0
SCALE = (0.7, 1.2)
WORK = 64  # working canvas; warped ink reaches <= 21 px from the ink centre (every MNIST-test digit, s = 1.2)


def ink_centre(digit: np.ndarray) -> tuple[float, float]:
    """``(x, y)`` centre of mass of a (28, 28) digit's intensities, in pixel-area coordinates."""
    w = digit.astype(np.float64)
    total = w.sum()
    if total <= 0:
        raise ValueError("digit has no ink (all pixels zero)")
    ys, xs = np.indices(w.shape) + 0.5
    return float((w * xs).sum() / total), float((w * ys).sum() / total)


def coefficients(
    ink: tuple[float, float], angle_deg: float, scale: float, centre: tuple[float, float]
) -> tuple[float, float, float, float, float, float]:
    """Pillow's AFFINE data: the canvas point ``(x, y)`` samples the digit at ``(a x + b y + c, d x + e y + f)``."""
    t = math.radians(angle_deg)
    cos, sin = math.cos(t) / scale, math.sin(t) / scale
    a, b, d, e = cos, -sin, sin, cos  # R(theta)^T / s: canvas -> digit
    (cx, cy), (x0, y0) = ink, centre
    return (a, b, cx - a * x0 - b * y0, d, e, cy - d * x0 - e * y0)


def warp(
    digit: np.ndarray, angle_deg: float, scale: float, centre: tuple[float, float], size: int = CANVAS
) -> np.ndarray:
    """One Pillow affine warp of a uint8 (28, 28) digit onto a (size, size) canvas, its ink centre at ``centre``."""
    img = Image.fromarray(digit, "L")
    data = coefficients(ink_centre(digit), angle_deg, scale, centre)
    out = img.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=0)
    return np.asarray(out)


def _ink_box(img: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: first and last column and row (inclusive) holding a nonzero pixel."""
    cols = np.flatnonzero(img.any(axis=0))
    rows = np.flatnonzero(img.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _place(digit: np.ndarray, angle_deg: float, scale: float, rng: np.random.Generator) -> tuple[float, float]:
    """The ink centre ``(X, Y)``, uniform over the positions where the warped ink fits on the canvas.

    A whole-pixel move of the centre moves Pillow's rendering by exactly that many pixels, so the ink box at
    ``(X, Y)`` is the box measured on the working canvas with the centre at the same fractional position.
    """
    half = WORK // 2
    while True:
        x, y = rng.uniform(0.0, CANVAS, size=2)
        fx, fy = math.floor(x), math.floor(y)
        work = warp(digit, angle_deg, scale, (half + x - fx, half + y - fy), WORK)
        x0, y0, x1, y1 = _ink_box(work)
        if min(x0, y0) == 0 or max(x1, y1) == WORK - 1:
            raise ValueError(f"warped ink reaches the {WORK}x{WORK} working canvas's border; enlarge WORK")
        dx, dy = fx - half, fy - half
        if x0 + dx >= 0 and y0 + dy >= 0 and x1 + dx <= CANVAS - 1 and y1 + dy <= CANVAS - 1:
            return float(x), float(y)


def render(images_u8: np.ndarray, seed: int = SEED) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RTS digits: uint8 (N, 42, 42) and per-image parameters, each an (N,) float64 array:
    ``angle_deg``, ``scale``, ``centre_x``/``centre_y`` (the ink centre on the canvas) and ``ink_x``/``ink_y``
    (the ink centre in the digit's 28x28 frame)."""
    if not isinstance(images_u8, np.ndarray) or images_u8.dtype != np.uint8:
        raise ValueError(f"images must be a uint8 numpy array, got {getattr(images_u8, 'dtype', type(images_u8))}")
    if images_u8.ndim != 3 or images_u8.shape[1:] != (FRAME, FRAME):
        raise ValueError(f"images must be (N, {FRAME}, {FRAME}), got {images_u8.shape}")
    rng = np.random.default_rng(seed)
    n = len(images_u8)
    out = np.zeros((n, CANVAS, CANVAS), np.uint8)
    params = {k: np.zeros(n) for k in ("angle_deg", "scale", "centre_x", "centre_y", "ink_x", "ink_y")}
    for i, digit in enumerate(images_u8):
        angle = float(rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG))
        scale = float(rng.uniform(*SCALE))
        centre = _place(digit, angle, scale, rng)
        out[i] = warp(digit, angle, scale, centre)
        values = (angle, scale, *centre, *ink_centre(digit))
        for key, v in zip(params, values, strict=True):
            params[key][i] = v
    return out, params


def frame_inside(params: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) bool: would the whole warped 28x28 frame lie on the canvas at these placements (the narrower reading
    of the recipe)?"""
    t = np.radians(params["angle_deg"])
    s = params["scale"]
    corners = np.array([[0, 0], [FRAME, 0], [0, FRAME], [FRAME, FRAME]], np.float64)  # (4, 2) in the frame
    px = corners[:, 0][None] - params["ink_x"][:, None]  # (N, 4)
    py = corners[:, 1][None] - params["ink_y"][:, None]
    cos, sin = (s * np.cos(t))[:, None], (s * np.sin(t))[:, None]
    x = params["centre_x"][:, None] + cos * px + sin * py
    y = params["centre_y"][:, None] - sin * px + cos * py
    return np.all((x >= 0) & (x <= CANVAS) & (y >= 0) & (y <= CANVAS), axis=1)


def test_set(seed: int = SEED, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST-test digits (the first ``n``; all 10,000 by default) rendered: uint8 (N, 42, 42), int64 labels."""
    from model.data import load_mnist

    data = load_mnist()
    images = np.asarray(data["test_images"])[:n]
    labels = np.asarray(data["test_labels"], dtype=np.int64)[:n]
    return render(images, seed)[0], labels


def montage(images: np.ndarray, zoom: int = 4) -> np.ndarray:
    """(N, H, W) uint8 tiles in a near-square grid, 1-px grey gaps, each pixel ``zoom`` x ``zoom``."""
    n, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1), 96, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img
    return np.kron(grid, np.ones((zoom, zoom), np.uint8))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for rts_montage.png and rts_params.json")
    p.add_argument("--n", type=int, default=16, help="the first n MNIST-test digits")
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)
    from model.data import load_mnist

    data = load_mnist()
    images, params = render(np.asarray(data["test_images"])[: args.n], args.seed)
    labels = np.asarray(data["test_labels"])[: args.n]
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(montage(images), "L").save(args.out / "rts_montage.png")
    rows = [{"label": int(label), **{k: round(float(v[i]), 3) for k, v in params.items()}}
            for i, label in enumerate(labels)]
    (args.out / "rts_params.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out / 'rts_montage.png'} and {args.out / 'rts_params.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
