"""The photo generator (model/photo.py) and the photo model (model/photo_net.py)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from model.nets import build_model
from model.photo import (
    ASPECTS,
    CONDITIONS,
    HEIGHT,
    MAX_ANGLE,
    TEST_FONT_DIRS,
    TRAIN_FONT_DIRS,
    TRAIN_FONTS,
    PhotoGenerator,
    crop_theta,
    font_files,
    photo_input,
)
from model.photo_net import PhotoSTN, standardise


@pytest.fixture(scope="module")
def gen(mnist) -> PhotoGenerator:
    fonts = font_files(TRAIN_FONT_DIRS)
    if not fonts:
        pytest.skip("no training fonts (fonts-dejavu-core, fonts-dejavu-extra, fonts-liberation2, "
                    "fonts-freefont-ttf): run tests/setup_system.sh")
    return PhotoGenerator(mnist["train_images"][:2000], mnist["train_labels"][:2000], fonts)


def inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (K, 2) inside the convex quadrilateral ``poly`` (4, 2), given clockwise in image axes."""
    ok = np.ones(len(pts), bool)
    for i in range(4):
        a, b = poly[i], poly[(i + 1) % 4]
        cross = (b[0] - a[0]) * (pts[:, 1] - a[1]) - (b[1] - a[1]) * (pts[:, 0] - a[0])
        ok &= cross >= -1e-6
    return ok


def test_fonts_split_train_and_test() -> None:
    train, test = font_files(TRAIN_FONT_DIRS), font_files(TEST_FONT_DIRS)
    if not train or not test:
        pytest.skip("fonts missing: run tests/setup_system.sh")
    assert not {f.rsplit("/", 1)[1] for f in train} & {f.rsplit("/", 1)[1] for f in test}
    # All four training packages: without fonts-dejavu-extra (which shares DejaVu's folder) the generator
    # would draw from 30 fonts and render other photos from the same seeds, pools and validation sets included.
    assert len(train) == TRAIN_FONTS, f"{len(train)} training fonts, not {TRAIN_FONTS}: run tests/setup_system.sh"
    assert any("DejaVuSansCondensed" in f for f in train)


def test_training_parameters_stay_in_their_ranges(gen: PhotoGenerator) -> None:
    rng = np.random.default_rng(1)
    surfaces = set()
    for _ in range(60):
        p = gen.render(rng)
        w, h = p.size
        surfaces.add(p.params["surface"])
        assert abs(p.angle) <= MAX_ANGLE + 1e-9
        if p.params["surface"] == "canvas":
            assert w == h and 40 <= w <= 280
        else:
            assert 288 <= max(w, h) <= 448
            assert any(abs(w / h - a / b) < 0.02 for a, b in ASPECTS), (w, h)
            assert 0 <= p.params["noise_sigma"] <= 7 and 0 <= p.params["blur"] <= 1.6
            assert 55 <= p.params["jpeg_quality"] <= 95
        assert 0.0 < p.params["height_share"] <= 0.9 + 1e-9
        x0, y0, x1, y1 = p.ink_box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, "the digit's ink stays in the frame"
    assert len(surfaces) >= 3


@pytest.mark.parametrize("condition", [c for c in CONDITIONS if c != "canvas"])
def test_conditions_set_the_digit_size(gen: PhotoGenerator, condition: str) -> None:
    rng = np.random.default_rng(2)
    lo, hi = HEIGHT[condition]
    for _ in range(5):
        p = gen.render(rng, condition)
        assert p.params["condition"] == condition
        assert p.params["height_share"] <= hi + 1e-9
        if condition == "printed":
            assert "font" in p.params
        if condition == "dark":
            assert p.params["surface"] == "board"


