"""Transform families for the spatial transformer: parameters -> sampling grid.

Convention
----------
- Coordinates are normalised to ``[-1, 1]`` over the image extent, ``x`` (columns) before ``y`` (rows),
  with ``align_corners=False``: ``-1`` and ``+1`` are the outer edges of the border pixels, so pixel
  ``i`` of a side of length ``n`` has its centre at ``(2 * i + 1) / n - 1``.
- Every family maps the OUTPUT grid to the INPUT (inverse mapping): for each output pixel at
  normalised ``(x, y)``, the grid holds the normalised input point ``(x_s, y_s)`` that the sampler reads.
- A grid is ``(B, h, w, 2)`` with ``grid[..., 0] = x_s`` and ``grid[..., 1] = y_s``, which is what
  ``torch.nn.functional.grid_sample`` (and ONNX ``GridSample``) take.
- Every family's ``identity()`` parameters give ``x_s = x, y_s = y``.

The affine-type families (affine, attention, scale_translation, similarity, translation) all produce
``theta_out_to_in``,
a ``(B, 2, 3)`` matrix with ``[x_s, y_s]^T = theta @ [x, y, 1]^T``; they differ in which entries are free.
Only plain tensor ops are used so that every family exports to ONNX with a native ``GridSample``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FAMILIES = ("affine", "attention", "scale_translation", "similarity", "translation", "projective", "tps")


def _exporting() -> bool:
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def base_grid(h: int, w: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Homogeneous output-pixel centres ``(h * w, 3)`` as rows ``[x, y, 1]`` (align_corners=False)."""
    xs = (torch.arange(w, dtype=dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=dtype) * 2 + 1) / h - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(h * w, 3)


def check_theta(theta: Tensor) -> None:
    if theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"theta must be (B, 2, 3), got {tuple(theta.shape)}")


def affine_grid(theta: Tensor, size: tuple[int, int], base: Tensor | None = None) -> Tensor:
    """Grid ``(B, h, w, 2)`` for ``theta_out_to_in`` ``(B, 2, 3)``; ``size`` is the output ``(h, w)``.

    Eager mode uses ``F.affine_grid``. While exporting, the same grid is built as a matmul against a
    constant base grid: ``F.affine_grid`` would otherwise become ONNX ``AffineGrid``, which
    onnxruntime runs on the CPU only (it has no CUDA kernel), splitting the graph across devices.
    """
    check_theta(theta)
    h, w = size
    if not _exporting():
        return F.affine_grid(theta, [theta.shape[0], 1, h, w], align_corners=False)
    if base is None:
        base = base_grid(h, w, theta.dtype)
    grid = torch.matmul(base.to(theta.dtype), theta.transpose(1, 2))  # (B, h*w, 2)
    return grid.reshape(-1, h, w, 2)


