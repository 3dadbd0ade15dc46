"""The MNIST-sequence generator (model.sequence): the recipe's ranges, reading order, boxes, clutter, splits."""

from __future__ import annotations

import numpy as np
import pytest

from model import sequence as seq


def _digits(n: int = 50, value: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Digits whose ink is a filled square of a distinct size per label (so a box can be read back)."""
    imgs = np.zeros((n, 28, 28), np.uint8)
    labels = np.arange(n) % 10
    for i, lab in enumerate(labels):
        imgs[i, 4:6 + 2 * lab, 10:14] = value
    return imgs, labels


def test_three_digits_side_by_side_inside_the_canvas() -> None:
    imgs, labels = _digits()
    rng = np.random.default_rng(0)
    for _ in range(300):
        s = seq.render(rng, imgs, labels, clutter=0)
        assert s.image.shape == (100, 100) and s.image.dtype == np.float32 and s.labels.shape == (3,)
        x0, y0, x1, y1 = s.boxes.T
        assert (x1 - x0 == 28).all() and (y1 - y0 == 28).all()
        assert (x0[1:] == x1[:-1]).all(), "side by side, no gap"
        assert 0 <= x0[0] < 16 and (y0 >= 0).all() and (y1 <= 100).all()
        assert abs(int(y0[1]) - int(y0[0])) <= seq.MAX_SLOPE
        for (bx0, by0, bx1, by1), lab in zip(s.boxes, s.labels, strict=True):  # reading order: box i is label i
            ink = s.image[by0:by1, bx0:bx1] > 0.5
            assert ink.sum() == 4 * (2 + 2 * lab)
        outside = s.image.copy()
        for bx0, by0, bx1, by1 in s.boxes:
            outside[by0:by1, bx0:bx1] = 0
        assert outside.max() == 0, "no clutter asked for, nothing outside the digits"


def test_clutter_is_eight_9x9_pieces_under_the_digits() -> None:
    full = np.full((5, 28, 28), 200, np.uint8)  # every piece cut from these is a full 9x9 square
    rng = np.random.default_rng(1)
    seen = 0
    for _ in range(50):
        s = seq.render(rng, full, np.arange(5), clutter=8)
        outside = s.image.copy()
        for bx0, by0, bx1, by1 in s.boxes:
            assert s.image[by0:by1, bx0:bx1].min() >= 200 / 255 - 1e-6  # the digits lie on top of the clutter
            outside[by0:by1, bx0:bx1] = 0
        lit = int((outside > 0).sum())
        assert lit <= 8 * 81 and s.image.max() <= 1.0  # at most eight 9x9 pieces outside the digits
        seen += lit
    assert seen > 50 * 81, "the pieces are there (most of them outside the digits)"


def test_the_splits_never_mix() -> None:
    train, train_labels = _digits(60_000, value=77)
    test, test_labels = _digits(10_000, value=200)
    data = {"train_images": train, "train_labels": train_labels, "test_images": test, "test_labels": test_labels}
    xt, yt, bt = seq.test_set(data, n=40)
    xv, _, _ = seq.val_set(data, n=40)
    # Ink where a piece of clutter lies under a digit adds up (clipped at 255): 200 -> {200, 255}, 77 -> {77, 154, 231}.
    assert set(np.unique(xt).tolist()) <= {0, 200, 255} and set(np.unique(xv).tolist()) <= {0, 77, 154, 231}
    assert xt.dtype == np.uint8 and yt.shape == (40, 3) and bt.shape == (40, 3, 4)
    again = seq.test_set(data, n=40)
    assert np.array_equal(again[0], xt) and np.array_equal(again[1], yt), "drawn once, the same every time"


def test_bad_input_says_what_arrived() -> None:
    with pytest.raises(ValueError, match=r"images must be \(N, 28, 28\)"):
        seq.render(np.random.default_rng(0), np.zeros((3, 20, 20), np.uint8), np.zeros(3))
    with pytest.raises(ValueError, match="n_digits must be 1..3"):
        seq.render(np.random.default_rng(0), *_digits(), n_digits=4)