def test_ink_lies_in_the_box_and_in_the_crop(gen: PhotoGenerator) -> None:
    """On clean canvases every ink pixel is inside the reported ink box and the target crop square."""
    rng = np.random.default_rng(3)
    for _ in range(12):
        p = gen.render(rng, "canvas")
        arr = np.asarray(Image.open(io.BytesIO(p.data)).convert("L"))
        ys, xs = np.nonzero(arr > 128)
        x0, y0, x1, y1 = p.ink_box
        assert xs.min() >= x0 - 1 and xs.max() + 1 <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() + 1 <= y1 + 1
        centres = np.stack([xs + 0.5, ys + 0.5], 1)
        assert inside(p.crop_corners(), centres).all()


def test_crop_theta_gives_the_upright_digit(gen: PhotoGenerator, mnist) -> None:
    """Known answer: sampling a canvas photo at its target theta gives back the MNIST digit, upright."""
    rng = np.random.default_rng(4)
    scores = []
    for _ in range(8):
        p = gen.render(rng, "canvas")
        if "mnist_index" not in p.params or p.size[0] < 120:
            continue
        x, mapping = photo_input(p.data, 256)
        theta = torch.from_numpy(crop_theta(p, mapping, 256))[None]
        grid = F.affine_grid(theta, [1, 1, 32, 32], align_corners=False)
        crop = F.grid_sample(torch.from_numpy(x)[None, None], grid, align_corners=False)[0, 0].numpy()
        src = gen.images[p.params["mnist_index"]].astype(np.float32)
        upright = np.corrcoef(crop.ravel(), _framed(src).ravel())[0, 1]
        turned = np.corrcoef(np.rot90(crop).ravel(), _framed(src).ravel())[0, 1]
        scores.append((upright, turned))
    assert len(scores) >= 3
    assert all(u > 0.6 and u > t for u, t in scores), scores


def _framed(digit: np.ndarray) -> np.ndarray:
    """The MNIST digit in the crop's framing: its ink box centred, its longer side 20/28 of 32 px."""
    ys, xs = np.nonzero(digit > 0.3 * 255)
    box = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    side = max(box.shape) * 28 / 20
    canvas = np.zeros((math.ceil(side), math.ceil(side)), np.float32)
    oy, ox = (canvas.shape[0] - box.shape[0]) // 2, (canvas.shape[1] - box.shape[1]) // 2
    canvas[oy:oy + box.shape[0], ox:ox + box.shape[1]] = box
    return np.asarray(Image.fromarray(canvas).resize((32, 32), Image.Resampling.BILINEAR))


def test_exif_photos_are_upright_after_the_tag(gen: PhotoGenerator) -> None:
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(20):
        p = gen.render(rng, "exif")
        img = Image.open(io.BytesIO(p.data))
        seen.add(img.getexif().get(0x0112))
        assert (ImageOps.exif_transpose(img) or img).size == p.size
    assert len(seen) >= 4 and seen <= set(range(2, 9))


def test_bad_condition_is_refused(gen: PhotoGenerator) -> None:
    with pytest.raises(ValueError, match="condition must be one of"):
        gen.render(np.random.default_rng(0), "blurry")


# --- the model ---------------------------------------------------------------------------------------

TINY = {"arch": "photo", "input_size": [128, 128], "output_size": [16, 16], "view_size": 32, "glimpse_size": 16,
        "cls_channels": [4, 8], "cls_hidden": 16, "mean": 0.0, "std": 1.0}


def test_photo_model_shapes() -> None:
    model = build_model(TINY).eval()
    assert isinstance(model, PhotoSTN)
    logits, theta, rectified = model(torch.rand(3, 1, 128, 128))
    assert logits.shape == (3, 10) and theta.shape == (3, 2, 3) and rectified.shape == (3, 1, 16, 16)


def test_photo_model_starts_at_the_centre_crop() -> None:
    """Fresh: the coarse stage attends to the centre at half-size e^-1, the fine stage to the glimpse's
    central half, so theta is diag(2 * e^-1 * 0.5) = diag(e^-1)."""
    model = build_model(TINY).eval()
    theta = model(torch.rand(2, 1, 128, 128))[1]
    want = torch.tensor([[math.exp(-1), 0, 0], [0, math.exp(-1), 0]])
    torch.testing.assert_close(theta, want.expand(2, 2, 3), atol=1e-5, rtol=0)


