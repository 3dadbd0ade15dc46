"""Upload bytes -> the model's input tensor, following the model's metadata only.

Steps: decode (Pillow, first frame) -> EXIF orientation -> grayscale (alpha composited over white) ->
resize to the model input -> polarity (``invert=auto|true|false``) -> normalise ``(pixel / 255 - mean) / std``.

The resize follows the model's ``stn.resize``: ``stretch`` (the default, for the MNIST-canvas models) fills
the input whatever the upload's aspect ratio; ``letterbox`` (the photo model) keeps the aspect ratio: the
upload is fitted into the square input, centred, and the rest filled with the median of the upload's
outer band (1/20 of its shorter side), so a photo is never squashed. ``Prepared.to_upload`` then says how
the input's normalised coordinates map to the upload's, for the region and the rectified crop.

HEIC/HEIF (iPhone photos) decode through the ``pillow-heif`` plugin when it is installed; without it such an
upload gets a 415 that names the format.

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

FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")  # JPEG covers MPO files too
try:  # HEIC/HEIF: the maintained Pillow plugin, a dependency of the service (optional for Pillow itself)
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_AVAILABLE = True
    FORMATS = (*FORMATS, "HEIF")
except ImportError:  # pragma: no cover - exercised by monkeypatching HEIF_AVAILABLE in the tests
    HEIF_AVAILABLE = False
# ISO base media file brands of HEIF images (ISO/IEC 23008-12): the bytes 8..12 of the 'ftyp' box.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif"})
CONTENT_TYPES = frozenset(
    {
        "image/heic",
        "image/heif",
        "image/heic-sequence",
        "image/heif-sequence",
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
            f"unsupported content type {ct!r}: send image/png, image/jpeg, image/webp, image/bmp, image/gif, "
            "image/tiff or image/heic as the body, or multipart/form-data with a file field 'image'"
        )


@dataclass
class Decoded:
    """A decoded upload: ``image`` oriented upright; ``size`` the upload's full (W, H) after orientation.

    ``image`` may be smaller, decoded in JPEG draft mode at 1/s of the upload's size; its pixels then span
    ``ceil(W / s)`` x ``ceil(H / s)``, so its last column and row reach past the upload's edge by a fraction
    of a pixel. ``extent`` (x0, y0, x1, y1) is the upload's own extent in ``image`` pixels (e.g. (0, 0,
    250.25, 249.75) for a 1001 x 999 JPEG at 1/4); None: the whole image. Whatever resamples ``image`` in
    the upload's coordinates reads that box (``extent_of``)."""

    image: Image.Image
    size: tuple[int, int]
    format: str
    extent: tuple[float, float, float, float] | None = None


def extent_of(decoded: Decoded) -> tuple[float, float, float, float]:
    """The upload's extent (x0, y0, x1, y1) in ``decoded.image``'s pixels."""
    return decoded.extent or (0.0, 0.0, float(decoded.image.width), float(decoded.image.height))


def _oriented_box(box: tuple[float, float, float, float], size: tuple[int, int],
                  orientation: int) -> tuple[float, float, float, float]:
    """``box`` (x0, y0, x1, y1) in an image of ``size`` (W, H) as stored, in the image turned upright by
    EXIF ``orientation`` (what ``ImageOps.exif_transpose`` does to its pixels)."""
    x0, y0, x1, y1 = box
    w, h = size
    return {
        2: (w - x1, y0, w - x0, y1),  # mirrored left-right
        3: (w - x1, h - y1, w - x0, h - y0),  # turned 180
        4: (x0, h - y1, x1, h - y0),  # mirrored top-bottom
        5: (y0, x0, y1, x1),  # transposed
        6: (h - y1, x0, h - y0, x1),  # turned 90 clockwise
        7: (h - y1, w - x1, h - y0, w - x0),  # transversed
        8: (y0, w - x1, y1, w - x0),  # turned 90 anticlockwise
    }.get(orientation, box)


