"""Phone-photo payloads for the service benchmark: JPEG photos of one digit at phone-camera sizes.

Each photo is one ``bench/photo_render.py`` frame (480-800 px; only 4:3 landscape frames are kept, so nothing
is squashed), upscaled with Pillow (bicubic) to the wanted size, given fresh sensor noise at that size
(luminance Gaussian, sigma 4 levels: an upscaled frame alone is too smooth and compresses far better than
a camera's) and encoded as JPEG at quality 90 (4:2:0): 1600x1200 comes to a few hundred KB, 4000x3000 to a
few MB, as from a phone. Run as its own process by ``bench_service.py``, like ``_digits.py``:

    python -m bench._photos --sizes 1600x1200,4000x3000 --n 8 --out DIR   # DIR/<W>x<H>/photo_0.jpg ...,
                                                                        # DIR/manifest.json
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ("large", "medium", "printed", "ruled", "dark", "small")  # exif left out: no tag is carried over
NOISE_SIGMA = 4.0
QUALITY = 90


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        if part.strip():
            w, _, h = part.strip().lower().partition("x")
            sizes.append((int(w), int(h)))
    return sizes


def base_frames(n: int, seed: int) -> list[tuple[Image.Image, dict]]:
    """``n`` rendered 4:3 landscape frames (RGB) and their records, conditions cycled."""
    from bench.photo_render import render

    frames: list[tuple[Image.Image, dict]] = []
    index = 0
    while len(frames) < n:
        condition = CONDITIONS[len(frames) % len(CONDITIONS)]
        data, record = render(condition, index, seed)
        index += 1
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w > h and abs(w / h - 4 / 3) < 0.01:
            frames.append((img.convert("RGB"), record))
    return frames


def phone_photo(frame: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> bytes:
    big = np.asarray(frame.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.normal(0.0, NOISE_SIGMA, size=(size[1], size[0], 1)).astype(np.int16)
    pix = np.clip(big + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pix, "RGB").save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def write_photos(sizes: list[tuple[int, int]], n: int, out: Path, seed: int = 20261201) -> dict:
    frames = base_frames(n, seed)
    rng = np.random.default_rng(seed)
    manifest: dict = {
        "sizes": {},
        "labels": [int(r["label"]) for _, r in frames],
        "conditions": [r["condition"] for _, r in frames],
    }
    for w, h in sizes:
        folder = out / f"{w}x{h}"
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i, (frame, _) in enumerate(frames):
            path = folder / f"photo_{i}.jpg"
            path.write_bytes(phone_photo(frame, (w, h), rng))
            files.append(str(path))
        manifest["sizes"][f"{w}x{h}"] = files
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1600x1200,4000x3000", help="comma-separated WxH")
    p.add_argument("--n", type=int, default=8, help="photos per size (the same digits at every size)")
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    write_photos(parse_sizes(args.sizes), args.n, args.out, args.seed)


if __name__ == "__main__":
    main()
