"""service.geometry: region corners and rectification, against hand-worked answers and torch's grid_sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from service.geometry import (
    as_homography,
    draw_overlay,
    map_points,
    prereduce_factor,
    rectify,
    rectify_image,
    region_corners,
    sample_bilinear,
)
from tests.utils.payloads import pattern

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def torch_rectify(
    img: np.ndarray, params: np.ndarray, out_hw: tuple[int, int], fill: float = 0.0
) -> np.ndarray:
    """Reference: the model's own sampler (grid_sample, zeros padding around ``fill``), in float64."""
    import torch
    import torch.nn.functional as F

    h, w = out_hw
    hm = torch.as_tensor(as_homography(params))
    xs = (torch.arange(w, dtype=torch.float64) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1) @ hm.T  # (h, w, 3)
    grid = (pts[..., :2] / pts[..., 2:3])[None]
    x = torch.as_tensor(img, dtype=torch.float64)[None, None] - fill
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return out[0, 0].numpy()


def test_identity_region_is_the_whole_upload() -> None:
    corners = region_corners(IDENTITY, 640, 480)
    np.testing.assert_allclose(corners, [[0, 0], [640, 0], [640, 480], [0, 480]])


def test_known_region_zoom_and_shift() -> None:
    # Half-size window centred at normalised (0.5, 0): x in [0, 1] -> px [W/2, W]; y in [-0.5, 0.5].
    theta = np.array([[0.5, 0.0, 0.5], [0.0, 0.5, 0.0]])
    corners = region_corners(theta, 200, 100)
    np.testing.assert_allclose(corners, [[100, 25], [200, 25], [200, 75], [100, 75]])


def test_region_of_a_90_degree_rotation_turns_the_corners() -> None:
    # x_s = -y, y_s = x: the output's top-left (-1, -1) reads the input's (1, -1), its top-right.
    theta = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        region_corners(theta, 10, 10), [[10, 0], [10, 10], [0, 10], [0, 0]], atol=1e-12
    )


def test_homography_with_no_perspective_equals_theta() -> None:
    theta = np.array([[0.8, 0.2, 0.1], [-0.1, 0.9, -0.2]])
    np.testing.assert_allclose(region_corners(as_homography(theta), 50, 70), region_corners(theta, 50, 70))


def test_homography_divides_by_q() -> None:
    hm = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(map_points(hm, np.array([[1.0, -1.0]])), [[0.5, -0.5]])


@pytest.mark.parametrize("shape", [(3, 2), (2, 2), (6,), (1, 2, 3)])
def test_bad_params_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="theta \\(2, 3\\) or homography \\(3, 3\\)"):
        as_homography(np.zeros(shape))


def test_rectify_identity_at_input_size_is_the_image() -> None:
    img = pattern(42).astype(np.float32)
    np.testing.assert_allclose(rectify(img, IDENTITY, (42, 42)), img, atol=1e-4)


@pytest.mark.parametrize("out_hw", [(28, 28), (64, 48), (7, 100)])
def test_rectify_matches_grid_sample_affine(out_hw: tuple[int, int]) -> None:
    a = math.radians(25)
    theta = np.array(
        [[0.7 * math.cos(a), -0.7 * math.sin(a), 0.15], [0.7 * math.sin(a), 0.7 * math.cos(a), -0.3]]
    )
    img = pattern(42).astype(np.float32)
    np.testing.assert_allclose(rectify(img, theta, out_hw), torch_rectify(img, theta, out_hw), atol=1e-3)


def test_rectify_matches_grid_sample_homography_and_fill() -> None:
    hm = np.array([[0.9, 0.1, 0.3], [-0.1, 1.1, 0.0], [0.2, -0.3, 1.0]])  # reads partly outside the image
    img = pattern(40)[:, :30].astype(np.float32)
    got = rectify(img, hm, (33, 45), fill=255.0)
    np.testing.assert_allclose(got, torch_rectify(img, hm, (33, 45), fill=255.0), atol=1e-3)
    assert got.max() == pytest.approx(255.0)  # some samples fall outside: the fill


def test_sample_far_outside_and_nan_read_fill() -> None:
    img = np.full((4, 4), 100, np.float32)
    xs = np.array([-5.0, 5.0, np.nan, 0.0, -1.0])
    ys = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    out = sample_bilinear(img, xs, ys, fill=7.0)
    np.testing.assert_allclose(out[:3], 7.0)
    assert out[3] == pytest.approx(100.0)
    assert out[4] == pytest.approx(53.5)  # the left edge: halfway between the pad and the first pixel


