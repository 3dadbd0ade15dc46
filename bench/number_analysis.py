"""Where the number model's errors come from, on its own validation photos (never the test set): the length
it reads, the crops its digit transformers choose, or the reader that reads them.

On the fixed validation photos of ``model.number_train`` (the last 5,000 MNIST-train digits, training fonts,
its seed; the first ``--n`` of ``val_set``, a superset of the 1,000 the training run selected with), it
measures the checkpoint (torch, eval mode):

- ``numbers wrong``: what the service answers (length and digits);
- ``length wrong``: the length read (the length head with the digits' probabilities, ``best_lengths``);
- ``digits misread, own crops``: the reader on the crops the transformers chose, at the positions the
  number has (whatever length was read);
- ``digits misread, true crops``: the reader on the generator's crops (the bound of a perfect localisation);
- ``strip misses a digit``: numbers with a digit whose true crop's centre lies outside the line
  transformer's strip (whatever the digit transformers then do, that digit is read off the strip's edge),
  and ``length wrong, strip holds all``: the length read wrong although the strip holds every digit;
- the corner error of the chosen crops (their corners from the true crops', in the true crops' half-sides);
- with a refining stage (``refine``), the digits misread on the first stage's crops and their corner error;
- the digits by how far their chosen crop missed (corner error bins), misread on it and on their true crop:
  where reading one's own crops costs more than reading the true ones;
- the numbers wrong by what the generator drew: handwritten or printed, and each surface.

    python -m bench.number_analysis runs/number_c/best.ckpt     # writes bench/results/number_analysis_<date>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import _load
from model.card import wilson
from model.checkpoint import load_checkpoint
from model.data import load_mnist
from model.multi import NO_DIGIT, best_lengths
from model.number_net import NumberSTN
from model.number_train import val_set
from model.photo_train import corner_error

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CORNER_BINS = (0.0, 0.1, 0.2, 0.35, 0.6, 1.0, np.inf)


def _row(label: str, wrong: int, of: int) -> str:
    """A table row: the count, and the error % with its 95 % Wilson interval."""
    lo, hi = wilson(wrong, of)
    return f"| {label} | {of:,} | {100 * wrong / of:.2f} ({100 * lo:.2f}–{100 * hi:.2f}) |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--n", type=int, default=2000, help="validation photos")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.checkpoint)
    assert isinstance(model, NumberSTN), "a number model checkpoint (arch number)"
    model.eval()
    params: list[dict[str, Any]] = []
    x8, digits, thetas = val_set(load_mnist(), args.n, model.side, params)
    kinds = np.array(["printed" if q["printed"] else "handwritten" for q in params])
    surfaces = np.array([str(q["surface"]) for q in params])
    wrong_numbers = np.zeros(len(digits), bool)
    counts = {"numbers wrong": 0, "length wrong": 0, "strip misses a digit": 0, "length wrong, strip holds all": 0,
              "digits misread, own crops": 0, "digits misread, true crops": 0}  # the last two: from the crops
    refine = model.refine_loc is not None
    if refine:  # the first digit transformers' crops, before the second refined them
        counts["digits misread, first-stage crops"] = 0
    coarse_corner = 0.0
    crop_corner: list[np.ndarray] = []  # per true digit: its chosen crop's corner error, and misread on it
    crop_own: list[np.ndarray] = []
    crop_true: list[np.ndarray] = []
    with torch.no_grad():
        for i in range(0, len(digits), 100):
            x = torch.from_numpy(x8[i:i + 100]).float()[:, None] / 255.0
            d, t = torch.from_numpy(digits[i:i + 100]), torch.from_numpy(thetas[i:i + 100])
            valid = d != NO_DIGIT
            length_logits, digit_logits, theta, _, t_line, _, *first = model(x)
            inv = torch.linalg.inv(t_line[:, :, :2])
            uv = (inv[:, None] @ (t[..., 2] - t_line[:, None, :, 2])[..., None])[..., 0]  # in the strip's units
            outside = ((uv.abs() > 1).any(-1) & valid).any(1)
            n_read = best_lengths(length_logits, digit_logits)
            top = digit_logits[..., :NO_DIGIT].argmax(-1)  # each crop's digit, given it holds one
            read = torch.where(torch.arange(d.shape[1])[None] < n_read[:, None], top, NO_DIGIT)
            wrong_numbers[i:i + len(d)] = (read != d).any(1).numpy()
            length_wrong = n_read != valid.sum(1)
            counts["length wrong"] += int(length_wrong.sum())
            counts["strip misses a digit"] += int(outside.sum())
            counts["length wrong, strip holds all"] += int((length_wrong & ~outside).sum())
            true_read = model.read_where(x, t, valid)[:, :NO_DIGIT].argmax(-1)
            crop_corner.append(corner_error(theta[valid], t[valid]).numpy())
            crop_own.append((top != d)[valid].numpy())
            crop_true.append((true_read != d[valid]).numpy())
            if refine:
                coarse_read = model.read_where(x, first[0], valid)[:, :NO_DIGIT].argmax(-1)
                counts["digits misread, first-stage crops"] += int((coarse_read != d[valid]).sum())
                coarse_corner += float(corner_error(first[0][valid], t[valid]).sum())
    n = len(digits)
    ce, own, true = np.concatenate(crop_corner), np.concatenate(crop_own), np.concatenate(crop_true)
    n_digits, corner = len(ce), float(ce.sum())
    counts["numbers wrong"] = int(wrong_numbers.sum())
    counts["digits misread, own crops"], counts["digits misread, true crops"] = int(own.sum()), int(true.sum())
    lines = ["# The number model's errors: length, crops or reader", "", f"Command: `{_load.command_line()}`", "",
             f"Checkpoint `{args.checkpoint}`; {n:,} validation photos ({n_digits:,} digits; MNIST-train "
             "55,000-59,999, training fonts; `model.number_train.val_set`). Error % (95 % Wilson interval), of "
             f"the numbers or of their digits; mean corner error of the chosen crops: {corner / n_digits:.3f} "
             "true half-sides" + (f" (of the first stage's, before refining: {coarse_corner / n_digits:.3f})"
                                  if refine else "") + ".", "", "| measure | of | error |", "| --- | --- | --- |"]
    for k, w in counts.items():
        of = n_digits if k.startswith("digits") else n
        lines.append(_row(k, w, of))
    # The numbers wrong by what the generator drew: handwriting or a font, and the surface.
    lines += ["", "| numbers wrong, by photo | of | error |", "| --- | --- | --- |"]
    by: dict[str, list[int]] = {}
    for group in (kinds, surfaces):
        for g in sorted(set(group)):
            mask = group == g
            by[g] = [int(wrong_numbers[mask].sum()), int(mask.sum())]
            lines.append(_row(g, *by[g]))
    # Where the chosen crops land: the digits by their crop's corner error, misread on it and on the true crop.
    lines += ["", "| chosen crop's corner error (true half-sides) | digits | misread on it | misread on the true "
              "crop |", "| --- | ---: | ---: | ---: |"]
    bins = []
    for lo, hi in zip(CORNER_BINS[:-1], CORNER_BINS[1:], strict=True):
        m = (ce >= lo) & (ce < hi)
        bins.append({"from": lo, "to": hi, "digits": int(m.sum()), "own": int(own[m].sum()),
                     "true": int(true[m].sum())})
        label = f"≥ {lo:g}" if hi == np.inf else f"{lo:g}-{hi:g}"
        lines.append(f"| {label} | {int(m.sum()):,} | {int(own[m].sum())} | {int(true[m].sum())} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.no_write:
        result = {"checkpoint": str(args.checkpoint), "n": n, "digits": n_digits, "wrong": counts,
                  "corner_error": corner / n_digits,
                  "first_stage_corner_error": coarse_corner / n_digits if refine else None, "wrong_by_photo": by,
                  "by_corner_error": bins,
                  "command": _load.command_line()}
        print(f"wrote {_load.write_results(RESULTS, 'number_analysis', md, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
