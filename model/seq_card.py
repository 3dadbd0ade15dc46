"""A sequence model's card: ``card.json`` + ``card.md`` in the run folder, with its figures.

    python -m model.seq_card runs/seq3 --baseline runs/seq3_cnn

Measures the fixed test set (``model.sequence.test_set``: 10,000 sequences of MNIST-test digits and clutter,
its own seed) with PyTorch, for the transformer model and its baseline, so that ``stn-export`` can check the
ONNX model against it; and where the transformers look: for every test digit, whether the centre of its
28x28 frame lies inside the window of the transformer that read its position. Figures: the training curves
of both models, test canvases with each transformer's window (one colour per transformer) and its crop, and
the windows' centres over 2,000 test canvases, one colour per transformer: the transformers sharing the work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model import data as mnist
from model import sequence
from model.card import card_flags, carried
from model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from model.multi import NO_DIGIT
from model.nets import count_params
from model.seq_train import errors, predict

# Sønderby et al. 2015, Recurrent Spatial Transformer Networks, MNIST-sequence (3 digits), per-digit error.
ANCHORS = {"CNN (Sønderby et al.)": 0.029, "CNN + spatial transformer (Sønderby et al.)": 0.020,
           "recurrent spatial transformer (Sønderby et al.)": 0.015}
FAMILY_WORDS = {"attention": "one scale and a translation, three numbers: zoom and move, no rotation",
                "scale_translation": "a scale per axis and a translation, four numbers: zoom and move, no rotation",
                "affine": "six numbers"}
COLOURS = ((255, 60, 40), (60, 200, 60), (60, 140, 255), (255, 200, 0), (220, 80, 255))
OUT_CORNERS = np.array([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])


def corners_px(theta: np.ndarray, side: int) -> np.ndarray:
    """(..., 2, 3) theta -> (..., 4, 2) window corners in canvas pixels (edge coordinates)."""
    return (OUT_CORNERS @ np.swapaxes(theta, -1, -2) + 1.0) * side / 2.0


def centres_inside(theta: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """(N, L) whether digit i's frame centre lies inside transformer i's window (an axis-aligned window, or
    the quadrilateral of an affine one: inside all four edges)."""
    c = corners_px(theta, side)  # (N, L, 4, 2)
    p = np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1)  # (N, L, 2)
    inside = np.ones(p.shape[:2], bool)
    for k in range(4):
        a, b = c[..., k, :], c[..., (k + 1) % 4, :]
        cross = (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])
        inside &= cross >= 0  # clockwise in image coordinates (y down): the inside is on the right
    return inside


def plot_curves(path: Path, runs: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, history in runs.items():
        steps = [h["step"] for h in history]
        a1.plot(steps, [h["train_loss"] for h in history], marker=".", label=name)
        a2.plot(steps, [100 * h["val_digit_error"] for h in history], marker=".", label=name)
    a1.set(xlabel="step", yscale="log", title="training loss (length + positions)")
    a2.set(xlabel="step", ylabel="per-digit error (%)", yscale="log", title="validation (MNIST-train 55k-60k)")
    for a in (a1, a2):
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@torch.no_grad()
def plot_boxes(path: Path, model: nn.Module, xs: np.ndarray, ys: np.ndarray, pred: np.ndarray, theta: np.ndarray,
               n_examples: int = 12, n_scatter: int = 2000) -> None:
    """Left: test canvases with each transformer's window and crop. Right: window centres per transformer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    model.eval()  # batch norms on their running statistics, which a train-mode pass would move
    side = xs.shape[-1]
    n_t = theta.shape[1]
    cols = 4
    rows = (n_examples + cols - 1) // cols
    fig = plt.figure(figsize=(4 * cols * 0.75 + 5, 3.3 * rows * 0.75))
    grid = fig.add_gridspec(rows, cols + 2)
    x = (torch.from_numpy(xs[:n_examples]).float()[:, None] / 255.0 - mnist.MEAN) / mnist.STD
    crops = model(x)[3]
    for i in range(n_examples):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.imshow(xs[i], cmap="gray", vmin=0, vmax=255)
        for t in range(n_t):
            colour = np.array(COLOURS[t % len(COLOURS)]) / 255
            ax.add_patch(Polygon(corners_px(theta[i, t], side) - 0.5, closed=True, fill=False, lw=1.5,
                                 edgecolor=colour))
        strip = np.concatenate([crops[i, t, 0].numpy() for t in range(n_t)], axis=1)
        # The crops the classifier read, side by side in the bottom-left corner (each a fifth of the side).
        ax.imshow(strip, cmap="gray", extent=(0, 0.2 * side * n_t, side, 0.8 * side), aspect="auto")
        read = "".join(str(d) for d in pred[i] if d != NO_DIGIT)
        ok = read == "".join(str(d) for d in ys[i])
        ax.set_title(f"read {read}" + ("" if ok else f" (true {''.join(map(str, ys[i]))})"), fontsize=8,
                     color="green" if ok else "red")
        ax.set(xlim=(0, side), ylim=(side, 0), xticks=[], yticks=[])
    ax = fig.add_subplot(grid[:, cols:])
    c = theta[:n_scatter, :, :, 2]  # (N, T, 2) window centres, normalised
    for t in range(n_t):
        colour = np.array(COLOURS[t % len(COLOURS)]) / 255
        ax.scatter((c[:, t, 0] + 1) * side / 2, (c[:, t, 1] + 1) * side / 2, s=2, color=colour, alpha=0.4,
                   label=f"transformer {t} (digit {t})")
    ax.set(xlim=(0, side), ylim=(side, 0), aspect="equal",
           title=f"window centres, {min(n_scatter, len(c)):,} test canvases")
    ax.legend(fontsize=7, markerscale=4, loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def measure(run: Path, test: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[nn.Module, dict[str, Any],
                                                                                  dict[str, Any], np.ndarray,
                                                                                  np.ndarray]:
    """-> model, checkpoint, errors, predicted digits (N, L), theta (N, T, 2, 3) on the test set."""
    model, ckpt = load_checkpoint(run / "best.ckpt")
    xs, ys, boxes = test
    _, pred, theta = predict(model, xs, 250)
    ev = errors(pred, ys)
    ev["digit_errors"] = int((pred[:, : ys.shape[1]] != ys).sum())
    ev["digits"] = int(ys.size)
    if theta.shape[1] == ys.shape[1]:
        ev["centre_in_window"] = float(centres_inside(theta, boxes, xs.shape[-1]).mean())
    return model, ckpt, ev, pred, theta


def box_weight(opts: dict[str, Any]) -> float:
    """A run's ``box_weight`` option (0: labels only; runs from before the option have none)."""
    return float(opts.get("box_weight") or 0.0)


def supervision(opts: dict[str, Any]) -> str:
    """The card's sentence on what trained the windows: labels alone, or labels and the generator's boxes."""
    w = box_weight(opts)
    if not w:
        return "Trained with the digits' labels only: no box or position was ever given."
    return (f"Trained with the digits' labels and, as supervision of the windows, the generator's boxes "
            f"(`box_weight` {w:g}: the mean absolute difference between transformer i's window and digit i's "
            "28x28 frame, added to the loss); Sønderby et al.'s models below learned from labels alone.")


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def carried_runs(previous: dict[str, Any]) -> list[dict[str, Any]]:
    """A previous card's model and its other runs, as rows of ``other_runs`` (measured then, on the same
    fixed test set; marked ``carried``): how a new card keeps the runs it was chosen against when their run
    folders are gone."""
    t = previous["training"]
    return carried({"run": previous["run"], "command": previous["command"],
                    "val_digit_error": previous["val_digit_error"], "wall_time_s": previous["wall_time_s"],
                    "transform": previous["transform"], "start_scale": t["start_scale"],
                    "loc_lr_scale": t["loc_lr_scale"], "steps": t["steps"], "threads": t["threads"],
                    "box_weight": box_weight(t), "digit_error": previous["test_error"],
                    "sequence_error": previous["test_sequence_error"], "digit_errors": previous["test_digit_errors"],
                    "digits": previous["test_digits"], "centre_in_window": previous.get("centre_in_window")},
                   previous)


def write(run: Path, baseline: Path | None, name: str | None = None,
          others: list[Path] | None = None, carry: Path | None = None) -> dict[str, Any]:
    data = mnist.load_mnist(None)
    test = sequence.test_set(data)
    train = json.loads((run / "train.json").read_text())
    model, ckpt, ev, pred, theta = measure(run, test)
    tried = []
    for other in others or []:  # other configurations trained for this model: chosen between on validation
        otrain = json.loads((other / "train.json").read_text())
        _, _, oev, _, _ = measure(other, test)
        best_val = min(h["val_digit_error"] for h in otrain["history"])
        tried.append({"run": str(other), "command": otrain["command"], "val_digit_error": best_val,
                      "wall_time_s": round(otrain["wall_time_s"], 1),
                      "transform": otrain["opts"]["transform"], "start_scale": otrain["opts"]["start_scale"],
                      "loc_lr_scale": otrain["opts"]["loc_lr_scale"], "steps": otrain["opts"]["steps"],
                      "threads": otrain["opts"]["threads"],
                      "box_weight": box_weight(otrain["opts"]), **oev})
    base = None
    previous = json.loads(carry.read_text()) if carry else None
    if previous:
        tried += carried_runs(previous)
        base = {**previous["baseline"], "carried": True} if previous.get("baseline") and not baseline else None
    curves = {f"{train['arch']} (this model)": train["history"]}
    if baseline:
        btrain = json.loads((baseline / "train.json").read_text())
        bmodel, _, bev, _, _ = measure(baseline, test)
        base = {"run": str(baseline), "arch": btrain["arch"], "params": count_params(bmodel),
                "wall_time_s": round(btrain["wall_time_s"], 1), "command": btrain["command"],
                "model_config": read_checkpoint(baseline / "best.ckpt")["config"], **bev}
        curves[f"{btrain['arch']} (baseline)"] = btrain["history"]
    cfg = ckpt["config"]
    history = train["history"]
    best = min(history, key=lambda h: h["val_digit_error"])
    card: dict[str, Any] = {
        "name": name or run.name, "run": str(run), "arch": cfg["arch"], "transform": cfg["transform"],
        "dataset": ckpt["data"]["dataset"],
        "test_error": ev["digit_error"], "test_sequence_error": ev["sequence_error"],
        "test_digit_errors": ev["digit_errors"], "test_digits": ev["digits"],
        "centre_in_window": ev.get("centre_in_window"),
        "test_set": f"{len(test[1]):,} sequences drawn once by model.sequence.test_set (MNIST-test digits and "
                    f"clutter, seed {sequence.TEST_SEED})",
        "val_digit_error": best["val_digit_error"], "best_step": best["step"], "steps": history[-1]["step"],
        "params": count_params(model), "wall_time_s": round(train["wall_time_s"], 1),
        "cpu_time_s": round(train["cpu_time_s"], 1), "hardware": train["hardware"], "command": train["command"],
        "training": train["opts"], "model_config": cfg, "history": history, "baseline": base, "anchors": ANCHORS,
        "other_runs": tried, "carried_from": str(carry) if carry else None,
        "data": {"source": "MNIST (LeCun, Cortes, Burges)", "checksums_sha256": ckpt["data"]["checksums"],
                 "train": "sequences of MNIST-train digits 0-54,999, drawn fresh every step",
                 "validation": f"{train['opts']['val_size']:,} sequences of MNIST-train digits 55,000-59,999, "
                               f"drawn once (seed {sequence.VAL_SEED}; model selection)"},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    plot_curves(run / "curves.png", curves)
    plot_boxes(run / "boxes.png", model, test[0], test[1], pred, theta)
    (run / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (run / "card.md").write_text(markdown(card))
    save_checkpoint(run / "best.ckpt", model, cfg, ckpt["data"], {**ckpt["metrics"], "test_error": ev["digit_error"]},
                    card=card)
    return card


def markdown(card: dict[str, Any]) -> str:
    base = card["baseline"]
    hw = card["hardware"]
    rows = [("this model: " + f"{card['arch']}, {card['model_config']['max_len']} {card['transform']} transformers",
             card["test_error"], card["test_sequence_error"], card["params"], card["wall_time_s"])]
    if base:
        rows.append((f"baseline: {base['arch']}, the same classifier on the whole canvas", base["digit_error"],
                     base["sequence_error"], base["params"], base["wall_time_s"]))
    lines = [
        f"# Model card: {card['name']}", "",
        "Reads the three digits of an MNIST-sequence canvas (Sønderby et al. 2015: three MNIST digits side by "
        "side on a 100x100 canvas with eight 9x9 pieces of clutter), left to right, with one spatial transformer "
        "per digit (`model.seq_net.SequenceSTN`): a shared localisation trunk, one head per transformer, each "
        f"a `{card['transform']}` window ({FAMILY_WORDS.get(card['transform'], 'its family')}) whose 28x28 "
        "crop a shared classifier reads. " + supervision(card["training"]), "",
        f"## Results on the fixed test set ({card['test_set']})", "",
        "| model | per-digit error | sequence error | parameters | training time |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, d, s, p, t in rows:
        lines.append(f"| {name} | {_pct(d)} | {_pct(s)} | {p:,} | {t / 60:.1f} min |")
    for o in card.get("other_runs") or []:
        boxes = f", boxes {o['box_weight']:g}" if o.get("box_weight") else ""
        mark = " (carried)" if o.get("carried") else ""
        lines.append(f"| another run{mark}: {o['transform']}{boxes}, start {o['start_scale']}, localisation "
                     f"{o['loc_lr_scale']}x the rate, {o['steps']:,} steps on {o['threads']} thread"
                     f"{'s' if o['threads'] > 1 else ''} (validation {_pct(o['val_digit_error'])}) | "
                     f"{_pct(o['digit_error'])} | {_pct(o['sequence_error'])} | | {o['wall_time_s'] / 60:.1f} min |")
    for name, v in card["anchors"].items():
        lines.append(f"| {name} | {_pct(v)} | | | |")
    lines += [
        "",
        f"Per-digit error: {card['test_digit_errors']} of {card['test_digits']:,} digits wrong (position i "
        "against digit i). Goal (the numbers issue): at most 1.5 % per digit, aim 1.0 %.",
    ]
    if card.get("other_runs"):
        lines += ["", "Of the runs trained for this model, the one bundled is the one with the lowest validation "
                  "error; the test set chose nothing."]
    if card.get("carried_from"):
        lines += ["", f"Rows marked carried (and the baseline) are copied from the previous card, "
                  f"`{card['carried_from']}`: measured then, on this same fixed test set; their run folders are not "
                  "in this checkout, their commands below reproduce them."]
    if card.get("centre_in_window") is not None:
        lines += ["", f"Where the transformers look: the centre of digit i's 28x28 frame lies inside transformer "
                  f"i's window for {_pct(card['centre_in_window'])} of the test digits."]
    lines += [
        "", "![where each transformer looks](boxes.png)", "",
        "Left: test canvases with each transformer's window (red: digit 0, green: 1, blue: 2) and, in the corner, "
        "the three crops the classifier read. Right: the windows' centres over 2,000 test canvases: each "
        "transformer has taken one digit and follows it wherever the sequence sits.", "",
        "![training curves](curves.png)", "",
        "## Training", "",
        f"- Data: {card['data']['train']}; validation: {card['data']['validation']}. MNIST-test is read only for "
        "the test set above.",
        f"- {card['steps']:,} steps of {card['training']['batch_size']} (AdamW, one-cycle learning rate "
        f"{card['training']['lr']}, the localisation {card['training']['loc_lr_scale']}x), best validation at "
        f"step {card['best_step']:,} ({_pct(card['val_digit_error'])} per digit).",
        f"- {card['wall_time_s'] / 60:.1f} min on {hw.get('cpu', 'a CPU')}, {hw['torch_threads']} torch "
        f"thread{'s' if hw['torch_threads'] > 1 else ''}, torch {hw['torch']}.", "",
        "Reproduce:", "", "```", card["command"],
    ]
    if base:
        lines.append(base["command"])
    lines += [o["command"] for o in card.get("other_runs") or []]
    lines += [f"python -m model.seq_card {card['run']} --name {card['name']}{card_flags(card)}", "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.seq_card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--baseline", type=Path, help="the baseline's run folder, for the side-by-side")
    p.add_argument("--name", help="the model's name on its card (default: the run folder's)")
    p.add_argument("--other", type=Path, action="append", default=[],
                   help="another run trained for this model (chosen between on validation), for the table")
    p.add_argument("--carry", type=Path, help="a previous card.json: its model, other runs and baseline "
                   "join the table as carried rows (for runs whose folders are gone)")
    a = p.parse_args(argv)
    card = write(a.run, a.baseline, a.name, a.other, a.carry)
    print(json.dumps({k: card[k] for k in ("name", "test_error", "test_sequence_error", "centre_in_window")}))


if __name__ == "__main__":
    main()
