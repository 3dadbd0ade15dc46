"""MNIST reading and checksums; the distortions and the fixed test sets."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model import data as mnist
from model import distort

TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_loads_and_matches_the_published_counts(mnist: dict[str, Any]) -> None:
    assert mnist["train_images"].shape == (60000, 28, 28) and mnist["train_images"].dtype == np.uint8
    assert mnist["test_images"].shape == (10000, 28, 28)
    assert np.bincount(mnist["test_labels"]).tolist() == TEST_COUNTS
    assert set(mnist["checksums"]) == set(mnist_files())


def mnist_files() -> list[str]:
    return list(mnist.FILES.values())


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    src = mnist.default_data_dir()
    for f in [*mnist_files(), "SHA256SUMS"]:
        shutil.copy(src / f, tmp_path / f)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(mnist.DataError, match="t10k-labels-idx1-ubyte.gz: sha256 .* does not match"):
        mnist.load_mnist(tmp_path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(mnist.DataError, match="train-images-idx3-ubyte.gz is missing"):
        mnist.load_mnist(tmp_path)


@pytest.mark.parametrize("name", distort.NAMES)
def test_distortion_shapes_and_range(name: str, mnist: dict[str, Any]) -> None:
    g = torch.Generator().manual_seed(0)
    x = distort.distort(name, mnist["test_images"][:16], g, mnist["test_images"][:100])
    size = distort.CANVAS[name]
    assert x.shape == (16, 1, size, size) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.sum()) > 0  # the digits are still there


def test_fixed_test_set_is_deterministic_and_chunk_independent(mnist: dict[str, Any]) -> None:
    a, ya = distort.make_test_set("rts", mnist["test_images"][:1500], mnist["test_labels"][:1500])
    b, yb = distort.make_test_set("rts", mnist["test_images"][:1500], mnist["test_labels"][:1500])
    assert torch.equal(a, b) and torch.equal(ya, yb)
    g = torch.Generator().manual_seed(1)
    fresh = distort.distort("rts", mnist["test_images"][:16], g)
    assert not torch.equal(fresh, a[:16])  # training draws differ from the test draw


def test_rts_keeps_the_ink_on_the_canvas(mnist: dict[str, Any]) -> None:
    g = torch.Generator().manual_seed(3)
    x = distort.distort("rts", mnist["test_images"][:200], g)
    src_ink = torch.as_tensor(mnist["test_images"][:200]).float().sum((1, 2)) / 255
    # Bilinear resampling at scale s changes the ink by about s^2 (0.49-1.44); none is cut off entirely.
    ratio = x.sum((1, 2, 3)) / src_ink
    assert float(ratio.min()) > 0.4 and float(ratio.max()) < 1.6


def test_rts_places_the_digit_anywhere_its_ink_fits(mnist: dict[str, Any]) -> None:
    """The paper's placement: the ink never leaves the canvas (the same draw on a canvas twice as wide, the
    digit 21 px further in, holds the same ink), yet digits come closer to the border than the rule that the
    whole scaled 28x28 frame stays on the canvas would allow."""
    x8 = distort.to_float(mnist["test_images"][:500])
    g = torch.Generator().manual_seed(11)
    angle, scale, centre = distort.rts_draw(x8, torch.Generator().manual_seed(11))
    x = distort.rts(x8, torch.Generator().manual_seed(11))
    wide = distort.place(x8, angle, scale, centre + 21, 84)
    assert torch.allclose(distort.place(x8, angle, scale, centre, 42), x)
    torch.testing.assert_close(x.sum((1, 2, 3)), wide.sum((1, 2, 3)), rtol=1e-5, atol=1e-3)
    frame_margin = 21 - 14 * scale  # the frame rule's largest offset of the centre from the middle
    offset = (centre - 21).abs().amax(1)
    assert float((offset > frame_margin + 1).float().mean()) > 0.3
    assert int(((x[:, 0, 0] + x[:, 0, -1] + x[:, 0, :, 0] + x[:, 0, :, -1]) > 0).any(1).sum()) > 0
    assert float(distort.rts(torch.zeros(2, 1, 28, 28), g).abs().sum()) == 0.0  # a blank digit is no error


def test_tc_has_the_digit_and_six_pieces_of_clutter(mnist: dict[str, Any]) -> None:
    g = torch.Generator().manual_seed(5)
    blank = np.zeros((4, 28, 28), np.uint8)
    x = distort.distort("tc", blank, g, mnist["test_images"])
    # With a blank digit, only clutter is left: at most 6 pieces of 6x6 pixels each.
    assert int((x > 0).sum((1, 2, 3)).max()) <= 6 * 36
    assert int((x > 0).sum()) > 0


def test_validation_comes_from_mnist_train(mnist: dict[str, Any]) -> None:
    parts = distort.split(mnist)
    assert parts["train_images"].shape[0] == 55000 and parts["val_images"].shape[0] == distort.VAL_SIZE
    assert torch.equal(parts["val_images"], torch.as_tensor(mnist["train_images"][-distort.VAL_SIZE:]))


def test_homography_maps_the_points() -> None:
    src = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
    dst = torch.tensor([[[-0.8, -0.9], [0.9, -1.0], [1.1, 0.8], [-1.0, 1.0]]])
    H = distort.homography_from_points(src, dst)
    uvq = torch.cat([src, torch.ones(1, 4, 1)], 2) @ H.transpose(1, 2)
    torch.testing.assert_close(uvq[..., :2] / uvq[..., 2:], dst, atol=1e-5, rtol=0)


def test_unknown_distortion() -> None:
    with pytest.raises(ValueError, match="unknown distortion 'zoom'"):
        distort.distort("zoom", np.zeros((1, 28, 28), np.uint8), torch.Generator())


def test_tc_needs_clutter() -> None:
    with pytest.raises(ValueError, match="needs clutter_u8"):
        distort.distort("tc", np.zeros((1, 28, 28), np.uint8), torch.Generator())


def test_pre_elastic_deforms_the_chosen_share_first_and_leaves_the_rest(mnist: dict[str, Any]) -> None:
    """``pre_elastic`` = p: the digits a per-digit draw chose get the ``e`` field before the run's distortion,
    the others are distorted as without it; p = 0 is the plain distortion."""
    x8 = torch.as_tensor(mnist["train_images"][:64])
    plain = distort.distort("rts", x8, torch.Generator().manual_seed(3))
    torch.testing.assert_close(distort.distort("rts", x8, torch.Generator().manual_seed(3), pre_elastic=0.0), plain)

    got = distort.distort("rts", x8, torch.Generator().manual_seed(3), pre_elastic=0.5)
    g = torch.Generator().manual_seed(3)
    chosen = torch.rand(64, generator=g) < 0.5
    x = distort.to_float(x8)
    x[chosen] = distort.elastic(x[chosen], g)
    torch.testing.assert_close(got, distort.rts(x, g))
    assert 16 < int(chosen.sum()) < 48
    # The chosen digits really were deformed: their 28x28 frames differ from the originals.
    assert float((x[chosen] - distort.to_float(x8)[chosen]).abs().amax(dim=(1, 2, 3)).min()) > 0.1
