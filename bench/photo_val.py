"""A photo model's error on the photo trainer's validation photos, from its ONNX file (never the test sets).

Model selection compares runs on ``model.photo_train.val_set`` (the last 5,000 MNIST-train digits, training
fonts, its own seed). A run selected on one pen rule (``model.photo.stroke``) cannot be compared with a run
selected on the other by their logged figures; this reads both from the exported files on the same photos.

    python -m bench.photo_val service/model_repository/stn_photo/1/model.onnx --pen legible
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model.card import wilson
from model.data import load_mnist
from model.photo_train import val_set


def val_error(path: Path, pen: str, n: int = 1600, batch: int = 100) -> tuple[int, int]:
    """(wrong, n) of the ONNX photo model at ``path`` on the first ``n`` validation photos of ``pen``."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x8, y, _ = val_set(load_mnist(None), n, 256, pen == "legible")
    wrong = 0
    for i in range(0, len(y), batch):
        logits = sess.run(["logits"], {name: x8[i:i + batch].numpy().astype(np.float32) / 255.0})[0]
        wrong += int((logits.argmax(1) != y[i:i + batch].numpy()).sum())
    return wrong, len(y)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx", type=Path, nargs="+")
    p.add_argument("--pen", default="legible", choices=["legible", "earlier"])
    p.add_argument("--n", type=int, default=1600, help="validation photos (the trainer selects on 1,600)")
    args = p.parse_args(argv)
    for path in args.onnx:
        wrong, n = val_error(path, args.pen, args.n)
        lo, hi = wilson(wrong, n)
        print(f"{path}: {wrong} of {n} {args.pen}-pen validation photos wrong, "  # noqa: T201 (CLI)
              f"{100 * wrong / n:.2f} % ({100 * lo:.2f}-{100 * hi:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
