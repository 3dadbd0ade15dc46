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
- A thin-plate spline (``control_points`` ``(K, 2)``, K = g x g) maps the output to the input through its
  control points: those sit at fixed output positions ``linspace(-1, 1, g)^2`` and the parameters are their
  input positions ``Q``. The map is linear in ``Q`` (``grid = M @ Q``), ``M`` from the spline's kernel as
  ``model.transforms.ThinPlateSpline`` builds it, here in float64 at any output size, row chunk by chunk.
  Its region is the image of the same four corners (the crop's border is curved; the overlay draws it).
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


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """``U(r) = r^2 log r^2`` (0 at r = 0), as the model's spline."""
    return r2 * np.log(np.maximum(r2, 1e-12))


def _tps_solve(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Control points ``P`` ``(K, 2)`` of a g x g spline and the first K columns of its ``L^-1``."""
    g = math.isqrt(k)
    if g * g != k or g < 2:
        raise ValueError(f"tps control points must be g x g (g >= 2), got {k}")
    lin = np.linspace(-1.0, 1.0, g)
    cy, cx = np.meshgrid(lin, lin, indexing="ij")
    P = np.stack([cx.reshape(-1), cy.reshape(-1)], 1)
    L = np.zeros((k + 3, k + 3))
    L[:k, :k] = _tps_kernel(((P[:, None, :] - P[None, :, :]) ** 2).sum(-1))
    L[:k, k] = 1.0
    L[:k, k + 1 :] = P
    L[k, :k] = 1.0
    L[k + 1 :, :k] = P.T
    return P, np.linalg.inv(L)[:, :k]


def tps_points(control_points: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Normalised output points ``(N, 2)`` -> input sample points ``(N, 2)`` through the spline whose
    control points (input positions) are ``control_points`` ``(K, 2)``."""
    Q = np.asarray(control_points, dtype=np.float64)
    pts = np.asarray(pts, dtype=np.float64)
    P, linv = _tps_solve(len(Q))
    B = np.concatenate([_tps_kernel(((pts[:, None, :] - P[None, :, :]) ** 2).sum(-1)), np.ones((len(pts), 1)),
                        pts], 1)  # (N, K + 3)
    return (B @ linv) @ Q


def is_tps(params: np.ndarray | list[list[float]]) -> bool:
    """Whether ``params`` are TPS control points ``(K, 2)`` (theta is (2, 3), a homography (3, 3))."""
    shape = np.shape(params)
    return len(shape) == 2 and shape[1] == 2 and shape[0] >= 4


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
    if is_tps(p):  # the control points' input positions: the same per-axis map, point by point
        return p * np.array([sx, sy]) + np.array([bx, by])
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
    if is_tps(params):
        pts = tps_points(np.asarray(params), OUT_CORNERS)
        return [[(x + 1.0) * width / 2.0, (y + 1.0) * height / 2.0] for x, y in pts.tolist()]
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
    h, w = out_hw
    if is_tps(params):
        return _rectify_tps(img, np.asarray(params, dtype=np.float64), out_hw, fill)
    hm = as_homography(params)
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


# Output sides up to this evaluate a spline at every pixel; a longer side evaluates it on a lattice of this many
# points and interpolates the sample points bilinearly between them (the spline is smooth: within 0.12 gray
# levels of every pixel's own spline on noise; /v1/rectify?size=4096 took 2.2 s this way, 11.4 s before).
TPS_LATTICE = 256


def _rectify_tps(img: np.ndarray, control_points: np.ndarray, out_hw: tuple[int, int], fill: float) -> np.ndarray:
    """The spline evaluated on a lattice of at most ``TPS_LATTICE`` points a side over the output's pixel
    centres, its sample points interpolated bilinearly between them: every pixel's own where a side is no
    longer than the lattice (its nodes are then the pixels themselves)."""
    h, w = out_hw
    out = np.empty((h, w), dtype=np.float32)
    # The lattice spans the output's pixel centres, first to last: node j sits at pixel j (n - 1) / (g - 1).
    gh, gw = max(2, min(h, TPS_LATTICE)), max(2, min(w, TPS_LATTICE))
    px, py = np.linspace(0.0, w - 1.0, gw), np.linspace(0.0, h - 1.0, gh)
    gx, gy = np.meshgrid((2.0 * px + 1.0) / w - 1.0, (2.0 * py + 1.0) / h - 1.0)
    nodes = tps_points(control_points, np.stack([gx.reshape(-1), gy.reshape(-1)], 1)).reshape(gh, gw, 2)
    fx = np.arange(w) * ((gw - 1) / max(1, w - 1))
    j0 = np.minimum(fx.astype(np.intp), gw - 2)
    tx = (fx - j0)[None, :, None]
    cols = nodes[:, j0] * (1.0 - tx) + nodes[:, j0 + 1] * tx  # (gh, w, 2): every output column
    rows = max(1, _MAX_POINTS_PER_CHUNK // max(1, w))
    for r0 in range(0, h, rows):
        fy = np.arange(r0, min(h, r0 + rows)) * ((gh - 1) / max(1, h - 1))
        i0 = np.minimum(fy.astype(np.intp), gh - 2)
        ty = (fy - i0)[:, None, None]
        grid = cols[i0] * (1.0 - ty) + cols[i0 + 1] * ty  # (r, w, 2)
        out[r0 : r0 + len(fy)] = sample_bilinear(img, grid[..., 0], grid[..., 1], fill)
    return out


def border_points(params: np.ndarray, width: int, height: int, per_side: int = 16) -> np.ndarray:
    """The sampled region's border in the upload's pixels ``(4 * per_side, 2)``, from the top-left corner
    clockwise: straight for theta and homographies, curved for a spline."""
    t = np.linspace(-1.0, 1.0, per_side, endpoint=False)
    one = np.ones_like(t)
    sides = [np.stack([t, -one], 1), np.stack([one, t], 1), np.stack([-t, one], 1), np.stack([-one, -t], 1)]
    pts = np.concatenate(sides)
    mapped = tps_points(params, pts) if is_tps(params) else map_points(params, pts)
    return (mapped + 1.0) * np.array([width / 2.0, height / 2.0])


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


# One colour per window where several are drawn (a sequence model's transformers), the first the usual red.
OVERLAY_COLOURS = ((255, 60, 40), (60, 200, 60), (60, 140, 255), (255, 200, 0), (220, 80, 255))


def draw_overlay(img: Image.Image, corners_px: np.ndarray | list[np.ndarray], min_side: int = 256,
                 frame: tuple[float, float, float, float] | None = None) -> Image.Image:
    """The upload (RGB) with the region's border (its corners, or ``border_points``) drawn on it, or several
    regions' (a list), each in its own colour; small uploads are first enlarged (nearest) so that the
    drawing stays legible. Each region's top-left output corner (its first point) is marked with a dot.
    ``frame`` (x0, y0, x1, y1), upload pixels: a rectangle drawn first, thin and white (a number's second
    reading's window, ``service.zoom``)."""
    rgb = img.convert("RGB")
    scale = 1
    if max(rgb.size) < min_side:
        scale = math.ceil(min_side / max(rgb.size))
        rgb = rgb.resize((rgb.width * scale, rgb.height * scale), Image.Resampling.NEAREST)
    side = max(rgb.size)
    width = max(2, round(side / 160))
    draw = ImageDraw.Draw(rgb)
    if frame is not None:
        fx0, fy0, fx1, fy1 = (v * scale for v in frame)
        box = [(fx0, fy0), (fx1, fy0), (fx1, fy1), (fx0, fy1), (fx0, fy0)]
        draw.line(box, fill=(0, 0, 0), width=max(1, width // 2) + 2)
        draw.line(box, fill=(255, 255, 255), width=max(1, width // 2))
    regions = corners_px if isinstance(corners_px, list) else [corners_px]
    for i, corners in enumerate(regions):
        pts = [(float(x) * scale, float(y) * scale) for x, y in corners]
        # A dark halo under a bright line reads on light and dark images alike.
        draw.line(pts + [pts[0]], fill=(0, 0, 0), width=width + 2, joint="curve")
        draw.line(pts + [pts[0]], fill=OVERLAY_COLOURS[i % len(OVERLAY_COLOURS)], width=width, joint="curve")
        r = width * 2
        x0, y0 = pts[0]
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=(40, 200, 255), outline=(0, 0, 0))
    return rgb
