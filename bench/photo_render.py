"""Synthetic "phone photos of one digit": a held-out robustness test set, rendered independently of training.

Nothing here comes from the training generator (``model/photo.py``): the paper, lighting, ink, chalk and camera
models are this file's own, so a model that scores well here generalises rather than matches a generator. Only
MNIST-TEST digits (``model.data.load_mnist()["test_images"]``) and, for printed digits, the upright regular/bold
fonts of Debian's fonts-urw-base35 are used. numpy + Pillow only.

    python -m bench.photo_render --out DIR --per-condition N [--seed 20261201] [--conditions large exif ...]

writes ``DIR/<condition>/<index:05d>.jpg`` and ``DIR/manifest.json`` (a list of records, each with ``file``
relative to DIR). ``render(condition, index, seed)`` returns ``(jpeg_bytes, record)`` and is deterministic: all
randomness of a photo comes from one ``numpy.random.Generator`` seeded with ``(seed, crc32(condition), index)``.

Conditions (digit height h = the unrotated digit's height as a share of the photo's SHORTER side; for MNIST the
height of its non-zero pixels, so the thresholded ink is a little shorter; for fonts the glyph's ink):

- ``large``: h in 45-80 %.  ``medium``: h in 25-45 %.  ``small``: h in 12-25 %.
- ``exif``: a ``large`` photo whose stored pixels are the upright image transformed by the inverse of EXIF
  orientation o in {2..8} (uniform), with tag 0x0112 = o written, so that a viewer applying the tag (Pillow's
  ``ImageOps.exif_transpose``) sees it upright.
- ``printed``: a font digit (label uniform 0-9, font uniform over ``FONTS``), medium size, near-black ink.
- ``ruled``: medium, on ruled notebook paper: lines (light blue 70 % / grey 30 %) every 3-8 % of the height,
  1-3 px (0.15-0.4 % of the shorter side), tilted by up to +-1.5 deg; a red margin line (one or two) at 5-20 %
  of the width with probability 0.5; 2-5 pen marks in the digit's ink, never within 3 % of the shorter side
  of its ink box: short strokes (length 3-10 %), scribbles (a 5-12 point random walk in a 4-12 % box), at most
  one part of a neighbouring digit (another MNIST-test digit, 0.8-1.2x the size, 25-60 % of its width or
  height left inside the frame at an edge).
- ``dark``: light-on-dark: a chalk digit (white, slightly tinted, 235-250) on a dark green / grey / near-black
  board (reflectance 20-85), medium size, chalk grain in the strokes (2 px grains, coverage uniform from
  35-70 % up to 100 %, a third of them full), board dust: a smooth haze of chalk alpha a * (0.5 + 0.35 N(0, 1)),
  a in 0.06-0.25, 2-6 soft erased swipes (alpha 0.1-0.27), 300-2000 speckles (alpha 0.24-0.63).

Every photo:

- frame aspect ratio uniform over 4:3, 3:4, 16:9, 9:16, 1:1; longer side 480-800 px (uniform integer).
- paper reflectance off-white: 255 minus (0-10, 0-12, 0-25) per channel (a cream bias). Light: brightness
  150-235 (board: 170-245), colour cast red x(1-0.06 .. 1+0.12) and blue the opposite, each channel also x(1 +-
  0.03); a linear gradient (random direction, the darkest side 0-35 % darker), a vignette (0-35 % at the far
  corner, centre offset +-0.3), with probability 0.35 a soft shadow (a half plane 15-45 % darker, edge softness
  3-15 % of the shorter side), paper mottling (0-3 %, 8 px grain). Light is computed at 1/8 resolution and
  upscaled bilinearly, then multiplies the reflectance image.
- handwritten digit: the MNIST 28x28 image cropped to its ink (2 px pad), scaled and rotated in one bicubic
  affine transform (smooth upscale), then a threshold ramp makes strokes look like ink: alpha = darkness *
  smoothstep((v/255 - t) / soft), t 0.25-0.7 (stroke width; chalk 0.15-0.45), soft 0.08-0.25, darkness
  (stroke darkness) 0.6-1.0 (chalk 0.7-1.0). Ink RGB: black 40 % (15-40, blue +0-8), ballpoint blue 25 %
  (10-35, 30-70, 100-160), dark grey 20 % (55-85), brown 15 % (65-95, 40-60, 20-40). Printed: glyph drawn at
  320 px, cropped to its ink, LANCZOS-resized, rotated bicubic, t 0.3-0.5, soft 0.08-0.2, darkness 0.85-1.0,
  black 85 % / dark grey 15 %.
- rotation uniform in +-30 deg; position uniform such that the ink box stays inside the frame with a margin
  of at least 3 % of the width (x) and of the height (y); the scale is reduced when the rotated digit would
  not fit (so a large digit in a 16:9 frame may end below its drawn h, never below 45 %).
- camera: Gaussian blur radius 0-1.5 px (optics, Pillow GaussianBlur; none under 0.1), then sensor noise:
  luminance Gaussian sigma 1.5-7 levels per pixel, chroma Gaussian sigma 0-3 levels at half resolution; then
  JPEG quality 60-95 (Pillow defaults, 4:2:0).

Record per photo: ``label`` (int), ``condition``, ``ink_box`` [x0, y0, x1, y1] (x1, y1 exclusive, Pillow's
``getbbox`` convention) of the pixels with at least 25 % of the stroke's full alpha, before blur, in the UPRIGHT
(EXIF-applied) image, ``size`` [W, H] of the upright image, ``font`` (printed) or ``mnist_index``, ``orientation``
(exif), and ``height_share``, ``rotation_deg``, ``jpeg_quality`` for analysis.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
import zlib
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ("large", "medium", "small", "exif", "printed", "ruled", "dark")
DEFAULT_SEED = 20261201
HEIGHT = {"large": (0.45, 0.80), "medium": (0.25, 0.45), "small": (0.12, 0.25)}
HEIGHT.update(exif=HEIGHT["large"], printed=HEIGHT["medium"], ruled=HEIGHT["medium"], dark=HEIGHT["medium"])
ASPECTS = ((4, 3), (3, 4), (16, 9), (9, 16), (1, 1))
LONG_SIDE = (480, 800)
MAX_ROTATION = 30.0
MARGIN = 0.03
FONT_DIR = Path("/usr/share/fonts/opentype/urw-base35")
FONTS = (
    "NimbusSans-Regular", "NimbusSans-Bold", "NimbusSansNarrow-Regular", "NimbusSansNarrow-Bold",
    "NimbusRoman-Regular", "NimbusRoman-Bold", "NimbusMonoPS-Regular", "NimbusMonoPS-Bold",
    "URWGothic-Book", "URWGothic-Demi", "C059-Roman", "C059-Bold", "P052-Roman", "P052-Bold",
    "URWBookman-Light", "URWBookman-Demi",
)
# Pillow's exif_transpose applies METHOD[o]; the stored pixels are the upright image under its inverse.
EXIF_METHOD = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EXIF_INVERSE = {**EXIF_METHOD, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
# Quantile z of a uniform byte: a byte image through the table 128 + sigma * z is Gaussian noise.
_Z = np.array([NormalDist().inv_cdf((v + 0.5) / 256) for v in range(256)])


# ----------------------------------------------------------------------------------------------- sources
@lru_cache(maxsize=1)
def _mnist_test() -> tuple[np.ndarray, np.ndarray]:
    from model.data import load_mnist

    d = load_mnist()
    return d["test_images"], d["test_labels"]


@lru_cache(maxsize=512)
def _mnist_glyph(idx: int) -> tuple[Image.Image, tuple[int, int]]:
    """MNIST-test digit ``idx`` cropped to its ink with a 2 px pad (L, white on black), and its ink (w, h)."""
    img = _mnist_test()[0][idx]
    ys, xs = np.nonzero(img > 0)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.pad(img[y0:y1, x0:x1], 2)
    return Image.fromarray(crop, "L"), (int(x1 - x0), int(y1 - y0))


@lru_cache(maxsize=256)
def _font_glyph(font: str, digit: int) -> tuple[Image.Image, tuple[int, int]]:
    """``digit`` in ``font`` at 320 px, cropped to its ink with a 4 px pad (L, white on black), and its ink (w, h)."""
    f = ImageFont.truetype(str(FONT_DIR / f"{font}.otf"), 320)
    x0, y0, x1, y1 = f.getbbox(str(digit))
    img = Image.new("L", (x1 - x0 + 16, y1 - y0 + 16), 0)
    ImageDraw.Draw(img).text((8 - x0, 8 - y0), str(digit), fill=255, font=f)
    bx0, by0, bx1, by1 = img.getbbox()
    return img.crop((bx0 - 4, by0 - 4, bx1 + 4, by1 + 4)), (bx1 - bx0, by1 - by0)


# ----------------------------------------------------------------------------------------------- helpers
def _rng(condition: str, index: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(condition.encode()), int(index)])


def _ramp(t: float, soft: float, darkness: float) -> list[int]:
    """Alpha table: darkness * smoothstep((v/255 - t) / soft)."""
    x = np.clip((np.arange(256) / 255.0 - t) / soft, 0.0, 1.0)
    return np.round(255.0 * darkness * x * x * (3 - 2 * x)).astype(int).tolist()


def _ink_table(t: float, soft: float) -> list[int]:
    """255 where the ramp reaches 25 % of its full alpha: the pixels counted in ``ink_box``."""
    x = np.clip((np.arange(256) / 255.0 - t) / soft, 0.0, 1.0)
    return np.where(x * x * (3 - 2 * x) >= 0.25, 255, 0).tolist()


def _noise(rng: np.random.Generator, size: tuple[int, int], mode: str, sigma) -> Image.Image:
    """Gaussian noise image centred on 128 (``sigma`` per band), from uniform bytes through a quantile table."""
    bands = len(mode)
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (bands,))
    table = np.concatenate([np.clip(np.round(128 + s * _Z), 0, 255) for s in sig]).astype(int).tolist()
    raw = Image.frombytes(mode, size, rng.bytes(size[0] * size[1] * bands))
    return raw.point(table)


def _ink_colour(rng: np.random.Generator, printed: bool) -> tuple[int, int, int]:
    kind = rng.choice(4, p=[0.85, 0, 0.15, 0] if printed else [0.4, 0.25, 0.2, 0.15])
    if kind == 0:  # black
        v = rng.uniform(15, 40)
        rgb = (v, v, v + rng.uniform(0, 8))
    elif kind == 1:  # blue ballpoint
        rgb = (rng.uniform(10, 35), rng.uniform(30, 70), rng.uniform(100, 160))
    elif kind == 2:  # dark grey (pencil, worn marker)
        v = rng.uniform(55, 85)
        rgb = (v, v, v)
    else:  # brown
        rgb = (rng.uniform(65, 95), rng.uniform(40, 60), rng.uniform(20, 40))
    return tuple(int(c) for c in rgb)


def _light(rng: np.random.Generator, W: int, H: int, dark: bool) -> Image.Image:
    """Illumination (RGB, 0-255) on the frame: brightness, colour cast, gradient, vignette, shadow, mottling."""
    w, h = max(2, -(-W // 8)), max(2, -(-H // 8))
    S = min(W, H)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = ((xs + 0.5) * W / w - W / 2) / S  # in units of the shorter side, centred
    v = ((ys + 0.5) * H / h - H / 2) / S
    field = np.ones((h, w), np.float32)
    phi = rng.uniform(0, 2 * math.pi)
    t = u * math.cos(phi) + v * math.sin(phi)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    field *= 1 - rng.uniform(0, 0.35) * t
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    r2 = (u - cx) ** 2 + (v - cy) ** 2
    field *= 1 - rng.uniform(0, 0.35) * r2 / r2.max()
    if rng.random() < 0.35:  # soft shadow: a half plane through a point in the frame
        px, py = rng.uniform(-0.4, 0.4, 2) * np.array([W / S, H / S])
        psi = rng.uniform(0, 2 * math.pi)
        d = (u - px) * math.cos(psi) + (v - py) * math.sin(psi)
        field *= 1 - rng.uniform(0.15, 0.45) / (1 + np.exp(-d / rng.uniform(0.03, 0.15)))
    if not dark:
        m = rng.normal(0, 1, (h + 2, w + 2)).astype(np.float32)
        m = (m[:-2, 1:-1] + m[2:, 1:-1] + m[1:-1, :-2] + m[1:-1, 2:] + 2 * m[1:-1, 1:-1]) / 6
        field *= 1 + rng.uniform(0, 0.03) * m / max(float(m.std()), 1e-6)
    a = rng.uniform(-0.06, 0.12)
    cast = np.array([1 + a, 1, 1 - a]) * (1 + rng.uniform(-0.03, 0.03, 3))
    base = rng.uniform(170, 245) if dark else rng.uniform(150, 235)
    rgb = np.clip(field[..., None] * (base * cast)[None, None, :], 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB").resize((W, H), Image.Resampling.BILINEAR)


def _glyph_alpha(glyph: Image.Image, scale: float, angle: float, printed: bool, ramp: list[int],
                 ink: list[int]) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The glyph scaled by ``scale`` and rotated by ``angle`` (deg, counter-clockwise) as an alpha mask, with
    the box of its ink inside the mask."""
    if printed:
        g = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
                         Image.Resampling.LANCZOS)
        g = g.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    else:  # one bicubic affine map from the 28 px source: a smooth upscale and the rotation together
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        iw, ih = glyph.size
        ow = math.ceil(scale * (iw * abs(c) + ih * abs(s))) + 2
        oh = math.ceil(scale * (iw * abs(s) + ih * abs(c))) + 2
        a, b, d, e = c / scale, -s / scale, s / scale, c / scale
        coeffs = (a, b, iw / 2 - a * ow / 2 - b * oh / 2, d, e, ih / 2 - d * ow / 2 - e * oh / 2)
        g = glyph.transform((ow, oh), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC)
    box = g.point(ink).getbbox() or (0, 0, g.width, g.height)
    return g.point(ramp), box