class Family(nn.Module):
    """A transform family: ``num_params`` free parameters, their identity, and the grid they give."""

    name: str = ""
    num_params: int = 0
    base: Tensor  # (h*w, 3) buffer

    def __init__(self, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.output_size = (int(output_size[0]), int(output_size[1]))
        h, w = self.output_size
        self.register_buffer("base", base_grid(h, w), persistent=False)  # (h*w, 3)

    def identity(self) -> Tensor:
        raise NotImplementedError

    def params_out(self, p: Tensor) -> Tensor:
        """The parameter tensor that the exported model returns (e.g. theta ``(B, 2, 3)``)."""
        raise NotImplementedError

    def grid(self, p: Tensor) -> Tensor:
        raise NotImplementedError

    def _check(self, p: Tensor) -> None:
        if p.dim() != 2 or p.shape[1] != self.num_params:
            raise ValueError(f"{self.name} parameters must be (B, {self.num_params}), got {tuple(p.shape)}")


class _AffineType(Family):
    def theta(self, p: Tensor) -> Tensor:
        raise NotImplementedError

    def params_out(self, p: Tensor) -> Tensor:
        self._check(p)
        return self.theta(p)

    def grid(self, p: Tensor) -> Tensor:
        return affine_grid(self.params_out(p), self.output_size, self.base)


class Affine(_AffineType):
    """Full affine: ``p = (a, b, tx, c, d, ty)``, ``theta = [[a, b, tx], [c, d, ty]]``; identity ``(1,0,0,0,1,0)``."""

    name = "affine"
    num_params = 6

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def theta(self, p: Tensor) -> Tensor:
        return p.reshape(-1, 2, 3)


class Attention(_AffineType):
    """Scale + translation, no rotation (the attention form used for fine-grained birds).

    ``p = (s, tx, ty)``, ``theta = [[s, 0, tx], [0, s, ty]]``; identity ``(1, 0, 0)``. ``s < 1`` zooms in.
    """

    name = "attention"
    num_params = 3

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0])

    def theta(self, p: Tensor) -> Tensor:
        s, tx, ty = p[:, 0], p[:, 1], p[:, 2]
        zero = torch.zeros_like(s)
        return torch.stack([torch.stack([s, zero, tx], 1), torch.stack([zero, s, ty], 1)], 1)


class ScaleTranslation(_AffineType):
    """A scale for x, a scale for y and a translation, no rotation or shear: the four numbers each
    transformer of the paper's fine-grained birds model outputs (it may zoom and move, not turn).

    ``p = (a, d, e, f)``, ``theta = [[a, 0, e], [0, d, f]]``; identity ``(1, 1, 0, 0)``. ``a < 1`` zooms in
    along x.
    """

    name = "scale_translation"
    num_params = 4

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 1.0, 0.0, 0.0])

    def theta(self, p: Tensor) -> Tensor:
        a, d, e, f = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        zero = torch.zeros_like(a)
        return torch.stack([torch.stack([a, zero, e], 1), torch.stack([zero, d, f], 1)], 1)


class Similarity(_AffineType):
    """Rotation + isotropic scale + translation.

    ``p = (a, b, tx, ty)`` with ``a = s cos(alpha)``, ``b = s sin(alpha)``:
    ``theta = [[a, -b, tx], [b, a, ty]]``; identity ``(1, 0, 0, 0)``. Linear in ``p``, so no trig to learn through.
    """

    name = "similarity"
    num_params = 4

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0])

    def theta(self, p: Tensor) -> Tensor:
        a, b, tx, ty = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        return torch.stack([torch.stack([a, -b, tx], 1), torch.stack([b, a, ty], 1)], 1)


class Translation(_AffineType):
    """Translation only: ``p = (tx, ty)``, ``theta = [[1, 0, tx], [0, 1, ty]]``; identity ``(0, 0)``."""

    name = "translation"
    num_params = 2

    def identity(self) -> Tensor:
        return torch.tensor([0.0, 0.0])

    def theta(self, p: Tensor) -> Tensor:
        one, zero = torch.ones_like(p[:, 0]), torch.zeros_like(p[:, 0])
        return torch.stack([torch.stack([one, zero, p[:, 0]], 1), torch.stack([zero, one, p[:, 1]], 1)], 1)


class Projective(Family):
    """8-parameter homography: ``p = (h11, h12, h13, h21, h22, h23, h31, h32)``, ``h33 = 1``.

    ``[u, v, q]^T = H @ [x, y, 1]^T`` and the sample point is ``(u / q, v / q)``; identity is ``H = I``.
    The exported parameter output is ``homography`` ``(B, 3, 3)``.
    """

    name = "projective"
    num_params = 8

    def identity(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])

    def params_out(self, p: Tensor) -> Tensor:
        self._check(p)
        ones = torch.ones_like(p[:, :1])
        return torch.cat([p, ones], 1).reshape(-1, 3, 3)

    def grid(self, p: Tensor) -> Tensor:
        H = self.params_out(p)
        uvq = torch.matmul(self.base.to(p.dtype), H.transpose(1, 2))  # (B, h*w, 3)
        q = uvq[..., 2:3]
        # Keep the divisor away from zero (a degenerate H early in training) without changing its sign.
        q = torch.where(q >= 0, q.clamp(min=1e-6), q.clamp(max=-1e-6))
        h, w = self.output_size
        return (uvq[..., :2] / q).reshape(-1, h, w, 2)


