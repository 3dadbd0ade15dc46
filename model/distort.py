"""Distorted MNIST as in Jaderberg et al. 2015 (Spatial Transformer Networks), Table 1.

- ``r``: rotation, angle uniform in ±90°, 28×28.
- ``rts``: rotation ±45°, scale 0.7–1.2 (about the 28×28 frame's centre), placed at a uniform random position
  on a 42×42 canvas anywhere its ink stays on the canvas (``ink_extent``; the paper's wording), not only where
  the scaled 28×28 frame would.
- ``p``: projective, 28×28: the image is first shrunk by s ~ U(0.75, 1.0), then each of its four corners is
  moved by N(0, 0.1) (normalised units, clipped to ±0.25).
- ``e``: elastic (Simard et al. 2003): a U(−1, 1) displacement field per axis, Gaussian-smoothed (σ = 4 px)
  and scaled by α = 34 px, 28×28.
- ``tc``: translated and cluttered: the digit at a uniform random integer position on a 60×60 canvas, plus 6
  pieces of clutter, 6×6 crops cut from other random digits of the same split, placed uniformly (max-blended).

All functions take uint8 digits ``(N, 28, 28)`` and a ``torch.Generator`` and return float32 ``(N, 1, S, S)``
in pixel units ``[0, 1]``, white on black. Training draws fresh distortions every epoch; the test sets are the
10,000 MNIST-test digits distorted once with a fixed seed; validation is the last 5,000 MNIST-train digits,
distorted once with its own seed. MNIST-test is never used for training or model selection.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

CANVAS = {"r": 28, "rts": 42, "p": 28, "e": 28, "tc": 60}
NAMES = tuple(CANVAS)
TEST_SEED = 20150605  # the fixed seed of every test set (the paper's arXiv date)
VAL_SEED = 7
VAL_SIZE = 5000
CHUNK = 1000  # fixed sets are made in chunks of this size, so they do not depend on memory or batch size


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _sample(src: Tensor, theta: Tensor, size: int) -> Tensor:
    grid = F.affine_grid(theta, [src.shape[0], 1, size, size], align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotation(angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (N, 2, 2)


def rotate(x: Tensor, g: torch.Generator, max_deg: float = 90.0) -> Tensor:
    n = x.shape[0]
    R = _rotation(torch.deg2rad(_u(g, n, -max_deg, max_deg)))
    theta = torch.cat([R.transpose(1, 2), torch.zeros(n, 2, 1)], 2)  # output -> input: R^-1
    return _sample(x, theta, x.shape[-1])


def ink_extent(x: Tensor, angle: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Where each digit's ink reaches once rotated by ``angle`` and scaled by ``scale`` about its frame's
    centre: the lowest and highest ``(x, y)`` offsets ``(N, 2)`` from the centre, in output pixels.

    Taken over the centres of the nonzero source pixels, widened by the bilinear footprint (a source pixel
    colours output points up to one source pixel from its centre, along either axis: ``scale (|cos| + |sin|)``
    output pixels in x and in y), so the rendered ink lies inside.
    """
    n, src = x.shape[0], x.shape[-1]
    c = (torch.arange(src, dtype=torch.float32) + 0.5) - src / 2
    py, px = torch.meshgrid(c, c, indexing="ij")
    p = torch.stack([px.reshape(-1), py.reshape(-1)], 1)  # (S*S, 2) source offsets (x, y)
    R = _rotation(angle) * scale[:, None, None]  # source offset -> output offset
    off = torch.matmul(p, R.transpose(1, 2))  # (N, S*S, 2)
    ink = (x.reshape(n, -1) > 0)[..., None]
    inf = torch.tensor(float("inf"))
    pad = (scale * (angle.cos().abs() + angle.sin().abs()))[:, None]
    blank = ~ink.any(1)  # (N, 1): no ink reaches anywhere
    lo = torch.where(blank, 0.0, torch.where(ink, off, inf).amin(1) - pad)
    hi = torch.where(blank, 0.0, torch.where(ink, off, -inf).amax(1) + pad)
    return lo, hi


