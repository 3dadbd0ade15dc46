"""Where the transformer looked, in the upload's pixels, and the same crop re-sampled at any size.

Convention
----------
- Normalised coordinates in ``[-1, 1]`` over the image extent, ``x`` (columns) before ``y`` (rows),
  ``align_corners=False``: the outer pixel EDGES are at ``±1``; pixel ``i`` of ``n`` has its centre at
  ``(2 i + 1) / n - 1``. Pixel-edge coordinates of a normalised point: ``x_px = (x + 1) W / 2``.
- The parameters map the OUTPUT grid to the INPUT sample point: ``[x_s, y_s]ᵀ = theta_out_to_in · [x, y, 1]ᵀ``
  (``theta`` ``(2, 3)``), or ``[u, v, q]ᵀ = H · [x, y, 1]ᵀ``, ``(x_s, y_s) = (u / q, v / q)`` (homography
  ``(3, 3)``).
- A ``stretch`` model's input is the upload stretched, so its parameters apply to the ORIGINAL upload in
  the upload's own normalised coordinates. A ``letterbox`` model's input is the upload fitted into a
  square with its aspect ratio kept; ``to_upload`` turns its parameters into the upload's normalised
  coordinates (a scale and offset per axis), after which everything below is the same: rectifying at
  ``(h, w)`` from the original samples the same quadrilateral, only more densely.
- The region is the image of the output grid's outer corners ``(±1, ±1)``, in the order top-left,
  top-right, bottom-right, bottom-left (of the output).
- Sampling is bilinear with constant padding (the model pads with black in its own polarity), like
  ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

OUT_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])  # (4, 2) TL, TR, BR, BL
_CORNER_LIST = OUT_CORNERS.tolist()
_MAX_POINTS_PER_CHUNK = 1 << 20


def as_homography(params: np.ndarray) -> np.ndarray:
    """``theta`` ``(2, 3)`` or ``H`` ``(3, 3)`` -> ``(3, 3)`` float64 mapping output to input."""
    p = np.asarray(params, dtype=np.float64)
    if p.shape == (2, 3):
        return np.vstack([p, [0.0, 0.0, 1.0]])
    if p.shape == (3, 3):
        return p
    raise ValueError(f"params must be theta (2, 3) or homography (3, 3), got {p.shape}")


def _safe_q(q: np.ndarray) -> np.ndarray:
    # Same guard as the model's projective grid: keep the divisor's sign, away from zero.
    return np.where(q >= 0, np.maximum(q, 1e-6), np.minimum(q, -1e-6))


def to_upload(params: np.ndarray, frame: tuple[float, float, float, float] | None) -> np.ndarray:
    """Parameters mapping into the model input -> the same map into the upload's normalised coordinates.

    ``frame`` = ``(sx, bx, sy, by)``: an input-normalised point ``(x, y)`` is the upload-normalised point
    ``(sx x + bx, sy y + by)`` (``Prepared.to_upload``); ``None`` is the identity. The result keeps the
    shape of ``params`` (``theta`` (2, 3) stays (2, 3))."""
    p = np.asarray(params, dtype=np.float64)
    if frame is None:
        return p
    sx, bx, sy, by = frame
    a = np.array([[sx, 0.0, bx], [0.0, sy, by], [0.0, 0.0, 1.0]])
    out = a @ as_homography(p)
    return out[:2] if p.shape == (2, 3) else out


def map_points(params: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Normalised output points ``(K, 2)`` -> normalised input sample points ``(K, 2)``."""
    hm = as_homography(params)
    pts = np.asarray(pts, dtype=np.float64)
    uvq = pts @ hm[:, :2].T + hm[:, 2]  # (K, 3)
    return uvq[:, :2] / _safe_q(uvq[:, 2:3])


def region_points(params: np.ndarray | list[list[float]], width: int, height: int) -> list[list[float]]:
    """Corners [x_px, y_px] of the sampled quadrilateral in the upload's pixel-edge coordinates, as lists.

    Plain Python on purpose: four points are cheaper in floats than in numpy (this runs per answer)."""
    rows = params.tolist() if isinstance(params, np.ndarray) else params
    if len(rows) == 2:
        rows = [*rows, [0.0, 0.0, 1.0]]
    if len(rows) != 3 or any(len(r) != 3 for r in rows):
        raise ValueError(f"params must be theta (2, 3) or homography (3, 3), got {np.shape(params)}")
    (a, b, c), (d, e, f), (g, h, i) = rows
    out = []
    for x, y in _CORNER_LIST:
        q = g * x + h * y + i
        q = max(q, 1e-6) if q >= 0 else min(q, -1e-6)  # the guard of ``_safe_q``
        out.append([((a * x + b * y + c) / q + 1.0) * width / 2.0, ((d * x + e * y + f) / q + 1.0) * height / 2.0])
    return out


def region_corners(params: np.ndarray | list[list[float]], width: int, height: int) -> np.ndarray:
    """Corners ``(4, 2)`` [x_px, y_px] of the sampled quadrilateral in the upload's pixel-edge coordinates."""
    return np.array(region_points(params, width, height), dtype=np.float64)