def decode(data: bytes, max_pixels: int, draft: tuple[int, int] | None = None) -> Decoded:
    """Decode and orient an upload; ``draft`` (W, H) lets JPEG decode at a reduced scale at least that big.

    Raises InvalidInput (empty, not an image, truncated) or PayloadTooLarge (over ``max_pixels``).
    """
    if not data:
        raise InvalidInput("empty body: send an image")
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS and not HEIF_AVAILABLE:
        brand = data[8:12].decode("ascii")
        raise UnsupportedMediaType(
            f"this is a HEIC/HEIF image (brand {brand!r}), and this server cannot decode HEIF: install the "
            "pillow-heif package, or send the photo as JPEG or PNG"
        )
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
        w, h = img.size
        if w * h > max_pixels:
            raise PayloadTooLarge(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        if orientation in _SWAPPING_ORIENTATIONS:
            w, h = h, w
        extent = None
        if draft is not None and img.format in ("JPEG", "MPO"):
            drafted = img.draft("L", draft)  # (mode, the upload's extent in the decoded pixels)
            if drafted is not None and drafted[1] != (0, 0, *img.size):
                bx0, by0, bx1, by1 = (float(v) for v in drafted[1])
                extent = _oriented_box((bx0, by0, bx1, by1), img.size, orientation)
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
        raise InvalidInput("body is not a decodable image (PNG, JPEG, WebP, BMP, GIF, TIFF or HEIC)") from exc
    except ServiceError:
        raise
    except Exception as exc:  # Pillow's plugins raise many types on corrupt data; all of them are bad input
        raise InvalidInput(f"image could not be decoded (truncated or corrupt): {exc}") from exc
    if w < 1 or h < 1:
        raise InvalidInput(f"image has no pixels ({w}x{h})")
    return Decoded(img, (w, h), str(img.format or ""), extent)


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


def resize_to(img: Image.Image, size_hw: tuple[int, int],
              box: tuple[float, float, float, float] | None = None) -> Image.Image:
    """``img`` (its part ``box``, x0, y0, x1, y1 in its pixels, where given: ``Decoded.extent``) resized to
    ``size_hw`` (H, W)."""
    h, w = size_hw
    if box is None and img.size == (w, h):
        return img
    return img.resize((w, h), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)


def border_band(h: int, w: int) -> int:
    """Width in pixels of an image's outer band, where the paper shows: 1/20 of the shorter side, at least 1.
    Polarity ``auto`` compares its mean with the whole image's; the letterbox fills with its median."""
    return max(1, round(min(h, w) / 20))


def decide_invert(arr: np.ndarray, polarity: str, invert: Invert) -> bool:
    """Whether to invert the upload (uint8 ``(H, W)``, model input size) for a model of ``polarity``."""
    if invert == "true":
        return True
    if invert == "false":
        return False
    if polarity == "any":  # the model reads either polarity itself
        return False
    h, w = arr.shape
    b = border_band(h, w)
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
    # (sx, bx, sy, by): input-normalised (x, y) -> upload-normalised (sx x + bx, sy y + by); None: identity.
    to_upload: tuple[float, float, float, float] | None = None
    # A letterboxed upload's fill: the median of its decoded image's outer band (``border_median``).
    fill: int | None = None


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


def border_median(arr: np.ndarray) -> int:
    """Median of the outer band (``border_band``) of a uint8 ``(H, W)`` image, as ``int(np.median(band))``
    (an even count: the two middle values' mean, rounded down), counted from the band's histogram rather than
    sorted (0.15 ms against 0.40 for an 800x600 decode)."""
    h, w = arr.shape
    b = border_band(h, w)
    counts = sum(np.bincount(part.ravel(), minlength=256)
                 for part in (arr[:b], arr[h - b :], arr[b : h - b, :b], arr[b : h - b, w - b :]))
    cum = np.cumsum(counts)
    n = int(cum[-1])
    upper = int(np.searchsorted(cum, n // 2 + 1))  # the value at sorted index n // 2
    if n % 2:
        return upper
    return (int(np.searchsorted(cum, n // 2)) + upper) // 2


def letterbox(gray: Image.Image, side: int, fill: int, extent: tuple[float, float, float, float] | None = None,
              ) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """``gray`` (its part ``extent``, x0, y0, x1, y1 in its pixels, where given: ``Decoded.extent``) fitted
    into a ``side`` square with its aspect ratio kept, centred, the rest filled with ``fill`` (its border
    median); returns the square and ``(nw, nh, ox, oy)``, the fitted size and offset in input pixels."""
    if extent is None:
        w, h = float(gray.width), float(gray.height)
    else:
        w, h = extent[2] - extent[0], extent[3] - extent[1]
    scale = side / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = resize_to(gray, (nh, nw), extent)
    ox, oy = (side - nw) // 2, (side - nh) // 2
    out = Image.new("L", (side, side), fill)
    out.paste(small, (ox, oy))
    return out, (nw, nh, ox, oy)


def prepare(decoded: Decoded, spec: ModelSpec, invert: Invert = "auto") -> Prepared:
    gray = to_gray(decoded.image)
    to_upload = fill = None
    if spec.resize == "letterbox":
        side = spec.input_size[0]
        fill = border_median(np.asarray(gray))
        small, (nw, nh, ox, oy) = letterbox(gray, side, fill, decoded.extent)
        # Input px = fitted content px + offset, and the content spans the upload's whole extent.
        to_upload = (side / nw, (side - 2 * ox) / nw - 1.0, side / nh, (side - 2 * oy) / nh - 1.0)
    else:
        small = resize_to(gray, spec.input_size, decoded.extent)
    arr = np.asarray(small, dtype=np.uint8)
    inverted = decide_invert(arr, spec.polarity, invert)
    return Prepared(normalise(arr, spec, inverted), inverted, decoded.size, to_upload, fill)


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
