"""Real payloads for the service benchmark: distorted MNIST test digits written as PNG files.

Run as its own process by ``bench_service.py`` so that torch (which ``model.distort`` needs) is never
imported into the benchmark process that times onnxruntime:

    python -m bench._digits --distortion rts --n 64 --out DIR     # DIR/digit_000.png ..., DIR/labels.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def write_digits(distortion: str, n: int, out: Path) -> list[Path]:
    """The first ``n`` digits of the fixed distorted test set, uint8 grayscale PNG, white on black."""
    from model.data import load_mnist
    from model.distort import test_set

    x, y = test_set(distortion, load_mnist())  # float (N, 1, S, S), pixel units in [0, 1]
    pix = np.clip(x[:n, 0].numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)  # (n, S, S)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(pix):
        path = out / f"digit_{i:03d}.png"
        Image.fromarray(img, "L").save(path, format="PNG")
        paths.append(path)
    (out / "labels.json").write_text(json.dumps([int(v) for v in y[:n]]))
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--distortion", default="rts", help="model.distort name: rts, tc, ...")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    write_digits(args.distortion, args.n, args.out)


if __name__ == "__main__":
    main()
