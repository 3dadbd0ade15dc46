"""Synthetic phone photos of numbers: 1-5 digits written or printed in a line on paper (issue #11, the
house-number use), built on the photo generator's surfaces, light, ink, marks, noise, blur and JPEG
(``model.photo``).

Parameters (uniform unless said otherwise):

==================  ===============================================================================
frame               aspect ratio W:H from {4:3, 3:4, 16:9, 9:16, 1:1}; longer side 256-448 px
surface             plain paper 0.55, ruled 0.20, squared 0.13, board (chalk, light on dark) 0.12
                    (``SURFACES``; a training pool may draw another mix: ``model.number_pool``)
number              1-5 digits, each length equally likely; handwritten (each digit its own MNIST
                    digit) with probability 0.7, else printed, the whole number in one font
line                the ink row's width 35-85 % of the frame's width before the line is turned
                    (shrunk where the turned line would not fit), the whole line rotated ±15°,
                    centred anywhere that keeps it inside the frame
each digit          its own scale x0.85-1.15 of the line's digit height, rotation ±8°, baseline
                    offset ±8 % of the height, gap to the previous digit's ink 5-35 % of the height
                    (printed: 2-15 %)
stroke, ink, light  as ``model.photo`` (thinned or thickened strokes, edge sharpness, ink and chalk
                    levels, pencil, illumination gradient, vignette, shadow), noise σ 0-7, blur
                    radius 0-1.6 px, JPEG quality 55-95
marks               with probability 0.5, 1-4 strokes or dots, none within 0.7 digit heights of the
                    line's ink
==================  ===============================================================================

Each photo reports, per digit from left to right along the line, its target crop (the upright square
around its ink, turned by the line's and its own rotation, the ink's longer side 20/28 of it: MNIST's
framing) and its ink box. The held-out sets use MNIST-test digits and the held-out fonts
(``model.photo.TEST_FONT_DIRS``); training MNIST-train 0-54,999 and the training fonts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from model.multi import NO_DIGIT
from model.photo import (
    ASPECTS,
    CROP_PER_INK,
    TEST_FONT_DIRS,
    _camera,
    _illumination,
    _surface,
    _warp_mask,
    font_files,
    frame_size,
    glyph,
    ink_extent,
    photo_input,
    stroke,
)

MAX_DIGITS = 5
LINE_WIDTH = (0.35, 0.85)  # the ink row's width, share of the frame's width
LONG_SIDE = (256, 448)  # the frame's longer side, px
MAX_LINE_ANGLE = math.radians(15)
MAX_DIGIT_ANGLE = math.radians(8)
SURFACE_KINDS = ("plain", "ruled", "squared", "board")
SURFACES = (0.55, 0.20, 0.13, 0.12)  # each surface's probability, in SURFACE_KINDS' order


def check_surfaces(surfaces: Sequence[float]) -> tuple[float, ...]:
    """``surfaces`` as floats, or ValueError where it is not one probability per kind (``SURFACE_KINDS``)
    summing to 1."""
    if len(surfaces) != len(SURFACE_KINDS) or min(surfaces) < 0 or not math.isclose(sum(surfaces), 1.0):
        raise ValueError(f"surfaces must be {len(SURFACE_KINDS)} probabilities summing to 1, got {surfaces}")
    return tuple(float(q) for q in surfaces)


@dataclass
class NumberPhoto:
    data: bytes  # the encoded photo (JPEG)
    labels: list[int]  # the digits, left to right along the line
    size: tuple[int, int]  # (W, H)
    centres: np.ndarray  # (n, 2) each digit's ink-box centre, px
    angles: np.ndarray  # (n,) each digit's rotation (the line's plus its own), radians
    crop_sides: np.ndarray  # (n,) each digit's target crop side, px
    ink_boxes: np.ndarray  # (n, 4) axis-aligned (x0, y0, x1, y1) of each digit's ink, px
    params: dict[str, Any] = field(default_factory=dict)

    def crop_corners(self, i: int) -> np.ndarray:
        """Corners (4, 2) TL, TR, BR, BL of digit ``i``'s target crop, px."""
        c, s = math.cos(self.angles[i]), math.sin(self.angles[i])
        h = self.crop_sides[i] / 2
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
        return pts @ np.array([[c, s], [-s, c]]) + self.centres[i]


