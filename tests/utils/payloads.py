"""Request payloads for the tests and benchmarks: images, encodings, multipart parts."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png(arr: np.ndarray | Image.Image) -> bytes:
    img = Image.fromarray(arr) if isinstance(arr, np.ndarray) else arr
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def pattern(size: int = 42) -> np.ndarray:
    """A deterministic, smooth-ish uint8 pattern (white blob and bars on black), ``(size, size)``."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = 200 * np.exp(-((x - 0.4) ** 2 + (y - 0.55) ** 2) / 0.02) + 120 * (np.sin(12 * x) > 0.6) * (y < 0.3)
    return np.clip(img, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * np.log10(255.0**2 / max(mse, 1e-12))


def decode_png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img)


def multipart_files(
    items: list[tuple[str, bytes]], field: str = "image"
) -> list[tuple[str, tuple[str, bytes, str]]]:
    """httpx ``files=`` for several parts under one field name."""
    return [(field, (name, data, "application/octet-stream")) for name, data in items]