def test_photo_model_checks_its_input() -> None:
    model = build_model(TINY).eval()
    with pytest.raises(ValueError, match=r"input must be \(B, 1, 128, 128\), got \(2, 1, 64, 64\)"):
        model(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"got \(2, 3, 128, 128\)"):
        model(torch.rand(2, 3, 128, 128))


def test_photo_model_config_checks() -> None:
    with pytest.raises(ValueError, match="square input"):
        build_model({**TINY, "input_size": [128, 96]})
    with pytest.raises(ValueError, match="multiple of view_size"):
        build_model({**TINY, "view_size": 48})


def test_standardise_flips_to_light_ink() -> None:
    """Dark ink on light paper and the same digit light on dark give the same classifier input."""
    x = torch.zeros(1, 1, 16, 16)
    x[..., 4:12, 7:9] = 1.0  # a light stroke on dark
    a, b = standardise(x, flip=True), standardise(1.0 - x, flip=True)
    torch.testing.assert_close(a, b)
    assert a[0, 0, 8, 8] > 0  # the ink is positive


def test_standardise_gradcheck() -> None:
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: standardise(t, flip=True), (x,))


def test_crop_is_differentiable_in_theta() -> None:
    model = build_model(TINY).double().eval()
    x = torch.rand(1, 1, 128, 128, dtype=torch.float64)
    theta = torch.tensor([[[0.3, 0.1, 0.2], [-0.1, 0.3, -0.1]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model.sample(x, t, (8, 8)), (theta,))


def test_scribbles_are_an_option_that_leaves_the_default_unchanged(gen: PhotoGenerator) -> None:
    """scribbles=0 draws the very same photos as before the option existed (same random stream); a share
    above 0 changes some of them; out of [0, 1] is refused."""
    plain = PhotoGenerator(gen.images, gen.labels, gen.fonts)
    zero = PhotoGenerator(gen.images, gen.labels, gen.fonts, scribbles=0.0)
    many = PhotoGenerator(gen.images, gen.labels, gen.fonts, scribbles=1.0)
    a = [plain.render(np.random.default_rng(i), "ruled").data for i in range(6)]
    b = [zero.render(np.random.default_rng(i), "ruled").data for i in range(6)]
    c = [many.render(np.random.default_rng(i), "ruled").data for i in range(6)]
    assert a == b
    assert any(x != y for x, y in zip(a, c, strict=True))
    with pytest.raises(ValueError, match="scribbles must be a probability"):
        PhotoGenerator(gen.images, gen.labels, gen.fonts, scribbles=1.5)


def test_heavy_pen_only_on_large_masks(mnist) -> None:
    """With the legible rule a max-filter of 5 thickens font glyphs (64 px) but not 28-px MNIST digits, which
    get a 3; the earlier rule (the default, the bundled models') still has it; both draw the same numbers."""
    from PIL import ImageFilter

    from model.photo import HEAVY_MIN_PX, stroke

    digit = mnist["train_images"][0].astype(np.float32) / 255.0
    big = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((64, 64)), dtype=np.float32) / 255.0
    assert digit.shape[0] < HEAVY_MIN_PX <= big.shape[0]

    def filtered(m: np.ndarray, size: int) -> np.ndarray:
        img = Image.fromarray((m * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(size))
        return np.asarray(img, dtype=np.float32) / 255.0

    seen5 = seen5_small = 0
    for seed in range(200):
        new, old = np.random.default_rng(seed), np.random.default_rng(seed)
        small, small_old = stroke(new, digit, heavy_small=False), stroke(old, digit)
        assert new.random() == old.random()  # the same draws
        if np.array_equal(small_old, filtered(digit, 5)):
            seen5_small += 1
            assert np.array_equal(small, filtered(digit, 3))
        seen5 += np.array_equal(stroke(np.random.default_rng(seed), big, heavy_small=False), filtered(big, 5))
    assert seen5 > 5 and seen5_small > 5  # 0.3 * 0.3 of 200 draws
