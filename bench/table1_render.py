"""A second generator of the R, P and E MNIST sets, written independently of ``model/distort.py`` (whose source
was not read).

The 28x28 distortions of Jaderberg et al. (2015), *Spatial Transformer Networks*, Table 1, read again from the
papers, each applied to the uint8 28x28 MNIST digit (white on black) and giving a uint8 28x28 image, fill 0:

- ``r`` (rotation): ``theta ~ U(-90, 90)`` degrees about the image centre ``(14, 14)``, positive
  counter-clockwise as the image is seen (y down); one Pillow affine warp,
  ``Image.transform(..., Image.Transform.AFFINE, resample=Image.Resampling.BILINEAR)``.
- ``p`` (projective): the image is scaled about its centre by ``s ~ U(0.75, 1.0)``, then each of the four
  corners of the scaled frame moves by its own Gaussian offset, ``sigma = 0.1`` of the half-width (1.4 px)
  per coordinate, each offset clipped to ``+-0.25`` half-widths (3.5 px); the digit's corner ``k`` goes to
  the moved corner ``k``. The homography (output -> input, the 8 coefficients Pillow takes) is solved with
  numpy from the four corner pairs and rendered by
  ``Image.transform(..., Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)``.
- ``e`` (elastic, Simard et al. 2003): one displacement field per axis, ``U(-1, 1)`` per pixel, smoothed by
  a Gaussian of ``sigma = 4`` px (separable, truncated at 4 sigma, kernel normalised to sum 1, symmetric
  reflection at the border), scaled by ``alpha = 34`` px; the output pixel ``(i, j)`` samples the digit
  bilinearly at ``(i + dy, j + dx)`` (pixel indices), neighbours outside the digit count as 0. The sampler
  is this module's own numpy code.
- randomness: ``numpy.random.default_rng(seed)``, one default seed per distortion (``SEEDS``: 20261211 for
  r, 20261212 for p, 20261213 for e); per image, in order: r draws ``theta``; p draws ``s`` and then the
  eight offsets (corner 0 x, y, corner 1 x, y, ... with the corners in the order top-left, top-right,
  bottom-right, bottom-left); e draws the 28x28 field of x and then that of y. Each image takes a fixed
  number of draws, so the first ``n`` images of a set do not depend on how many follow.

Convention (Pillow's, as in ``bench/rts_render.py``): pixel ``(row i, column j)`` covers
``[j, j + 1) x [i, i + 1)`` in ``(x, y)`` coordinates, its centre at ``(j + 0.5, i + 0.5)``; the frame's
corners are ``(0, 0), (28, 0), (28, 28), (0, 28)``. Rotation maps the digit's point ``p`` to
``c + R(theta) (p - c)``, ``R(theta) = [[cos, sin], [-sin, cos]]``; Pillow is given the inverse.

    python -m bench.table1_render --out /tmp/t1 --n 16   # a PNG montage and the parameters per distortion
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ("r", "p", "e")
SEEDS = {"r": 20_261_211, "p": 20_261_212, "e": 20_261_213}
FRAME = 28
HALF = FRAME / 2  # the half-width, and the centre's coordinate on both axes
MAX_ANGLE_DEG = 90.0
SCALE = (0.75, 1.0)
CORNER_SIGMA = 0.1  # of the half-width
CORNER_CLIP = 0.25  # of the half-width
ELASTIC_SIGMA = 4.0  # px
ELASTIC_ALPHA = 34.0  # px
TRUNCATE = 4.0  # the Gaussian kernel's radius, in sigmas
CORNERS = np.array([[0, 0], [FRAME, 0], [FRAME, FRAME], [0, FRAME]], np.float64)  # (4, 2): TL, TR, BR, BL


def _check(images_u8: np.ndarray) -> None:
    if not isinstance(images_u8, np.ndarray) or images_u8.dtype != np.uint8:
        raise ValueError(f"images must be a uint8 numpy array, got {getattr(images_u8, 'dtype', type(images_u8))}")
    if images_u8.ndim != 3 or images_u8.shape[1:] != (FRAME, FRAME):
        raise ValueError(f"images must be (N, {FRAME}, {FRAME}), got {images_u8.shape}")


# --- r ------------------------------------------------------------------------------------------------------


def rotation_coefficients(angle_deg: float) -> tuple[float, float, float, float, float, float]:
    """Pillow's AFFINE data for a rotation about the frame's centre: the output point ``(x, y)`` samples the
    digit at ``(a x + b y + c, d x + e y + f)``."""
    t = math.radians(angle_deg)
    cos, sin = math.cos(t), math.sin(t)
    a, b, d, e = cos, -sin, sin, cos  # R(theta)^T: output -> digit
    return (a, b, HALF - a * HALF - b * HALF, d, e, HALF - d * HALF - e * HALF)


def rotate(digit: np.ndarray, angle_deg: float) -> np.ndarray:
    """A uint8 (28, 28) digit rotated by ``angle_deg`` (counter-clockwise as seen) about its frame's centre."""
    img = Image.fromarray(digit, "L")
    out = img.transform((FRAME, FRAME), Image.Transform.AFFINE, rotation_coefficients(angle_deg),
                        resample=Image.Resampling.BILINEAR, fillcolor=0)
    return np.asarray(out)