def _overlaps(a, b, gap: float) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def _pen_marks(rng, refl: Image.Image, keep: tuple[int, int, int, int], ink_rgb, scale: float, ramp, ink,
               W: int, H: int) -> None:
    """2-5 pen marks outside ``keep`` (the digit's ink box) by at least 3 % of the shorter side."""
    S = min(W, H)
    gap = MARGIN * S
    draw = ImageDraw.Draw(refl)
    width = max(1, round(S * rng.uniform(0.004, 0.012)))
    neighbour_done = False
    for _ in range(int(rng.integers(2, 6))):
        kind = rng.choice(3, p=[0.45, 0.3, 0.25])
        if kind == 2 and not neighbour_done:
            neighbour_done = True
            idx = int(rng.integers(10000))
            glyph, _ = _mnist_glyph(idx)
            alpha, box = _glyph_alpha(glyph, scale * rng.uniform(0.8, 1.2), rng.uniform(-10, 10), False, ramp, ink)
            bw, bh = box[2] - box[0], box[3] - box[1]
            for edge in rng.permutation(4):
                vis = rng.uniform(0.25, 0.6)
                if edge < 2:  # left / right: vis of its width inside
                    x = -bw * (1 - vis) if edge == 0 else W - bw * vis
                    y = rng.uniform(0, max(1, H - bh))
                else:  # top / bottom
                    y = -bh * (1 - vis) if edge == 2 else H - bh * vis
                    x = rng.uniform(0, max(1, W - bw))
                placed = (x, y, x + bw, y + bh)
                if not _overlaps(placed, keep, gap):
                    gx, gy = round(x) - box[0], round(y) - box[1]
                    refl.paste(ink_rgb, (gx, gy, gx + alpha.width, gy + alpha.height), alpha)
                    break
            continue
        for _try in range(20):
            if kind == 0:  # a short stroke
                length = S * rng.uniform(0.03, 0.10)
                th = rng.uniform(0, math.pi)
                x0, y0 = rng.uniform(0, W), rng.uniform(0, H)
                pts = [(x0, y0), (x0 + length * math.cos(th), y0 + length * math.sin(th))]
            else:  # a scribble: a random walk in a small box
                side = S * rng.uniform(0.04, 0.12)
                x0, y0 = rng.uniform(0, W - side), rng.uniform(0, H - side)
                n = int(rng.integers(5, 13))
                pts = list(zip(x0 + side * rng.random(n), y0 + side * rng.random(n), strict=True))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            bb = (min(xs) - width, min(ys) - width, max(xs) + width, max(ys) + width)
            if not _overlaps(bb, keep, gap):
                draw.line(pts, fill=ink_rgb, width=width, joint="curve")
                break