def rts_draw(x: Tensor, g: torch.Generator, canvas: int = 42) -> tuple[Tensor, Tensor, Tensor]:
    """One RTS draw per digit: the angle (radians), the scale, and the frame centre's canvas position
    ``(N, 2)``, uniform anywhere the ink stays on the canvas (the paper's wording), not only where the scaled
    28x28 frame does."""
    n = x.shape[0]
    angle = torch.deg2rad(_u(g, n, -45.0, 45.0))
    scale = _u(g, n, 0.7, 1.2)
    half_c = canvas / 2
    lo, hi = ink_extent(x, angle, scale)
    first, last = (-lo).clamp(max=half_c), (canvas - hi).clamp(min=half_c)  # the centre's range (a point if none)
    return angle, scale, first + torch.rand(n, 2, generator=g) * (last - first)


def rts(x: Tensor, g: torch.Generator, canvas: int = 42) -> Tensor:
    return place(x, *rts_draw(x, g, canvas), canvas)


def place(x: Tensor, angle: Tensor, scale: Tensor, centre: Tensor, canvas: int) -> Tensor:
    """Digits rotated by ``angle`` and scaled by ``scale`` about their frame's centre, which lands at
    ``centre`` ``(N, 2)`` (x, y canvas pixels) of a ``canvas`` x ``canvas`` image."""
    half_c, half_s = canvas / 2, x.shape[-1] / 2
    # Canvas point u (px) comes from source point s = half_s + R^T (u - centre) / scale; in normalised units:
    # s_n = (half_c / (half_s * scale)) R^T u_n + R^T (half_c - centre) / (half_s * scale).
    Rt = _rotation(angle).transpose(1, 2)
    k = (1.0 / (half_s * scale))[:, None, None]
    lin = Rt * k * half_c
    shift = torch.matmul(Rt * k, (half_c - centre)[:, :, None])  # (N, 2, 1)
    return _sample(x, torch.cat([lin, shift], 2), canvas)


def homography_from_points(src: Tensor, dst: Tensor) -> Tensor:
    """``H`` ``(N, 3, 3)`` with ``H [src, 1] ~ [dst, 1]`` for four point pairs ``(N, 4, 2)`` (h33 = 1)."""
    n = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    A = torch.cat([rows_u, rows_v], 1)  # (N, 8, 8)
    b = torch.cat([u, v], 1)  # (N, 8)
    h = torch.linalg.solve(A.double(), b.double()).float()
    return torch.cat([h, torch.ones(n, 1)], 1).reshape(n, 3, 3)


