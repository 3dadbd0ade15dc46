"""The MNIST-sequence benchmark of Sønderby et al. 2015 (Recurrent Spatial Transformer Networks): three MNIST
digits side by side on a 100x100 canvas with eight 9x9 pieces of clutter cut from other digits.

Recipe (the paper's, re-implemented here from its description and its published generator's parameters):

==================  ===============================================================================
canvas              100 x 100, black; pixel values in [0, 1], white ink
digits              ``n_digits`` (3) MNIST digits, 28 x 28 each, pasted side by side with no gap (84 px
                    wide), in reading order: ``labels[i]`` is the i-th digit from the left
horizontal place    the row centred, then moved by an integer uniform in [-8, 8): x0 in [0, 16)
vertical place      the first digit's top y0 uniform in [0, 100); each next digit ``slope`` px lower
                    (``slope`` an integer uniform in [-14, 14)), every digit then moved back inside the
                    canvas where it would cross an edge
clutter             ``clutter`` (8) pieces, each a 9 x 9 square cut at a uniform place from a uniform
                    digit of the same split, pasted at a uniform place, under the digits (the digits
                    are added on top, the sum clipped to 1)
==================  ===============================================================================

Splits: training draws from MNIST-train digits 0-54,999 (fresh every epoch), validation from 55,000-59,999
(``VAL_SEED``), the fixed test set from MNIST-test (``TEST_SEED``, digits and clutter alike): MNIST-test
never trains or selects a model. Each rendered sequence also reports every digit's box ``(x0, y0, x1, y1)``
on the canvas (its 28 x 28 frame), so that the regions a model answers can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CANVAS = 100
DIGIT = 28
PIECE = 9
N_DIGITS = 3
N_CLUTTER = 8
MAX_SHIFT = 8  # the row's horizontal jitter, px (either way)
MAX_SLOPE = 14  # vertical step between neighbouring digits, px (either way)
TEST_SEED = 20_261_205
VAL_SEED = 20_261_206
TEST_SIZE = 10_000


@dataclass
class Sequence:
    image: np.ndarray  # (CANVAS, CANVAS) float32 in [0, 1]
    labels: np.ndarray  # (n_digits,) int64, left to right
    boxes: np.ndarray  # (n_digits, 4) int64: x0, y0, x1, y1 of each digit's 28x28 frame


def render(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, n_digits: int = N_DIGITS,
           clutter: int = N_CLUTTER) -> Sequence:
    """One sequence from ``images`` ``(N, 28, 28)`` uint8 and their ``labels``."""
    if images.ndim != 3 or images.shape[1:] != (DIGIT, DIGIT):
        raise ValueError(f"images must be (N, {DIGIT}, {DIGIT}), got {images.shape}")
    if not 1 <= n_digits <= CANVAS // DIGIT:
        raise ValueError(f"n_digits must be 1..{CANVAS // DIGIT}, got {n_digits}")
    canvas = np.zeros((CANVAS, CANVAS), np.float32)
    for _ in range(clutter):  # pieces of other digits, under the sequence
        src = images[int(rng.integers(len(images)))].astype(np.float32) / 255.0
        sy, sx = (int(v) for v in rng.integers(0, DIGIT - PIECE, size=2))
        py, px = (int(v) for v in rng.integers(0, CANVAS - PIECE, size=2))
        canvas[py:py + PIECE, px:px + PIECE] = src[sy:sy + PIECE, sx:sx + PIECE]
    picks = rng.integers(len(images), size=n_digits)
    width = n_digits * DIGIT
    centre = (CANVAS - width) // 2
    shift = min(MAX_SHIFT, centre)
    x0 = centre + (int(rng.integers(-shift, shift)) if shift else 0)
    y0 = int(rng.integers(CANVAS))
    slope = int(rng.integers(-MAX_SLOPE, MAX_SLOPE))
    digits = np.zeros_like(canvas)
    boxes = np.zeros((n_digits, 4), np.int64)
    for i, k in enumerate(picks):
        x = x0 + i * DIGIT
        y = min(max(y0 + i * slope, 0), CANVAS - DIGIT)  # moved back inside where it would cross an edge
        digits[y:y + DIGIT, x:x + DIGIT] = images[int(k)].astype(np.float32) / 255.0
        boxes[i] = (x, y, x + DIGIT, y + DIGIT)
    image = np.clip(canvas + digits, 0.0, 1.0)
    return Sequence(image, labels[picks].astype(np.int64), boxes)


def fixed_set(images: np.ndarray, labels: np.ndarray, seed: int, n: int) -> tuple[np.ndarray, np.ndarray,
                                                                                  np.ndarray]:
    """``n`` sequences drawn once: uint8 images ``(n, 100, 100)``, labels ``(n, 3)``, boxes ``(n, 3, 4)``."""
    rng = np.random.default_rng(seed)
    xs = np.empty((n, CANVAS, CANVAS), np.uint8)
    ys = np.empty((n, N_DIGITS), np.int64)
    bs = np.empty((n, N_DIGITS, 4), np.int64)
    for i in range(n):
        s = render(rng, images, labels)
        xs[i] = np.round(s.image * 255.0).astype(np.uint8)
        ys[i], bs[i] = s.labels, s.boxes
    return xs, ys, bs


def test_set(data: dict[str, Any], n: int = TEST_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed test sequences: MNIST-test digits and clutter only."""
    return fixed_set(data["test_images"], data["test_labels"], TEST_SEED, n)


def val_set(data: dict[str, Any], n: int = 5000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed validation sequences (model selection): MNIST-train digits 55,000-59,999."""
    return fixed_set(data["train_images"][55_000:], data["train_labels"][55_000:], VAL_SEED, n)
