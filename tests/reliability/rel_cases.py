"""Hostile inputs, built from real images: each a body, its content type, the status class the service must
answer and a fragment of the error message that tells the client what went wrong."""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def digit(size: int = 42, seed: int = 0) -> np.ndarray:
    """A white stroke figure on black with some noise: uint8 ``(size, size)``."""
    y, x = np.mgrid[0:size, 0:size] / size
    ring = np.abs(np.hypot(x - 0.5, y - 0.45) - 0.28) < 0.06
    bar = (np.abs(x - 0.62) < 0.05) & (y > 0.45)
    noise = np.random.default_rng(seed).integers(0, 30, (size, size))
    return np.clip(220 * (ring | bar) + noise, 0, 255).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    """A valid PNG header that declares ``width`` x ``height`` 8-bit grayscale pixels, with ``idat`` as data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + (png_chunk(b"IDAT", idat) if idat else b"")
    return PNG_MAGIC + body + png_chunk(b"IEND", b"")


def decompression_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A small PNG (a few kB) declaring ``width`` x ``height`` pixels whose data inflates to all of them
    (as far as a few kB of deflate reach: rows of zeros compress ~1000:1)."""
    row = b"\0" + b"\0" * width  # filter byte + pixels
    comp = zlib.compressobj(9)
    data = comp.compress(row * 8) + comp.flush()
    return png_declaring(width, height, data)


def tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian TIFF whose IFD declares ``width`` x ``height`` 8-bit gray, with one tiny strip."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, 4, 1, 8),  # StripOffsets
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd_offset = 8 + 16
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<I", value) if typ == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + b"\0" * 16 + ifd


def gif_declaring(width: int, height: int) -> bytes:
    screen = struct.pack("<HH", width, height) + b"\x00\x00\x00"
    frame = b"," + struct.pack("<HHHH", 0, 0, width, height) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def bmp_declaring(width: int, height: int) -> bytes:
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40, 0, 0, 14 + 40) + header


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[p % len(out)] ^= 1 << (p % 8)
    return bytes(out)


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str
    status: int  # what /v1/predict must answer
    fragment: str  # in the error message (lower case), or "" for a 200


def image_cases() -> list[Case]:
    """The named cases of the issue, each with the answer it must get from ``/v1/predict`` (limits of
    ``conftest.SMALL_LIMITS``: 300 kB bodies, 2 Mpx images)."""
    arr = digit(64)
    gray = Image.fromarray(arr)
    good_png = encode(gray, "PNG")
    good_jpeg = encode(gray, "JPEG", quality=90)
    frames = [Image.fromarray(np.roll(arr, 7 * i, axis=1)) for i in range(4)]
    rgb = Image.fromarray(np.stack([arr, arr // 2, 255 - arr], axis=-1))
    big = Image.new("L", (1500, 1500))  # 2.25 Mpx in a small file: over the 2 Mpx limit
    return [
        # Damaged files: 400, and the message says so.
        Case("truncated png", good_png[: len(good_png) // 2], "image/png", 400, "truncated"),
        Case("truncated jpeg", good_jpeg[: len(good_jpeg) // 3], "image/jpeg", 400, "truncated"),
        Case("png header only", good_png[:33], "image/png", 400, "image"),
        Case("bit-flipped png data", flip_bits(good_png, [8 * 60 + 3, 8 * 70 + 5]), "image/png", 400, "corrupt"),
        Case("bit-flipped png header crc", flip_bits(good_png, [8 * 29]), "image/png", 400, "corrupt"),
        Case("wrong magic", b"\x89PNX" + good_png[4:], "image/png", 400, "not a decodable image"),
        Case("jpeg magic, png body", b"\xff\xd8\xff\xe0" + good_png[8:], "image/jpeg", 400, "image"),
        Case("empty body", b"", "image/png", 400, "empty"),
        Case("text as png", b"hello, world", "image/png", 400, "not a decodable image"),
        Case("zero-sized png", png_declaring(0, 0), "image/png", 400, "image"),
        # Too big: 413, and the message gives the limit.
        Case("decompression bomb 50000x50000", decompression_bomb(), "image/png", 413, "over the limit"),
        Case("png declaring 50000x50000", png_declaring(50_000, 50_000), "image/png", 413, "over the limit"),
        Case("tiff declaring 60000x60000", tiff_declaring(60_000, 60_000), "image/tiff", 413, "over the limit"),
        Case("gif declaring 65535x65535", gif_declaring(65_535, 65_535), "image/gif", 413, "over the limit"),
        Case("bmp declaring 50000x50000", bmp_declaring(50_000, 50_000), "image/bmp", 413, "over the limit"),
        Case("2.25 Mpx png (limit 2 Mpx)", encode(big, "PNG"), "image/png", 413, "pixels"),
        Case("body over 300 kB", PNG_MAGIC + b"\0" * 300_001, "image/png", 413, "limit"),
        # Declared type that is not an image: 415.
        Case("text/plain", good_png, "text/plain", 415, "content type"),
        Case("application/json", b'{"image": "x"}', "application/json", 415, "content type"),
        Case("application/xml", b"<image/>", "application/xml", 415, "content type"),
        # curl's default type for --data-binary: the bytes decide.
        Case(
            "form-urlencoded, not an image", b"image=abc", "application/x-www-form-urlencoded", 400, "not a decodable"
        ),
        # Unusual but valid images: served (first frame; 16-bit scaled; CMYK converted).
        Case("animated gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), "image/gif", 200, ""),
        Case(
            "multi-page tiff", encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]), "image/tiff", 200, ""
        ),
        Case(
            "animated webp", encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]), "image/webp", 200, ""
        ),
        Case("animated png", encode(frames[0], "PNG", save_all=True, append_images=frames[1:]), "image/png", 200, ""),
        Case("16-bit png", encode(Image.fromarray(arr.astype(np.uint16) * 257), "PNG"), "image/png", 200, ""),
        Case("16-bit tiff", encode(Image.fromarray(arr.astype(np.uint16) * 257), "TIFF"), "image/tiff", 200, ""),
        Case("float tiff", encode(Image.fromarray(arr.astype(np.float32) / 255), "TIFF"), "image/tiff", 200, ""),
        Case("cmyk jpeg", encode(rgb.convert("CMYK"), "JPEG"), "image/jpeg", 200, ""),
        Case("cmyk tiff", encode(rgb.convert("CMYK"), "TIFF"), "image/tiff", 200, ""),
        Case("lab tiff", encode(rgb.convert("LAB"), "TIFF"), "image/tiff", 200, ""),
        Case("1-bit png", encode(Image.fromarray(arr > 128), "PNG"), "image/png", 200, ""),
        Case("1x1 png", encode(Image.new("L", (1, 1)), "PNG"), "image/png", 200, ""),
        Case("20000x1 png", encode(Image.new("L", (20_000, 1)), "PNG"), "image/png", 200, ""),
        Case("octet-stream png", good_png, "application/octet-stream", 200, ""),
    ]


def v2_request(shape: list[int], binary_size: int | None = None, data: list[float] | None = None) -> bytes:
    inp: dict[str, object] = {"name": "image", "shape": shape, "datatype": "FP32"}
    if binary_size is not None:
        inp["parameters"] = {"binary_data_size": binary_size}
    if data is not None:
        inp["data"] = data
    return json.dumps({"inputs": [inp]}).encode()