class NumberGenerator:
    """Renders photos of numbers from ``images`` (N, 28, 28) uint8 with ``labels``, and ``fonts``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, fonts: list[str],
                 line_width: tuple[float, float] = LINE_WIDTH, long_side: tuple[int, int] = LONG_SIDE,
                 surfaces: Sequence[float] = SURFACES) -> None:
        """``line_width``: the ink row's width as a share of the frame's width; ``long_side``: the frame's
        longer side, px (both uniform; training's are the defaults); ``surfaces``: the probabilities of
        plain, ruled, squared paper and a board (``SURFACE_KINDS``)."""
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"images must be (N, 28, 28), got {images.shape}")
        if not fonts:
            raise ValueError("printed numbers need fonts")
        if not 0 < line_width[0] <= line_width[1] <= 1 or not 16 <= long_side[0] <= long_side[1]:
            raise ValueError(f"line_width must be within (0, 1] and long_side >= 16, got {line_width}, {long_side}")
        self.surfaces = check_surfaces(surfaces)
        self.images, self.labels, self.fonts = images, labels, fonts
        self.line_width, self.long_side = line_width, long_side

    def render(self, rng: np.random.Generator, n_digits: int | None = None) -> NumberPhoto:
        n = int(rng.integers(1, MAX_DIGITS + 1)) if n_digits is None else int(n_digits)
        if not 1 <= n <= MAX_DIGITS:
            raise ValueError(f"n_digits must be 1..{MAX_DIGITS}, got {n}")
        for _ in range(100):
            photo = self._render(rng, n)
            if photo is not None:
                return photo
        raise RuntimeError("no readable number in 100 draws")  # pragma: no cover

    def _render(self, rng: np.random.Generator, n: int) -> NumberPhoto | None:
        p: dict[str, Any] = {"n_digits": n}
        kind = str(rng.choice(SURFACE_KINDS, p=self.surfaces))
        long_side = int(rng.integers(self.long_side[0], self.long_side[1] + 1))
        w, h = frame_size(long_side, ASPECTS[int(rng.integers(len(ASPECTS)))])
        p.update(surface=kind, frame=(w, h))

        # The digits' masks, cropped to their ink.
        printed = rng.random() >= 0.7
        masks, labels = [], []
        font = self.fonts[int(rng.integers(len(self.fonts)))]
        for _ in range(n):
            if printed:
                label = int(rng.integers(10))
                mask = glyph(font, label)
            else:
                k = int(rng.integers(len(self.images)))
                label, mask = int(self.labels[k]), self.images[k].astype(np.float32) / 255.0
            mask = stroke(rng, mask)
            x0, y0, x1, y1 = ink_extent(mask)
            masks.append(mask[int(y0):int(y1), int(x0):int(x1)])
            labels.append(label)
        p["printed"] = Path(font).name if printed else None

        # The line in its own upright coordinates (units: the digit height), left to right.
        scales = rng.uniform(0.85, 1.15, size=n)
        angles = rng.uniform(-MAX_DIGIT_ANGLE, MAX_DIGIT_ANGLE, size=n)
        offsets = rng.uniform(-0.08, 0.08, size=n)
        gaps = rng.uniform(0.02, 0.15, size=n) if printed else rng.uniform(0.05, 0.35, size=n)
        widths = np.array([m.shape[1] / m.shape[0] for m in masks]) * scales  # ink widths, in heights
        xs, x = [], 0.0
        for i in range(n):
            if i:
                x += gaps[i]
            xs.append(x + widths[i] / 2)
            x += widths[i]
        row = x  # the ink row's width, in digit heights
        line_angle = float(rng.uniform(-MAX_LINE_ANGLE, MAX_LINE_ANGLE))
        height = float(rng.uniform(*self.line_width)) * w / row  # px per digit height
        # Fit: the turned line's extent (plus each digit's height) inside the frame.
        c, s = abs(math.cos(line_angle)), abs(math.sin(line_angle))
        ext_w, ext_h = (row * c + 1.3 * s) * height, (row * s + 1.3 * c) * height
        height *= min(1.0, 0.95 * w / ext_w, 0.95 * h / ext_h)
        ext_w, ext_h = (row * c + 1.3 * s) * height, (row * s + 1.3 * c) * height
        if height < 12:  # too small to read at this photo's resolution: draw again
            return None
        cx = float(rng.uniform(ext_w / 2, w - ext_w / 2))
        cy = float(rng.uniform(ext_h / 2, h - ext_h / 2))
        p.update(line_angle_deg=math.degrees(line_angle), line_width_share=row * height / w, digit_px=height)

        rot = np.array([[math.cos(line_angle), -math.sin(line_angle)], [math.sin(line_angle), math.cos(line_angle)]])
        alpha = np.zeros((h, w), np.float32)
        centres, sides, boxes = np.zeros((n, 2)), np.zeros(n), np.zeros((n, 4))
        gain = float(rng.uniform(1.5, 4.0))
        for i, mask in enumerate(masks):
            local = np.array([xs[i] - row / 2, offsets[i]]) * height
            centre = rot @ local + np.array([cx, cy])
            k = scales[i] * height / mask.shape[0]
            a = _warp_mask(mask, (w, h), (float(centre[0]), float(centre[1])), line_angle + float(angles[i]), k,
                           (mask.shape[1] / 2, mask.shape[0] / 2))
            a = np.clip((a - 0.5) * gain + 0.5, 0.0, 1.0)
            if a.max() < 0.5:  # the warp left too little ink to read: draw again
                return None
            np.maximum(alpha, a, out=alpha)
            centres[i] = centre
            sides[i] = max(mask.shape) * k * CROP_PER_INK
            boxes[i] = ink_extent(a, 0.3 * float(a.max()))

        img, tone = _surface(rng, kind, h, w)
        marks = self._marks(rng, (w, h), centres, height) if rng.random() < 0.5 else np.zeros((h, w), np.float32)
        if kind == "board":
            ink = float(rng.uniform(180, 250))
            opacity: Any = rng.uniform(0.6, 0.95)
        else:
            ink = float(rng.uniform(0.05, 0.45)) * tone
            opacity = rng.uniform(0.45, 0.75) if rng.random() < 0.1 else rng.uniform(0.75, 1.0)
        a_all = np.maximum(alpha, marks) * opacity
        img = (img * (1 - a_all) + ink * a_all) * _illumination(rng, h, w)
        pil, camera = _camera(rng, img)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=camera["jpeg_quality"])
        p.update(camera)
        return NumberPhoto(buf.getvalue(), labels, (w, h), centres, line_angle + angles, sides, boxes, p)

    def _marks(self, rng: np.random.Generator, size: tuple[int, int], centres: np.ndarray,
               height: float) -> np.ndarray:
        """1-4 strokes or dots, none within 0.7 digit heights of any digit's centre."""
        w, h = size
        layer = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(layer)
        keep_out = 0.7 * height + height / 2
        for _ in range(int(rng.integers(1, 5))):
            for _ in range(20):
                mx, my = float(rng.uniform(0, w)), float(rng.uniform(0, h))
                if np.hypot(centres[:, 0] - mx, centres[:, 1] - my).min() > keep_out:
                    break
            else:
                continue
            if rng.random() < 0.7:
                length = rng.uniform(0.05, 0.25) * min(w, h)
                phi = rng.uniform(0, math.pi)
                dx, dy = math.cos(phi) * length / 2, math.sin(phi) * length / 2
                draw.line([(mx - dx, my - dy), (mx + dx, my + dy)], fill=255, width=int(rng.integers(1, 4)))
            else:
                r = rng.uniform(1, 3)
                draw.ellipse([mx - r, my - r, mx + r, my + r], fill=255)
        marks = np.asarray(layer, dtype=np.float32) / 255.0
        yy, xx = np.ogrid[0:h, 0:w]
        for cx, cy in centres:
            marks[(xx - cx) ** 2 + (yy - cy) ** 2 < keep_out ** 2] = 0.0
        return marks


def crop_thetas(photo: NumberPhoto, mapping: tuple[float, float, float], side: int) -> np.ndarray:
    """Each digit's target ``theta_out_to_in`` (n, 2, 3) in the letterboxed input's normalised coordinates."""
    scale, ox, oy = mapping
    out = np.zeros((len(photo.labels), 2, 3), np.float32)
    for i in range(len(photo.labels)):
        cx = (photo.centres[i, 0] * scale + ox) / side * 2 - 1
        cy = (photo.centres[i, 1] * scale + oy) / side * 2 - 1
        a = photo.crop_sides[i] * scale / side
        c, s = math.cos(photo.angles[i]), math.sin(photo.angles[i])
        out[i] = [[a * c, -a * s, cx], [a * s, a * c, cy]]
    return out


def example(gen: NumberGenerator, rng: np.random.Generator, side: int, n_digits: int | None = None,
            params: list[dict[str, Any]] | None = None) -> tuple[np.ndarray, list[int], np.ndarray]:
    """One photo -> (model input (side, side) float32 in [0, 1], digits, target thetas (n, 2, 3)); its
    generator parameters are appended to ``params`` where one is given."""
    photo = gen.render(rng, n_digits)
    if params is not None:
        params.append(photo.params)
    x, mapping = photo_input(photo.data, side)
    return x, photo.labels, crop_thetas(photo, mapping, side)


def fixed_set(images: np.ndarray, labels: np.ndarray, fonts: list[str], seed: int | Sequence[int], n: int,
              side: int, params: list[dict[str, Any]] | None = None,
              surfaces: Sequence[float] = SURFACES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` number photos drawn once, lengths 1-5 in turn.

    Returns inputs (n, side, side) uint8, digits (n, 5) int64 (``NO_DIGIT`` = 10 past each number's end)
    and target thetas (n, 5, 2, 3) float32 (zero past the end); each photo's generator parameters (surface,
    printed font or None, ...) are appended to ``params`` where one is given; ``surfaces`` as
    ``NumberGenerator``'s."""
    gen = NumberGenerator(images, labels, fonts, surfaces=surfaces)
    rng = np.random.default_rng(seed)
    xs = np.empty((n, side, side), np.uint8)
    ys = np.full((n, MAX_DIGITS), NO_DIGIT, np.int64)
    ts = np.zeros((n, MAX_DIGITS, 2, 3), np.float32)
    for i in range(n):
        x, digits, thetas = example(gen, rng, side, i % MAX_DIGITS + 1, params)
        xs[i] = np.round(x * 255).astype(np.uint8)
        ys[i, : len(digits)] = digits
        ts[i, : len(digits)] = thetas
    return xs, ys, ts


TEST_SEED = 20_261_202
TEST_NUMBERS = 2000


def test_set(data: dict[str, Any], side: int, n: int = TEST_NUMBERS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed held-out numbers: MNIST-test digits, the held-out fonts, its own seed."""
    return fixed_set(data["test_images"], data["test_labels"], font_files(TEST_FONT_DIRS), TEST_SEED, n, side)
