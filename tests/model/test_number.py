"""The number-photo generator (model.number): the number it says it drew, where each digit is, and the
line's geometry within the documented ranges."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from model.number import LINE_WIDTH, MAX_LINE_ANGLE, SURFACE_KINDS, SURFACES, NumberGenerator, example, fixed_set
from model.photo import TRAIN_FONT_DIRS, font_files


@pytest.fixture(scope="module")
def gen(mnist: dict[str, Any]) -> NumberGenerator:
    fonts = font_files(TRAIN_FONT_DIRS)
    if not fonts:
        pytest.skip("the training fonts are not installed (tests/setup_system.sh)")
    return NumberGenerator(mnist["train_images"][:2000], mnist["train_labels"][:2000], fonts)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_a_number_of_n_digits_in_a_line_inside_the_frame(gen: NumberGenerator, n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(3):
        photo = gen.render(rng, n)
        w, h = photo.size
        assert len(photo.labels) == n and all(0 <= d <= 9 for d in photo.labels)
        assert photo.ink_boxes.shape == (n, 4) and photo.centres.shape == (n, 2)
        assert (photo.ink_boxes[:, :2] >= 0).all() and (photo.ink_boxes[:, 2] <= w).all()
        assert (photo.ink_boxes[:, 3] <= h).all()
        line = photo.params["line_angle_deg"]
        assert abs(math.radians(line)) <= MAX_LINE_ANGLE
        assert photo.params["line_width_share"] <= LINE_WIDTH[1] + 1e-9
        # Left to right along the line: each centre further along its direction than the one before.
        along = photo.centres @ np.array([math.cos(math.radians(line)), math.sin(math.radians(line))])
        assert (np.diff(along) > 0).all()
        # Each digit's ink lies in its own target crop (its centre is the crop's, its longer side 20/28).
        for i in range(n):
            corners = photo.crop_corners(i)
            x0, y0, x1, y1 = photo.ink_boxes[i]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            assert np.hypot(*(corners.mean(0) - [cx, cy])) < 0.2 * photo.crop_sides[i]


def test_the_model_input_and_its_targets(gen: NumberGenerator) -> None:
    x, labels, thetas = example(gen, np.random.default_rng(7), 256, 4)
    assert x.shape == (256, 256) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    assert len(labels) == 4 and thetas.shape == (4, 2, 3)
    assert (np.abs(thetas[:, :, 2]) < 1).all()  # every crop centred inside the input
    x2, labels2, thetas2 = example(gen, np.random.default_rng(7), 256, 4)
    assert labels2 == labels and np.array_equal(x2, x) and np.array_equal(thetas2, thetas)  # seeded
    with pytest.raises(ValueError, match="n_digits must be 1..5"):
        gen.render(np.random.default_rng(0), 6)


def test_the_line_width_and_the_frame_can_be_asked_for(mnist: dict[str, Any]) -> None:
    """The small numbers of bench.number_zoom and the zoom tests: the line 12-35 % of the frame's width, frames
    of 768-1,344 px; the training ranges are the defaults, and a range outside (0, 1] is refused."""
    fonts = font_files(TRAIN_FONT_DIRS)
    if not fonts:
        pytest.skip("the training fonts are not installed (tests/setup_system.sh)")
    small = NumberGenerator(mnist["train_images"][:500], mnist["train_labels"][:500], fonts,
                            line_width=(0.12, 0.35), long_side=(768, 1344))
    rng = np.random.default_rng(7)
    for n in (1, 3, 5):
        photo = small.render(rng, n)
        assert 768 <= max(photo.size) <= 1344
        assert photo.params["line_width_share"] <= 0.35 + 1e-9
    with pytest.raises(ValueError, match="line_width must be within"):
        NumberGenerator(mnist["train_images"][:10], mnist["train_labels"][:10], fonts, line_width=(0.5, 1.2))


def test_the_mix_of_surfaces_can_be_asked_for(mnist: dict[str, Any]) -> None:
    """A training pool may draw more ruled and squared paper (``number_pool --surfaces``): a mix of squared
    paper only gives squared paper only, an even mix every kind, the default the same photos as before the
    option, and a mix that is not four probabilities summing to 1 is refused."""
    fonts = font_files(TRAIN_FONT_DIRS)
    if not fonts:
        pytest.skip("the training fonts are not installed (tests/setup_system.sh)")
    images, labels = mnist["train_images"][:500], mnist["train_labels"][:500]
    assert math.isclose(sum(SURFACES), 1.0) and len(SURFACES) == len(SURFACE_KINDS)
    rng = np.random.default_rng(3)
    squared = NumberGenerator(images, labels, fonts, surfaces=(0.0, 0.0, 1.0, 0.0))
    assert {squared.render(rng, 1).params["surface"] for _ in range(6)} == {"squared"}
    # The default draws what it drew before the option (surfaces, frames, digits of ten photos, checked
    # against the generator as of commit 5f9c87f with the 44 training fonts): the pools and sets stay as rendered.
    default = NumberGenerator(images, labels, fonts)
    rng10 = np.random.default_rng(11)
    photos = [default.render(rng10, 1 + i % 5) for i in range(10)]
    assert [p.params["surface"] for p in photos] == ["plain", "ruled", "plain", "board", "plain", "plain", "plain",
                                                     "squared", "ruled", "plain"]
    assert [p.size for p in photos][:4] == [(409, 230), (383, 383), (210, 374), (420, 236)]
    assert [p.labels for p in photos][:5] == [[1], [0, 5], [5, 1, 9], [6, 7, 3, 3], [8, 5, 3, 0, 1]]
    even = NumberGenerator(images, labels, fonts, surfaces=(0.25, 0.25, 0.25, 0.25))
    assert {even.render(rng, 1).params["surface"] for _ in range(40)} == set(SURFACE_KINDS)
    for bad in [(0.5, 0.5, 0.5, 0.0), (1.0, 0.0, 0.0), (1.2, -0.2, 0.0, 0.0)]:
        with pytest.raises(ValueError, match="surfaces must be 4 probabilities"):
            NumberGenerator(images, labels, fonts, surfaces=bad)


def test_a_pool_is_rendered_once_per_request_and_font_set(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                           mnist: dict[str, Any]) -> None:
    """``number_pool.build`` reuses a pool whose meta records the same request and training fonts, and renders
    it again where the fonts differ (a machine without one of the font packages); the request names the mix
    of surfaces only where it is not the generator's, so pools rendered before the option stay valid."""
    from model import number_pool

    fonts = font_files(TRAIN_FONT_DIRS)
    if not fonts:
        pytest.skip("the training fonts are not installed (tests/setup_system.sh)")
    monkeypatch.setattr(number_pool, "CHUNK", 2)
    images, labels = mnist["train_images"][:number_pool.TRAIN_DIGITS], mnist["train_labels"][:number_pool.TRAIN_DIGITS]
    meta = number_pool.build(tmp_path / "a", 4, side=64, workers=1)
    assert "surfaces" not in meta["request"] and meta["fonts"] == len(fonts)
    x, d, t = (np.array(a) for a in number_pool.load(tmp_path / "a"))
    assert x.shape == (4, 64, 64) and d.shape == (4, 5) and t.shape == (4, 5, 2, 3)
    np.testing.assert_array_equal(x[2:], fixed_set(images, labels, fonts, (0, 1), 2, 64)[0])  # chunk 1
    assert number_pool.build(tmp_path / "a", 4, side=64, workers=1)["render_s"] == meta["render_s"]  # reused
    before = {k: v for k, v in meta.items() if k != "fonts"}  # a pool rendered before the count was kept
    (tmp_path / "a" / "meta.json").write_text(json.dumps(before))
    assert number_pool.build(tmp_path / "a", 4, side=64, workers=1) == before  # reused
    (tmp_path / "a" / "meta.json").write_text(json.dumps({**meta, "fonts": len(fonts) - 1}))
    again = number_pool.build(tmp_path / "a", 4, side=64, workers=1)  # rendered again
    assert again["fonts"] == len(fonts) and again["render_s"] != meta["render_s"]
    # A bad mix is refused before the pool's files are touched: the pool is still there and reused.
    with pytest.raises(ValueError, match="surfaces must be"):
        number_pool.build(tmp_path / "a", 4, side=64, workers=1, surfaces=(0.5, 0.5, 0.5, 0.0))
    assert number_pool.build(tmp_path / "a", 4, side=64, workers=1) == again
    np.testing.assert_array_equal(number_pool.load(tmp_path / "a")[0], x)
    squared = (0.0, 0.0, 1.0, 0.0)
    mixed = number_pool.build(tmp_path / "b", 4, side=64, workers=1, surfaces=squared)
    assert mixed["request"]["surfaces"] == list(squared)
    params: list[dict[str, Any]] = []
    np.testing.assert_array_equal(number_pool.load(tmp_path / "b")[0][:2],
                                  fixed_set(images, labels, fonts, (0, 0), 2, 64, params, surfaces=squared)[0])
    assert {q["surface"] for q in params} == {"squared"}