def sample_bilinear(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Bilinear samples of ``img`` ``(H, W)`` at normalised points ``xs``, ``ys``; ``fill`` outside."""
    h, w = img.shape
    padded = np.pad(img.astype(np.float32, copy=False), 1, constant_values=fill)  # (H + 2, W + 2)
    # Continuous pixel-centre coordinates, shifted by the 1-pixel pad; far-away and NaN points read the pad.
    ix = np.nan_to_num((xs + 1.0) * (w / 2.0) - 0.5, nan=-2.0, posinf=-2.0, neginf=-2.0)
    iy = np.nan_to_num((ys + 1.0) * (h / 2.0) - 0.5, nan=-2.0, posinf=-2.0, neginf=-2.0)
    # Clipped to [-1, n]: at or past either end both neighbours are pad, so the value is exactly ``fill``.
    ix = np.clip(ix, -1.0, float(w)) + 1.0
    iy = np.clip(iy, -1.0, float(h)) + 1.0
    x0f, y0f = np.floor(ix), np.floor(iy)
    wx = (ix - x0f).astype(np.float32)
    wy = (iy - y0f).astype(np.float32)
    x0 = np.clip(x0f.astype(np.intp), 0, w + 1)
    y0 = np.clip(y0f.astype(np.intp), 0, h + 1)
    x1 = np.minimum(x0 + 1, w + 1)
    y1 = np.minimum(y0 + 1, h + 1)
    top = padded[y0, x0] * (1 - wx) + padded[y0, x1] * wx
    bot = padded[y1, x0] * (1 - wx) + padded[y1, x1] * wx
    return top * (1 - wy) + bot * wy


def rectify(img: np.ndarray, params: np.ndarray, out_hw: tuple[int, int], fill: float = 0.0) -> np.ndarray:
    """Sample ``img`` ``(H, W)`` on the output grid ``(h, w)`` mapped by ``params``; float32 ``(h, w)``."""
    hm = as_homography(params)
    h, w = out_hw
    xs = ((2.0 * np.arange(w) + 1.0) / w - 1.0)[None, :]  # (1, w) output pixel centres
    ys = ((2.0 * np.arange(h) + 1.0) / h - 1.0)[:, None]  # (h, 1)
    out = np.empty((h, w), dtype=np.float32)
    rows = max(1, _MAX_POINTS_PER_CHUNK // max(1, w))
    affine = hm[2, 0] == 0.0 and hm[2, 1] == 0.0 and hm[2, 2] == 1.0
    for r0 in range(0, h, rows):
        yc = ys[r0 : r0 + rows]  # (r, 1)
        u = hm[0, 0] * xs + hm[0, 1] * yc + hm[0, 2]  # (r, w)
        v = hm[1, 0] * xs + hm[1, 1] * yc + hm[1, 2]
        if not affine:
            q = _safe_q(hm[2, 0] * xs + hm[2, 1] * yc + hm[2, 2])
            u, v = u / q, v / q
        out[r0 : r0 + rows] = sample_bilinear(img, u, v, fill)
    return out


def prereduce_factor(corners_px: np.ndarray, out_hw: tuple[int, int]) -> int:
    """Integer box-reduction of the source worth doing before sampling at ``out_hw`` (1 = none).

    Bilinear sampling reads 2x2 pixels per output pixel; when the quadrilateral covers many source pixels
    per output pixel, a box pre-reduction by that factor averages them instead of aliasing.
    """
    h, w = out_hw
    c = corners_px
    top = float(np.hypot(*(c[1] - c[0])))
    left = float(np.hypot(*(c[3] - c[0])))
    ratio = min(top / max(1, w), left / max(1, h))
    return int(ratio) if ratio >= 2 and math.isfinite(ratio) else 1


def rectify_image(gray: Image.Image, params: np.ndarray, out_hw: tuple[int, int], fill: float) -> np.ndarray:
    """The crop at ``out_hw`` from a mode-L image (a much larger source box-reduced first); uint8."""
    w, h = gray.size
    k = prereduce_factor(region_corners(params, w, h), out_hw)
    if k > 1:
        # Normalised coordinates span the image extent, so a stretched reduction keeps the mapping exact.
        gray = gray.resize((max(1, w // k), max(1, h // k)), Image.Resampling.BOX)
    out = rectify(np.asarray(gray), params, out_hw, fill)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def draw_overlay(img: Image.Image, corners_px: np.ndarray, min_side: int = 256) -> Image.Image:
    """The upload (RGB) with the quadrilateral drawn on it; small uploads are first enlarged (nearest) so
    that the drawing stays legible. The top-left output corner is marked with a dot."""
    rgb = img.convert("RGB")
    scale = 1
    if max(rgb.size) < min_side:
        scale = math.ceil(min_side / max(rgb.size))
        rgb = rgb.resize((rgb.width * scale, rgb.height * scale), Image.Resampling.NEAREST)
    pts = [(float(x) * scale, float(y) * scale) for x, y in corners_px]
    side = max(rgb.size)
    width = max(2, round(side / 160))
    draw = ImageDraw.Draw(rgb)
    # A dark halo under a bright line reads on light and dark images alike.
    draw.line(pts + [pts[0]], fill=(0, 0, 0), width=width + 2, joint="curve")
    draw.line(pts + [pts[0]], fill=(255, 60, 40), width=width, joint="curve")
    r = width * 2
    x0, y0 = pts[0]
    draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=(40, 200, 255), outline=(0, 0, 0))
    return rgb