def _ruled(rng, refl: Image.Image, W: int, H: int) -> None:
    S = min(W, H)
    draw = ImageDraw.Draw(refl)
    blue = rng.random() < 0.7
    colour = (int(rng.uniform(120, 170)), int(rng.uniform(160, 195)), int(rng.uniform(210, 240))) if blue else (
        (int(rng.uniform(150, 185)),) * 3)
    width = max(1, round(S * rng.uniform(0.0015, 0.004)))
    spacing = H * rng.uniform(0.03, 0.08)
    slope = math.tan(math.radians(rng.uniform(-1.5, 1.5)))
    y = rng.uniform(0, spacing) - abs(slope) * W
    while y < H + abs(slope) * W:
        draw.line([(0, y), (W, y + slope * W)], fill=colour, width=width)
        y += spacing
    if rng.random() < 0.5:
        x = W * rng.uniform(0.05, 0.20)
        red = (int(rng.uniform(200, 235)), int(rng.uniform(80, 130)), int(rng.uniform(90, 140)))
        tilt = rng.uniform(-1.5, 1.5) / 100 * H
        for k in range(1 + int(rng.random() < 0.3)):
            off = k * width * 3
            draw.line([(x + off, 0), (x + off + tilt, H)], fill=red, width=width)


def _board(rng, W: int, H: int) -> tuple[Image.Image, Image.Image]:
    """A dark board (RGB) and its chalk dust (L, the chalk's alpha): smooth haze, soft erased swipes, speckles."""
    kind = rng.choice(3)
    if kind == 0:  # green
        board = (rng.uniform(30, 50), rng.uniform(55, 85), rng.uniform(40, 60))
    elif kind == 1:  # grey
        g = rng.uniform(45, 75)
        board = (g, g, g + rng.uniform(-4, 6))
    else:  # near black
        g = rng.uniform(20, 32)
        board = (g, g, g)
    refl = Image.new("RGB", (W, H), tuple(int(c) for c in board))
    S = min(W, H)
    w, h = max(2, -(-W // 8)), max(2, -(-H // 8))
    haze = rng.normal(0, 1, (h // 2 + 2, w // 2 + 2))
    haze = np.kron(haze, np.ones((2, 2)))[:h, :w]
    haze = np.clip(rng.uniform(0.06, 0.25) * 255 * (0.5 + 0.35 * haze), 0, 255).astype(np.uint8)
    dust = Image.fromarray(haze, "L")
    d = ImageDraw.Draw(dust)
    for _ in range(int(rng.integers(2, 7))):  # erased swipes, soft after the upscale
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        th = rng.uniform(-0.4, 0.4) + (math.pi / 2 if rng.random() < 0.3 else 0)
        ln = rng.uniform(0.3, 1.0) * w
        d.line([(x0, y0), (x0 + ln * math.cos(th), y0 + ln * math.sin(th))],
               fill=int(rng.uniform(25, 70)), width=max(1, round(rng.uniform(0.04, 0.12) * S / 8)))
    dust = dust.filter(ImageFilter.BoxBlur(1)).resize((W, H), Image.Resampling.BILINEAR)
    n = int(rng.integers(300, 2001))
    pts = np.stack([rng.uniform(0, W, n), rng.uniform(0, H, n)], 1).tolist()
    ImageDraw.Draw(dust).point([tuple(p) for p in pts], fill=int(rng.uniform(60, 160)))
    return refl, dust


# ----------------------------------------------------------------------------------------------- render
def render(condition: str, index: int, seed: int = DEFAULT_SEED) -> tuple[bytes, dict]:
    """One photo: ``(jpeg_bytes, record)``, deterministic for ``(condition, index, seed)``."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
    rng = _rng(condition, index, seed)
    a, b = ASPECTS[int(rng.integers(len(ASPECTS)))]
    long_side = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    W, H = (long_side, round(long_side * b / a)) if a >= b else (round(long_side * a / b), long_side)
    S = min(W, H)
    printed, dark = condition == "printed", condition == "dark"
    record: dict = {"condition": condition}

    if printed:
        font = FONTS[int(rng.integers(len(FONTS)))]
        label = int(rng.integers(10))
        glyph, (iw, ih) = _font_glyph(font, label)
        record["font"] = font
        t, soft, darkness = rng.uniform(0.3, 0.5), rng.uniform(0.08, 0.2), rng.uniform(0.85, 1.0)
    else:
        idx = int(rng.integers(10000))
        label = int(_mnist_test()[1][idx])
        glyph, (iw, ih) = _mnist_glyph(idx)
        record["mnist_index"] = idx
        t = rng.uniform(0.15, 0.45) if dark else rng.uniform(0.25, 0.7)
        soft = rng.uniform(0.08, 0.25)
        darkness = rng.uniform(0.7, 1.0) if dark else rng.uniform(0.6, 1.0)
    ramp, ink = _ramp(t, soft, darkness), _ink_table(t, soft)

    lo, hi = HEIGHT[condition]
    share = rng.uniform(lo, hi)
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    mx, my = math.ceil(MARGIN * W), math.ceil(MARGIN * H)
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    scale = share * S / ih
    scale = min(scale, (W - 2 * mx - 4) / (iw * c + ih * s), (H - 2 * my - 4) / (iw * s + ih * c))
    alpha, box = _glyph_alpha(glyph, scale, angle, printed, ramp, ink)
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0 = int(rng.integers(mx, max(mx, W - mx - bw) + 1))
    y0 = int(rng.integers(my, max(my, H - my - bh) + 1))
    ink_box = (x0, y0, x0 + bw, y0 + bh)
    gx, gy = x0 - box[0], y0 - box[1]

    if dark:
        tint = rng.uniform(-8, 5, 3)
        ink_rgb = tuple(int(np.clip(rng.uniform(235, 250) + d, 0, 255)) for d in tint)
        refl, dust = _board(rng, W, H)
        gw, gh = alpha.width // 2 + 1, alpha.height // 2 + 1  # 2 px chalk grains, uniform coverage
        lo_cov = rng.uniform(0.35, 0.7)  # the coverage of the worst grains; a third of them are full
        table = [round(255 * (lo_cov + (1 - lo_cov) * min(1.0, 1.5 * v / 255))) for v in range(256)]
        grain = Image.frombytes("L", (gw, gh), rng.bytes(gw * gh)).point(table)
        grain = grain.resize((2 * gw, 2 * gh), Image.Resampling.NEAREST)
        alpha = ImageChops.multiply(alpha, grain.crop((0, 0, alpha.width, alpha.height)))
    else:
        paper = (255 - rng.uniform(0, 10), 255 - rng.uniform(0, 12), 255 - rng.uniform(0, 25))
        refl = Image.new("RGB", (W, H), tuple(int(v) for v in paper))
        ink_rgb = _ink_colour(rng, printed)
        if condition == "ruled":
            _ruled(rng, refl, W, H)
            _pen_marks(rng, refl, ink_box, ink_rgb, scale, ramp, ink, W, H)
    refl.paste(ink_rgb, (gx, gy, gx + alpha.width, gy + alpha.height), alpha)

    # Optics blur. Blur is linear and the light field is smooth, so blurring the reflectance where it is not
    # uniform (the digit's region; the whole frame for ruled paper) equals blurring the lit image, and is cheaper.
    radius = rng.uniform(0, 1.5)
    if radius >= 0.1:
        if condition == "ruled":
            refl = refl.filter(ImageFilter.GaussianBlur(radius))
        else:
            pad = math.ceil(3 * radius) + 2
            region = (max(0, gx - pad), max(0, gy - pad), min(W, gx + alpha.width + pad),
                      min(H, gy + alpha.height + pad))
            refl.paste(refl.crop(region).filter(ImageFilter.GaussianBlur(radius)), region[:2])
            if dark:
                dust = dust.filter(ImageFilter.GaussianBlur(radius))
    if dark:  # chalk dust over the board (and over the chalk digit, where it changes nearly nothing)
        refl.paste(ink_rgb, (0, 0), dust)
    img = ImageChops.multiply(refl, _light(rng, W, H, dark))
    lum = _noise(rng, (W, H), "L", rng.uniform(1.5, 7.0))
    chroma = _noise(rng, (-(-W // 2), -(-H // 2)), "RGB", rng.uniform(0, 3.0, 3)).resize((W, H), Image.BILINEAR)
    noise = ImageChops.add(Image.merge("RGB", (lum, lum, lum)), chroma, 1.0, -128)
    img = ImageChops.add(img, noise, 1.0, -128)

    quality = int(rng.integers(60, 96))
    buf = io.BytesIO()
    if condition == "exif":
        orientation = int(rng.integers(2, 9))
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.transpose(EXIF_INVERSE[orientation]).save(buf, "JPEG", quality=quality, exif=exif.tobytes())
        record["orientation"] = orientation
    else:
        img.save(buf, "JPEG", quality=quality)
    record.update(label=label, ink_box=[int(v) for v in ink_box], size=[W, H], height_share=round(ih * scale / S, 4),
                  rotation_deg=round(angle, 2), jpeg_quality=quality)
    return buf.getvalue(), record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-condition", type=int, required=True)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    args = p.parse_args()
    manifest = []
    t0 = time.perf_counter()
    for cond in args.conditions:
        (args.out / cond).mkdir(parents=True, exist_ok=True)
        for i in range(args.per_condition):
            data, rec = render(cond, i, args.seed)
            name = f"{cond}/{i:05d}.jpg"
            (args.out / name).write_bytes(data)
            manifest.append({"file": name, **rec})
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    dt = time.perf_counter() - t0
    print(f"{len(manifest)} photos in {dt:.1f} s ({1000 * dt / max(1, len(manifest)):.1f} ms each) -> {args.out}")


if __name__ == "__main__":
    main()