def projective(x: Tensor, g: torch.Generator) -> Tensor:
    n, size = x.shape[0], x.shape[-1]
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]).expand(n, 4, 2)
    scale = _u(g, n, 0.75, 1.0)[:, None, None]
    moved = (corners * scale + (torch.randn(n, 4, 2, generator=g) * 0.1).clamp(-0.25, 0.25))
    # Output corner k shows the source corner k, so output -> input maps `moved` to `corners`.
    H = homography_from_points(moved, corners)
    xs = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)  # (S*S, 3)
    uvq = torch.matmul(base, H.transpose(1, 2))  # (N, S*S, 3)
    grid = (uvq[..., :2] / uvq[..., 2:3]).reshape(n, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gaussian_kernel(sigma: float) -> Tensor:
    radius = int(math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def elastic(x: Tensor, g: torch.Generator, alpha: float = 34.0, sigma: float = 4.0) -> Tensor:
    n, size = x.shape[0], x.shape[-1]
    field = torch.rand(n * 2, 1, size, size, generator=g) * 2 - 1
    k = _gaussian_kernel(sigma)
    r = k.numel() // 2
    field = F.conv2d(F.pad(field, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    disp = field.reshape(n, 2, size, size).permute(0, 2, 3, 1) * (alpha * 2 / size)  # px -> normalised
    xs = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None] + disp
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cluttered(x: Tensor, g: torch.Generator, clutter_src: Tensor, canvas: int = 60, pieces: int = 6,
              piece: int = 6) -> Tensor:
    n, src = x.shape[0], x.shape[-1]
    out = torch.zeros(n, 1, canvas, canvas)
    pos = torch.randint(0, canvas - src + 1, (n, 2), generator=g)
    donors = torch.randint(0, clutter_src.shape[0], (n, pieces), generator=g)
    # Crops come from the middle of the donor digit, where its strokes are.
    crop = torch.randint(4, src - piece - 4 + 1, (n, pieces, 2), generator=g)
    place = torch.randint(0, canvas - piece + 1, (n, pieces, 2), generator=g)
    # Paste by scatter-max into the flattened canvas: no Python loop over images.
    d = torch.arange(piece)
    rows = crop[..., 0, None, None] + d[:, None]  # (N, pieces, piece, 1)
    cols = crop[..., 1, None, None] + d[None, :]  # (N, pieces, 1, piece)
    donor_px = clutter_src.reshape(-1, src, src)  # uint8 digits: gather first, convert only the patches
    patches = donor_px[donors[..., None, None], rows, cols].float()  # (N, pieces, piece, piece)
    if donor_px.dtype == torch.uint8:
        patches = patches / 255.0
    flat = (place[..., 0, None, None] + d[:, None]) * canvas + place[..., 1, None, None] + d[None, :]
    s = torch.arange(src)
    digit_flat = (pos[:, 0, None, None] + s[:, None]) * canvas + pos[:, 1, None, None] + s[None, :]
    index = torch.cat([flat.reshape(n, -1), digit_flat.reshape(n, -1)], 1)
    values = torch.cat([patches.reshape(n, -1), x.reshape(n, -1)], 1)
    out = out.reshape(n, -1).scatter_reduce(1, index, values, reduce="amax", include_self=True)
    return out.reshape(n, 1, canvas, canvas)


def to_float(images_u8: Tensor | Any) -> Tensor:
    t = torch.as_tensor(images_u8)
    return (t.float() / 255.0).reshape(-1, 1, t.shape[-2], t.shape[-1])


def distort(name: str, images_u8: Tensor | Any, g: torch.Generator, clutter_u8: Tensor | Any = None,
            pre_elastic: float = 0.0) -> Tensor:
    """Distort a batch of uint8 digits ``(N, 28, 28)``; returns float32 ``(N, 1, S, S)`` in ``[0, 1]``.

    ``pre_elastic`` = p (training augmentation only; the fixed sets never use it): a share p of the digits,
    drawn per digit, first get the ``e`` distortion (Simard's elastic field) on their 28x28 frame."""
    x = to_float(images_u8)
    if pre_elastic > 0:
        chosen = torch.rand(x.shape[0], generator=g) < pre_elastic
        if bool(chosen.any()):
            x[chosen] = elastic(x[chosen], g)  # x is to_float's own new tensor
    if name == "r":
        return rotate(x, g)
    if name == "rts":
        return rts(x, g)
    if name == "p":
        return projective(x, g)
    if name == "e":
        return elastic(x, g)
    if name == "tc":
        if clutter_u8 is None:
            raise ValueError("the tc distortion needs clutter_u8, the digits to cut clutter from")
        return cluttered(x, g, torch.as_tensor(clutter_u8))
    raise ValueError(f"unknown distortion {name!r}; choose one of {', '.join(NAMES)}")


def fixed_set(name: str, images_u8: Any, labels: Any, seed: int, clutter_u8: Any = None) -> tuple[Tensor, Tensor]:
    """Distort once with a fixed seed, chunk by chunk, so the result depends on nothing but the inputs."""
    g = torch.Generator().manual_seed(seed)
    images = torch.as_tensor(images_u8)
    parts = [distort(name, images[i:i + CHUNK], g, clutter_u8) for i in range(0, images.shape[0], CHUNK)]
    return torch.cat(parts), torch.as_tensor(labels).long()


def split(data: dict[str, Any]) -> dict[str, Tensor]:
    """Train / validation split of MNIST-train (the last ``VAL_SIZE`` digits validate)."""
    images, labels = torch.as_tensor(data["train_images"]), torch.as_tensor(data["train_labels"]).long()
    return {"train_images": images[:-VAL_SIZE], "train_labels": labels[:-VAL_SIZE],
            "val_images": images[-VAL_SIZE:], "val_labels": labels[-VAL_SIZE:]}


def val_set(name: str, data: dict[str, Any]) -> tuple[Tensor, Tensor]:
    s = split(data)
    return fixed_set(name, s["val_images"], s["val_labels"], VAL_SEED, s["train_images"])


def test_set(name: str, data: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """The fixed test set: all 10,000 MNIST-test digits distorted once (clutter from other test digits)."""
    return fixed_set(name, data["test_images"], data["test_labels"], TEST_SEED, data["test_images"])


def make_test_set(name: str, images_u8: Any, labels: Any, seed: int = TEST_SEED) -> tuple[Tensor, Tensor]:
    return fixed_set(name, images_u8, labels, seed, images_u8)