# --- p ------------------------------------------------------------------------------------------------------


def moved_corners(scale: float, offsets: np.ndarray) -> np.ndarray:
    """(4, 2) ``(x, y)``: the frame's corners scaled about the centre by ``scale``, then moved by ``offsets``
    (4, 2) px."""
    return HALF + scale * (CORNERS - HALF) + np.asarray(offsets, np.float64)


def perspective_coefficients(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """Pillow's PERSPECTIVE data ``(a, b, c, d, e, f, g, h)``: the homography taking each output point
    ``dst[k]`` to the digit's point ``src[k]``, ``x_in = (a x + b y + c) / (g x + h y + 1)`` and
    ``y_in = (d x + e y + f) / (g x + h y + 1)``; ``dst`` and ``src`` are (4, 2) ``(x, y)``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(np.asarray(dst, np.float64), np.asarray(src, np.float64), strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rhs.append(u)
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.append(v)
    return tuple(float(c) for c in np.linalg.solve(np.array(rows), np.array(rhs)))


def project(digit: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """A uint8 (28, 28) digit warped so that its frame's corner ``k`` lands at ``corners[k]`` (4, 2)."""
    img = Image.fromarray(digit, "L")
    coeffs = perspective_coefficients(corners, CORNERS)
    out = img.transform((FRAME, FRAME), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR,
                        fillcolor=0)
    return np.asarray(out)


# --- e ------------------------------------------------------------------------------------------------------


def gaussian_kernel(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """A 1-D Gaussian of ``sigma`` px, radius ``ceil(truncate * sigma)``, normalised to sum 1."""
    radius = int(math.ceil(truncate * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth(field: np.ndarray, sigma: float = ELASTIC_SIGMA) -> np.ndarray:
    """A (..., H, W) array convolved with a separable Gaussian of ``sigma`` px, the border reflected
    symmetrically (the edge pixel repeated: ``np.pad(mode='symmetric')``)."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    out = np.asarray(field, np.float64)
    for axis in (-1, -2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="symmetric")
        windows = np.lib.stride_tricks.sliding_window_view(padded, len(k), axis=axis)  # (..., n, len(k))
        out = windows @ k
    return out


def elastic_field(rng: np.random.Generator, alpha: float = ELASTIC_ALPHA,
                  sigma: float = ELASTIC_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """``(dx, dy)``, each (28, 28) float64 px: ``U(-1, 1)`` per pixel (x's field drawn first), smoothed, scaled
    by ``alpha``."""
    raw = rng.uniform(-1.0, 1.0, size=(2, FRAME, FRAME))
    dx, dy = alpha * smooth(raw, sigma)
    return dx, dy


def bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``image`` (H, W) sampled at the fractional pixel indices ``(rows, cols)`` (any equal shapes), bilinearly;
    neighbours outside the image count as 0. float64."""
    h, w = image.shape
    padded = np.zeros((h + 2, w + 2), np.float64)  # one ring of zeros: indices -1 and H / W
    padded[1:-1, 1:-1] = image
    r = np.clip(np.asarray(rows, np.float64), -1.0, float(h))
    c = np.clip(np.asarray(cols, np.float64), -1.0, float(w))
    r0, c0 = np.floor(r), np.floor(c)
    fr, fc = r - r0, c - c0
    r0 = r0.astype(np.int64) + 1  # into the padded image
    c0 = c0.astype(np.int64) + 1
    r1, c1 = np.minimum(r0 + 1, h + 1), np.minimum(c0 + 1, w + 1)
    return ((1 - fr) * ((1 - fc) * padded[r0, c0] + fc * padded[r0, c1])
            + fr * ((1 - fc) * padded[r1, c0] + fc * padded[r1, c1]))


def elastic(digit: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """A uint8 (28, 28) digit resampled at ``(i + dy, j + dx)``: uint8, rounded."""
    ii, jj = np.indices(digit.shape, dtype=np.float64)
    out = bilinear(digit.astype(np.float64), ii + dy, jj + dx)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --- the sets -----------------------------------------------------------------------------------------------


def render(name: str, images_u8: np.ndarray, seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Distorted digits: uint8 (N, 28, 28) and per-image parameters (``seed`` None: ``SEEDS[name]``):

    - ``r``: ``angle_deg`` (N,);
    - ``p``: ``scale`` (N,), ``offsets`` (N, 4, 2) px (after clipping), ``corners`` (N, 4, 2), where the
      frame's corners land;
    - ``e``: ``dx``, ``dy`` (N, 28, 28) float32 px and ``field_max`` (N,), the largest ``|dx|`` or ``|dy|``.
    """
    if name not in NAMES:
        raise ValueError(f"unknown distortion {name!r}: one of {', '.join(NAMES)}")
    _check(images_u8)
    rng = np.random.default_rng(SEEDS[name] if seed is None else seed)
    n = len(images_u8)
    out = np.zeros((n, FRAME, FRAME), np.uint8)
    params: dict[str, np.ndarray]
    if name == "r":
        params = {"angle_deg": np.zeros(n)}
        for i, digit in enumerate(images_u8):
            angle = float(rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG))
            out[i] = rotate(digit, angle)
            params["angle_deg"][i] = angle
    elif name == "p":
        params = {"scale": np.zeros(n), "offsets": np.zeros((n, 4, 2)), "corners": np.zeros((n, 4, 2))}
        for i, digit in enumerate(images_u8):
            scale = float(rng.uniform(*SCALE))
            offsets = np.clip(rng.normal(0.0, CORNER_SIGMA * HALF, size=(4, 2)),
                              -CORNER_CLIP * HALF, CORNER_CLIP * HALF)
            corners = moved_corners(scale, offsets)
            out[i] = project(digit, corners)
            params["scale"][i], params["offsets"][i], params["corners"][i] = scale, offsets, corners
    else:
        params = {"dx": np.zeros((n, FRAME, FRAME), np.float32), "dy": np.zeros((n, FRAME, FRAME), np.float32),
                  "field_max": np.zeros(n)}
        for i, digit in enumerate(images_u8):
            dx, dy = elastic_field(rng)
            out[i] = elastic(digit, dx, dy)
            params["dx"][i], params["dy"][i] = dx, dy
            params["field_max"][i] = max(np.abs(dx).max(), np.abs(dy).max())
    return out, params


def test_set(name: str, seed: int | None = None, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST-test digits (the first ``n``; all 10,000 by default) distorted by ``name``: uint8 (N, 28, 28),
    int64 labels."""
    from model.data import load_mnist

    data = load_mnist()
    images = np.asarray(data["test_images"])[:n]
    labels = np.asarray(data["test_labels"], dtype=np.int64)[:n]
    return render(name, images, seed)[0], labels


def _summary(name: str, params: dict[str, np.ndarray], i: int) -> dict[str, object]:
    if name == "r":
        return {"angle_deg": round(float(params["angle_deg"][i]), 3)}
    if name == "p":
        return {"scale": round(float(params["scale"][i]), 4),
                "corners": np.round(params["corners"][i], 3).tolist()}
    return {"field_max": round(float(params["field_max"][i]), 3)}


def main(argv: list[str] | None = None) -> int:
    from bench.rts_render import montage

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for <d>_montage.png and <d>_params.json")
    p.add_argument("--n", type=int, default=16, help="the first n MNIST-test digits")
    p.add_argument("--names", default=",".join(NAMES), help="comma-separated distortions (r, p, e)")
    p.add_argument("--seed", type=int, help="one seed for every distortion (default: SEEDS)")
    args = p.parse_args(argv)
    from model.data import load_mnist

    data = load_mnist()
    digits = np.asarray(data["test_images"])[: args.n]
    labels = np.asarray(data["test_labels"])[: args.n]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [s for s in args.names.split(",") if s]:
        images, params = render(name, digits, args.seed)
        Image.fromarray(montage(images), "L").save(args.out / f"{name}_montage.png")
        rows = [{"label": int(label), **_summary(name, params, i)} for i, label in enumerate(labels)]
        (args.out / f"{name}_params.json").write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.out / f'{name}_montage.png'} and {args.out / f'{name}_params.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
