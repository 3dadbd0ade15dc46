"""Where the photo model's errors come from, on its own validation photos (never the test sets): the crop it
chooses, or the classifier that reads the crop.

On the fixed validation photos of ``model.photo_train`` (the last 5,000 MNIST-train digits, training fonts;
the first ``--n`` of ``val_set``, a superset of the 1,600 the training run selected with), it measures the
error of the trained checkpoint (torch, eval mode) with

- ``model``: the crop the model chooses (what the service answers);
- ``true crop``: the classifier on the generator's true crop (the bound of a perfect localisation);
- ``refined``: the fine localisation applied a second time on a glimpse around its own first answer;
- ``jittered``: the class probabilities averaged over 5 crops of scale 0.85-1.15 (test-time augmentation).

    python -m bench.photo_analysis runs/photo_ft/best.ckpt          # writes bench/results/photo_analysis_<date>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench import _load
from model.card import wilson
from model.checkpoint import load_checkpoint
from model.data import load_mnist
from model.photo_net import PhotoSTN, standardise
from model.photo_train import corner_error, val_set

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCALES = (0.85, 0.93, 1.0, 1.07, 1.15)


def refine(m: PhotoSTN, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The fine stage again, its glimpse centred on ``theta``'s crop at twice its size (as the coarse stage
    places it)."""
    a2 = 2 * torch.linalg.det(theta[:, :, :2]).abs().sqrt()
    c = theta[:, :, 2]
    z = torch.zeros_like(a2)
    t1 = torch.stack([torch.stack([a2, z, c[:, 0]], 1), torch.stack([z, a2, c[:, 1]], 1)], 1)
    rel = m.fine(standardise(m.sample(x, t1, (m.glimpse, m.glimpse)), flip=True))
    return torch.cat([rel[:, :, :2] * a2[:, None, None], rel[:, :, 2:] * a2[:, None, None] + c[:, :, None]], 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--n", type=int, default=4000, help="validation photos")
    p.add_argument("--pen", default="legible", choices=["legible", "earlier"],
                   help="the validation photos' pen rule (model.photo.stroke; earlier: before 2026-12-07)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    model, _ = load_checkpoint(args.checkpoint)
    assert isinstance(model, PhotoSTN), "a photo model checkpoint (arch photo)"
    side = model.input_side
    x8, y, t = val_set(load_mnist(), args.n, side, args.pen == "legible")
    wrong = {"model": 0, "true crop": 0, "refined": 0, "jittered": 0}
    corner = {"model": 0.0, "refined": 0.0}
    with torch.no_grad():
        for i in range(0, len(y), 200):
            x, yy, tt = x8[i:i + 200].float() / 255.0, y[i:i + 200], t[i:i + 200]
            theta = model.locate(x)[3]
            logits, _ = model.classify(x, theta)
            wrong["model"] += int((logits.argmax(1) != yy).sum())
            wrong["true crop"] += int((model.classify(x, tt)[0].argmax(1) != yy).sum())
            theta2 = refine(model, x, theta)
            wrong["refined"] += int((model.classify(x, theta2)[0].argmax(1) != yy).sum())
            prob = sum(model.classify(x, theta * torch.tensor([s, s, 1.0]))[0].softmax(1) for s in SCALES)
            wrong["jittered"] += int((prob.argmax(1) != yy).sum())  # type: ignore[union-attr]
            corner["model"] += float(corner_error(theta, tt).sum())
            corner["refined"] += float(corner_error(theta2, tt).sum())
    n = len(y)
    lines = ["# The photo model's errors: crop or classifier", "", f"Command: `{_load.command_line()}`", "",
             f"Checkpoint `{args.checkpoint}`; {n:,} validation photos (MNIST-train 55,000-59,999, training "
             f"fonts, the {args.pen} pen; `model.photo_train.val_set`). Error % (95 % Wilson interval); corner "
             "error: the crop's "
             "corners from the true crop's, in its half-sides.", "",
             "| crop | error | corner error |", "| --- | --- | --- |"]
    for k, w in wrong.items():
        lo, hi = wilson(w, n)
        c = f"{corner[k] / n:.3f}" if k in corner else "-"
        lines.append(f"| {k} | {100 * w / n:.2f} ({100 * lo:.2f}–{100 * hi:.2f}) | {c} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.no_write:
        result = {"checkpoint": str(args.checkpoint), "n": n, "pen": args.pen, "wrong": wrong, "corner_error": corner,
                  "command": _load.command_line()}
        print(f"wrote {_load.write_results(RESULTS, 'photo_analysis', md, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
