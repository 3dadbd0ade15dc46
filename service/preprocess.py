"""Upload bytes -> the model's input tensor, following the model's metadata only.

Steps: decode (Pillow, first frame) -> EXIF orientation -> grayscale (alpha composited over white) ->
resize (stretched) to the model input -> polarity (``invert=auto|true|false``) -> normalise
``(pixel / 255 - mean) / std``.

Resizing uses Pillow's BILINEAR filter, which Pillow widens when shrinking (an antialiased triangle filter,
so a large photo is area-averaged rather than point-sampled), with ``reducing_gap=3`` so that very large
images are first box-reduced by an integer factor (fast, and equivalent in quality at that gap).

Polarity ``auto``: a white-on-black model gets an upload inverted when the mean of its border band is
brighter than the mean of the whole image (a dark digit on light paper); a black-on-white model the other
way round. The decision is taken on the resized image, so it is the same for every route.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType
from service.repository import ModelSpec

Invert = Literal["auto", "true", "false"]

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")  # JPEG covers MPO (multi-picture) files too
CONTENT_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/webp",
        "image/bmp",
        "image/x-bmp",
        "image/x-ms-bmp",
        "image/gif",
        "image/tiff",
        "image/tif",
    }
)
# Types that say nothing about the bytes: the bytes decide. curl's --data-binary sends
# application/x-www-form-urlencoded unless told otherwise, so a bare `curl --data-binary @photo.jpg` works.
NEUTRAL_TYPES = frozenset({"", "application/octet-stream", "application/x-www-form-urlencoded"})
EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
# Modes that ``to_gray`` and the overlay's RGB conversion handle; a decoder can produce others (a LAB TIFF).
PLAIN_MODES = frozenset(
    {"1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "HSV", "I", "F"}
    | {"I;16", "I;16L", "I;16B", "I;16N"}
)


def check_content_type(content_type: str | None) -> None:
    """415 for a declared type that is not one of the supported image types."""
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    if ct not in CONTENT_TYPES and ct not in NEUTRAL_TYPES:
        raise UnsupportedMediaType(
            f"unsupported content type {ct!r}: send image/png, image/jpeg, image/webp, image/bmp, image/gif "
            "or image/tiff as the body, or multipart/form-data with a file field 'image'"
        )


@dataclass
class Decoded:
    """A decoded upload: ``image`` oriented upright; ``size`` the upload's full (W, H) after orientation
    (``image`` may be smaller when decoded in JPEG draft mode, with the same extent)."""

    image: Image.Image
    size: tuple[int, int]
    format: str


def decode(data: bytes, max_pixels: int, draft: tuple[int, int] | None = None) -> Decoded:
    """Decode and orient an upload; ``draft`` (W, H) lets JPEG decode at a reduced scale at least that big.

    Raises InvalidInput (empty, not an image, truncated) or PayloadTooLarge (over ``max_pixels``).
    """
    if not data:
        raise InvalidInput("empty body: send an image")
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
        w, h = img.size
        if w * h > max_pixels:
            raise PayloadTooLarge(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        if orientation in _SWAPPING_ORIENTATIONS:
            w, h = h, w
        if draft is not None and img.format in ("JPEG", "MPO"):
            img.draft("L", draft)
        img.load()
        if orientation != 1:
            img = ImageOps.exif_transpose(img) or img
        img = _plain_mode(img)
    except Image.DecompressionBombError as exc:
        # Pillow's own guard, on the size the header declares, before any pixel is decoded.
        m = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f"{m.group(1)} pixels" if m else "more pixels than Pillow allows"
        raise PayloadTooLarge(
            f"image declares {declared}, over the limit of {max_pixels} (a decompression bomb?)"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidInput("body is not a decodable image (PNG, JPEG, WebP, BMP, GIF or TIFF)") from exc
    except ServiceError:
        raise
    except Exception as exc:  # Pillow's plugins raise many types on corrupt data; all of them are bad input
        raise InvalidInput(f"image could not be decoded (truncated or corrupt): {exc}") from exc
    if w < 1 or h < 1:
        raise InvalidInput(f"image has no pixels ({w}x{h})")
    return Decoded(img, (w, h), str(img.format or ""))


def _plain_mode(img: Image.Image) -> Image.Image:
    """``img`` in one of ``PLAIN_MODES``: LAB keeps its lightness band, anything else goes through RGB(A)."""
    if img.mode in PLAIN_MODES:
        return img
    if img.mode == "LAB":
        return img.getchannel("L")
    try:
        return img.convert("RGBA" if "A" in img.mode else "RGB")
    except ValueError as exc:
        raise InvalidInput(f"image mode {img.mode!r} is not supported; send a grayscale or RGB image") from exc


def to_gray(img: Image.Image) -> Image.Image:
    """Mode ``L``: luma for colour, alpha composited over white, 16-bit and float scaled to 0..255."""
    mode = img.mode
    if mode == "L":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        out = Image.new("L", img.size, 255)
        out.paste(img.convert("L"), mask=img.getchannel("A"))
        return out
    if mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float32) / 257.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L")
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L")
    return img.convert("L")


def resize_to(img: Image.Image, size_hw: tuple[int, int]) -> Image.Image:
    h, w = size_hw
    if img.size == (w, h):
        return img
    return img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0)


def decide_invert(arr: np.ndarray, polarity: str, invert: Invert) -> bool:
    """Whether to invert the upload (uint8 ``(H, W)``, model input size) for a model of ``polarity``."""
    if invert == "true":
        return True
    if invert == "false":
        return False
    h, w = arr.shape
    b = max(1, round(min(h, w) / 20))
    whole_sum = int(arr.sum(dtype=np.int64))  # integer sums: exact, and two reductions rather than three
    border_sum = whole_sum - int(arr[b : h - b, b : w - b].sum(dtype=np.int64))
    border_n = h * w - max(0, h - 2 * b) * max(0, w - 2 * b)
    border_mean = border_sum / max(1, border_n)
    whole_mean = whole_sum / (h * w)
    if polarity == "black_on_white":
        return border_mean < whole_mean
    return border_mean > whole_mean


@dataclass
class Prepared:
    """One upload ready for the model: ``x`` float32 ``(1, H, W)``, normalised, model polarity."""

    x: np.ndarray
    inverted: bool
    size: tuple[int, int]  # the upload's (W, H)


def normalise(arr: np.ndarray, spec: ModelSpec, inverted: bool) -> np.ndarray:
    """uint8 ``(H, W)`` -> float32 ``(1, H, W)``: one fused multiply-add, inversion folded in."""
    a = 1.0 / (255.0 * spec.std)
    b = -spec.mean / spec.std
    if inverted:  # (255 - p) * a + b
        a, b = -a, 255.0 * a + b
    x = arr.astype(np.float32)
    x *= np.float32(a)
    x += np.float32(b)
    return x[None]


def prepare(decoded: Decoded, spec: ModelSpec, invert: Invert = "auto") -> Prepared:
    small = resize_to(to_gray(decoded.image), spec.input_size)
    arr = np.asarray(small, dtype=np.uint8)
    inverted = decide_invert(arr, spec.polarity, invert)
    return Prepared(normalise(arr, spec, inverted), inverted, decoded.size)


def rectified_to_pixels(r: np.ndarray, spec: ModelSpec, inverted: bool) -> np.ndarray:
    """Model ``rectified`` ``(h, w)`` (normalised, model polarity) -> uint8 in the upload's polarity."""
    p = (r * spec.std + spec.mean) * 255.0
    if inverted:
        p = 255.0 - p
    return np.clip(p + 0.5, 0, 255).astype(np.uint8)


def png_bytes(arr_or_img: np.ndarray | Image.Image) -> bytes:
    img = Image.fromarray(arr_or_img) if isinstance(arr_or_img, np.ndarray) else arr_or_img
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
