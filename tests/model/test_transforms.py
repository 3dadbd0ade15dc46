"""Known answers, shapes, bad input and gradcheck for every transform family."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model import transforms
from model.transforms import FAMILIES, affine_grid, build_family, check_theta


def _sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotated_params(name: str, fam: transforms.Family, deg: float) -> torch.Tensor:
    """Parameters of each rotation-capable family for a rotation about the centre by ``deg``."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if name == "affine":
        return torch.tensor([[c, -s, 0.0, s, c, 0.0]])
    if name == "similarity":
        return torch.tensor([[c, s, 0.0, 0.0]])
    if name == "projective":
        return torch.tensor([[c, -s, 0.0, s, c, 0.0, 0.0, 0.0]])
    if name == "tps":
        P = fam.identity().reshape(-1, 2)
        R = torch.tensor([[c, -s], [s, c]])
        return (P @ R.T).reshape(1, -1)  # TPS reproduces affine maps exactly (zero bending energy)
    raise AssertionError(name)


@pytest.mark.parametrize("name", FAMILIES)
def test_identity_reproduces_input(name: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 2, 12, 12)
    fam = build_family(name, (12, 12))
    p = fam.identity().expand(3, -1)
    grid = fam.grid(p)
    assert grid.shape == (3, 12, 12, 2)
    torch.testing.assert_close(_sample(x, grid), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["affine", "similarity", "projective", "tps"])
def test_rotation_by_90_degrees_is_rot90(name: str) -> None:
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    fam = build_family(name, (8, 8))
    out = _sample(x, fam.grid(_rotated_params(name, fam, 90.0)))
    # theta maps output (x, y) to input (-y, x): output row i, column j reads input row j, column 7-i,
    # which is the input turned a quarter counter-clockwise on the screen (torch.rot90 with k=1).
    expected = torch.rot90(x, k=1, dims=(2, 3))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_translation_by_whole_pixels_is_a_shift() -> None:
    x = torch.rand(1, 1, 10, 10)
    fam = build_family("translation", (10, 10))
    out = _sample(x, fam.grid(torch.tensor([[2 * 2 / 10, 0.0]])))  # 2 px in x, normalised
    torch.testing.assert_close(out[..., :, :8], x[..., :, 2:], atol=1e-5, rtol=0)
    assert torch.all(out[..., :, 8:] == 0)


def test_attention_scale_half_zooms_on_the_centre() -> None:
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2:6, 2:6] = 1.0
    fam = build_family("attention", (4, 4))
    out = _sample(x, fam.grid(torch.tensor([[0.5, 0.0, 0.0]])))
    torch.testing.assert_close(out, torch.ones(1, 1, 4, 4), atol=1e-5, rtol=0)


def test_scale_translation_zooms_and_moves_each_axis_on_its_own() -> None:
    """theta = [[a, 0, e], [0, d, f]]: output x reads input a*x + e, output y reads d*y + f (no mixing)."""
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    fam = build_family("scale_translation", (8, 4))  # output 8 rows, 4 columns
    theta = fam.params_out(torch.tensor([[0.5, 1.0, 0.25, 0.0]]))
    torch.testing.assert_close(theta, torch.tensor([[[0.5, 0.0, 0.25], [0.0, 1.0, 0.0]]]))
    out = _sample(x, fam.grid(torch.tensor([[0.5, 1.0, 0.25, 0.0]])))
    # x: output column centres -0.75..0.75 read input x 0.5 x + 0.25 = -0.125..0.625, the centres of input
    # columns 3..6 exactly; y: unchanged, all 8 rows.
    torch.testing.assert_close(out, x[..., :, 3:7], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"scale_translation parameters must be \(B, 4\)"):
        fam.grid(torch.zeros(1, 6))


def test_export_path_grid_equals_affine_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    theta = torch.randn(4, 2, 3)
    eager = affine_grid(theta, (7, 9))
    monkeypatch.setattr(transforms, "_exporting", lambda: True)
    traced = affine_grid(theta, (7, 9))
    torch.testing.assert_close(traced, eager, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_gradcheck_through_grid_and_sampler(name: str) -> None:
    torch.manual_seed(1)
    fam = build_family(name, (5, 6)).double()
    x = torch.rand(2, 1, 7, 7, dtype=torch.float64)
    p0 = fam.identity().double().expand(2, -1).clone()
    p = (p0 + 0.05 * torch.randn_like(p0)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: _sample(x, fam.grid(q)), (p,), eps=1e-6, atol=1e-5)


def test_gradients_reach_parameters() -> None:
    fam = build_family("affine", (6, 6))
    x = torch.rand(1, 1, 6, 6)
    p = fam.identity()[None].clone().requires_grad_(True)
    _sample(x, fam.grid(p)).sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_bad_theta_shape() -> None:
    with pytest.raises(ValueError, match=r"theta must be \(B, 2, 3\), got \(2, 3\)"):
        check_theta(torch.zeros(2, 3))


def test_bad_theta_shape_3x3() -> None:
    with pytest.raises(ValueError, match=r"got \(1, 3, 3\)"):
        affine_grid(torch.zeros(1, 3, 3), (4, 4))


def test_bad_param_count() -> None:
    fam = build_family("similarity", (4, 4))
    with pytest.raises(ValueError, match=r"similarity parameters must be \(B, 4\), got \(1, 6\)"):
        fam.grid(torch.zeros(1, 6))


def test_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown transform family 'shear'"):
        build_family("shear", (4, 4))


def test_tps_grid_size_checked() -> None:
    with pytest.raises(ValueError, match="grid_size must be >= 2"):
        build_family("tps", (4, 4), tps_grid=1)