def test_round_trip_rotation_then_inverse() -> None:
    a = math.radians(40)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    inv = np.array([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0]])
    y, x = np.mgrid[0:128, 0:128] / 128
    img = (255 * np.exp(-((x - 0.5) ** 2 + (y - 0.45) ** 2) / 0.03)).astype(np.float32)  # stays inside
    back = rectify(rectify(img, rot, (128, 128)), inv, (128, 128))
    assert np.abs(back - img)[16:-16, 16:-16].max() < 6.0


def test_large_output_is_sampled_in_chunks() -> None:
    img = pattern(42).astype(np.float32)
    big = rectify(img, IDENTITY, (1100, 1000))  # over the chunk size: several row blocks
    np.testing.assert_allclose(big, torch_rectify(img, IDENTITY, (1100, 1000)), atol=1e-3)


def test_prereduce_only_when_minifying() -> None:
    corners = region_corners(IDENTITY, 2000, 2000)
    assert prereduce_factor(corners, (256, 256)) == 7
    assert prereduce_factor(corners, (1500, 1500)) == 1
    assert prereduce_factor(region_corners(IDENTITY, 42, 42), (256, 256)) == 1


def test_rectify_image_of_a_large_upload_matches_the_small_one() -> None:
    small = Image.fromarray(pattern(64))
    big = small.resize((1280, 1280), Image.Resampling.BICUBIC)
    theta = np.array([[0.6, 0.1, 0.1], [-0.1, 0.6, 0.05]])
    a = rectify_image(small, theta, (64, 64), 0.0).astype(float)
    b = rectify_image(big, theta, (64, 64), 0.0).astype(float)
    assert np.sqrt(np.mean((a - b) ** 2)) < 6.0


def test_overlay_enlarges_small_uploads_and_draws() -> None:
    img = Image.fromarray(np.zeros((42, 42), np.uint8))
    out = draw_overlay(img, region_corners(np.array([[0.5, 0, 0], [0, 0.5, 0]]), 42, 42))
    assert out.mode == "RGB" and out.size == (294, 294)  # 42 * ceil(256 / 42)
    arr = np.asarray(out)
    assert (arr[..., 0] > 200).sum() > 100  # the red outline is there
    assert arr[5, 5].tolist() == [0, 0, 0]  # outside the quadrilateral the upload is untouched


def test_tps_points_are_the_models_own_spline() -> None:
    """The service evaluates a TPS grid (at any size) as the model builds it (model.transforms)."""
    import torch

    from model.transforms import ThinPlateSpline, base_grid
    from service.geometry import tps_points

    fam = ThinPlateSpline((6, 5), 4)
    torch.manual_seed(0)
    q = fam.identity().reshape(-1, 2) + 0.1 * torch.randn(16, 2)
    grid = fam.grid(q.reshape(1, -1))[0].reshape(-1, 2).numpy()
    pts = base_grid(6, 5, torch.float64)[:, :2].numpy()
    np.testing.assert_allclose(tps_points(q.numpy(), pts), grid, atol=1e-6)
    np.testing.assert_allclose(tps_points(fam.identity().reshape(-1, 2).numpy(), pts), pts, atol=1e-9)


def test_a_large_tps_crop_interpolates_the_spline_within_a_fraction_of_a_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``TPS_LATTICE`` a side the spline is evaluated on a lattice and its sample points interpolated: on
    noise (the worst case: every pixel differs from its neighbour) the crop stays within half a gray level of
    the spline evaluated at every pixel, including a one-pixel-high crop."""
    from service import geometry

    rng = np.random.default_rng(0)
    lin = np.linspace(-1, 1, 4)
    cy, cx = np.meshgrid(lin, lin, indexing="ij")
    cp = np.stack([cx.ravel(), cy.ravel()], 1) * 0.8 + rng.normal(0, 0.08, (16, 2))
    img = (rng.random((42, 42)) * 255).astype(np.float32)
    sizes = [(300, 300), (600, 257), (1, 700)]
    coarse = [geometry.rectify(img, cp, hw) for hw in sizes]
    monkeypatch.setattr(geometry, "TPS_LATTICE", 10**6)
    for hw, c in zip(sizes, coarse, strict=True):
        exact = geometry.rectify(img, cp, hw)
        assert c.shape == hw and float(np.abs(c - exact).max()) < 0.5, hw