def _tps_kernel(r2: Tensor) -> Tensor:
    """Thin-plate radial basis ``U(r) = r^2 log r^2`` (0 at r = 0)."""
    return r2 * torch.log(r2.clamp(min=1e-12))


class ThinPlateSpline(Family):
    """Thin-plate spline over a ``g x g`` control grid (``K = g^2`` points).

    The control points ``P`` sit at fixed output positions ``linspace(-1, 1, g)^2``; the parameters are
    their input positions ``Q`` (``p = Q.flatten()``, ``2K`` values, x before y). The spline ``f`` with
    ``f(P_k) = Q_k`` and minimal bending energy maps each output pixel to its sample point. ``f`` is linear
    in ``Q``, so the grid is one matmul with a constant ``(h*w, K)`` matrix precomputed here in float64.
    Identity: ``Q = P``. The exported parameter output is ``control_points`` ``(B, K, 2)``.
    """

    name = "tps"
    M: Tensor  # (h*w, K) buffer
    P: Tensor  # (K, 2) buffer

    def __init__(self, output_size: tuple[int, int], grid_size: int = 4) -> None:
        super().__init__(output_size)
        g = int(grid_size)
        if g < 2:
            raise ValueError(f"tps grid_size must be >= 2, got {grid_size}")
        self.grid_size = g
        self.num_params = 2 * g * g
        lin = torch.linspace(-1.0, 1.0, g, dtype=torch.float64)
        cy, cx = torch.meshgrid(lin, lin, indexing="ij")
        P = torch.stack([cx.reshape(-1), cy.reshape(-1)], 1)  # (K, 2)
        K = P.shape[0]
        L = torch.zeros(K + 3, K + 3, dtype=torch.float64)
        L[:K, :K] = _tps_kernel(torch.cdist(P, P) ** 2)
        L[:K, K] = 1.0
        L[:K, K + 1 :] = P
        L[K, :K] = 1.0
        L[K + 1 :, :K] = P.T
        Linv = torch.linalg.inv(L)
        h, w = self.output_size
        X = base_grid(h, w, torch.float64)[:, :2]  # (h*w, 2)
        B = torch.cat([_tps_kernel(torch.cdist(X, P) ** 2), torch.ones(h * w, 1, dtype=torch.float64), X], 1)
        M = (B @ Linv)[:, :K]  # (h*w, K): grid = M @ Q
        self.register_buffer("M", M.float(), persistent=False)
        self.register_buffer("P", P.float(), persistent=False)

    def identity(self) -> Tensor:
        return self.P.reshape(-1).clone()

    def params_out(self, p: Tensor) -> Tensor:
        self._check(p)
        return p.reshape(-1, self.grid_size * self.grid_size, 2)

    def grid(self, p: Tensor) -> Tensor:
        Q = self.params_out(p)  # (B, K, 2)
        h, w = self.output_size
        return torch.matmul(self.M.to(p.dtype), Q).reshape(-1, h, w, 2)


def build_family(name: str, output_size: tuple[int, int], tps_grid: int = 4) -> Family:
    classes: dict[str, type[Family]] = {
        "affine": Affine,
        "attention": Attention,
        "scale_translation": ScaleTranslation,
        "similarity": Similarity,
        "translation": Translation,
        "projective": Projective,
    }
    if name == "tps":
        return ThinPlateSpline(output_size, tps_grid)
    if name not in classes:
        raise ValueError(f"unknown transform family {name!r}; choose one of {', '.join(FAMILIES)}")
    return classes[name](output_size)
