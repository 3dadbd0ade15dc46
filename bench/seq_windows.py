"""Where a sequence model's windows sit against the digits' 28x28 frames, on the fixed MNIST-sequence test set.

    python -m bench.seq_windows runs/seq3_box/best.ckpt runs/seq3_box03/best.ckpt

For each checkpoint (``model.seq_net`` with one transformer per digit): the window's centre error in pixels
(x and y, median and 95th percentile), the window's side in pixels (median; the frames are 28 px), and the
centre error on the digits the model misread. Writes ``bench/results/seq_windows_<stamp>.md`` unless
``--no-write``. Nothing here trains or selects a model.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from bench.photo_eval import machine
from model import data as mnist
from model import sequence
from model.checkpoint import load_checkpoint
from model.seq_train import predict, window_targets, windows


def measure(ckpt: Path, test: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, float]:
    xs, ys, boxes = test
    model, _ = load_checkpoint(ckpt)
    _, pred, theta = predict(model, xs, 250)
    target = window_targets(torch.from_numpy(boxes).float(), xs.shape[-1]).numpy()
    window = windows(torch.from_numpy(theta)).numpy()
    px = np.abs(window - target) * xs.shape[-1] / 2  # normalised units -> pixels
    wrong = pred[:, : ys.shape[1]] != ys
    dist = np.hypot(px[..., 2], px[..., 3])
    return {"digit_error": float(wrong.mean()), "x_median": float(np.median(px[..., 2])),
            "y_median": float(np.median(px[..., 3])), "x_p95": float(np.percentile(px[..., 2], 95)),
            "y_p95": float(np.percentile(px[..., 3], 95)),
            "side_median": float(np.median(window[..., 0]) * xs.shape[-1]),
            "dist_right": float(np.median(dist[~wrong])), "dist_wrong": float(np.median(dist[wrong]))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.seq_windows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    test = sequence.test_set(mnist.load_mnist(None))
    lines = ["| checkpoint | per-digit error | centre error x / y, median (px) | 95th percentile x / y (px) | "
             "window side, median (px) | centre distance, read right / misread, median (px) |",
             "| --- | ---: | --- | --- | ---: | --- |"]
    for ckpt in a.checkpoints:
        m = measure(ckpt, test)
        lines.append(f"| `{ckpt}` | {100 * m['digit_error']:.2f} % | {m['x_median']:.1f} / {m['y_median']:.1f} | "
                     f"{m['x_p95']:.1f} / {m['y_p95']:.1f} | {m['side_median']:.1f} | "
                     f"{m['dist_right']:.1f} / {m['dist_wrong']:.1f} |")
    stamp, m = datetime.now(timezone.utc), machine()
    text = "\n".join([
        f"# Sequence windows against the digits' frames ({stamp:%Y-%m-%d})", "",
        f"Command: `python -m bench.seq_windows {' '.join(str(c) for c in a.checkpoints)}`", "",
        f"Machine: {m['cpu'] or 'a CPU'}, {m['cpu_count']} cores, Python {m['python']}, torch {torch.__version__}. "
        f"Fixed test set: {len(test[1]):,} canvases (MNIST-test, seed {sequence.TEST_SEED}); "
        "the frames are 28 px, so a window that shows exactly the frame has side 28 px and centre error 0.", "",
        *lines, ""])
    print(text)  # noqa: T201 (CLI)
    if not a.no_write:
        out = Path("bench/results") / f"seq_windows_{stamp:%Y%m%d-%H%M}.md"
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)  # noqa: T201 (CLI)


if __name__ == "__main__":
    main()
