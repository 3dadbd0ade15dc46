"""Model cards: ``card.json`` + ``card.md``, the training-curve figure and the rectified-output figure."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.nets import ModelConfig, count_params

# Jaderberg et al. 2015, Table 1: test error of the CNN and of the ST-CNN with each transformer family.
TABLE1 = {"cnn": {"r": 0.012, "rts": 0.008, "p": 0.015, "e": 0.014},
          "affine": {"r": 0.007, "rts": 0.005, "p": 0.008, "e": 0.012},
          "projective": {"r": 0.008, "rts": 0.006, "p": 0.008, "e": 0.013},
          "tps": {"r": 0.007, "rts": 0.005, "p": 0.008, "e": 0.011}}
# Per distortion, the paper's best ST-CNN and its CNN (and the translated, cluttered 60x60 set of its section 4.1).
PAPER = {d: {"st-cnn": min(TABLE1[f][d] for f in ("affine", "projective", "tps")), "cnn": TABLE1["cnn"][d]}
         for d in TABLE1["cnn"]} | {"tc": {"st-cnn": 0.017, "cnn": 0.035}}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def carried(own: dict[str, Any], previous: dict[str, Any]) -> list[dict[str, Any]]:
    """A previous card's own row (``own``, in the new card's row form) and that card's other runs, each marked
    ``carried``: how a new card keeps the runs it was chosen against when their run folders are gone."""
    return [{**r, "carried": True} for r in [own, *(previous.get("other_runs") or [])]]


def card_flags(card: dict[str, Any]) -> str:
    """The card command's options that rebuild ``card``'s table: ``--baseline`` and ``--other`` for the runs it
    measured itself, ``--carry`` for the card its carried rows come from."""
    base = card.get("baseline")
    return ((f" --baseline {base['run']}" if base and not base.get("carried") else "")
            + "".join(f" --other {o['run']}" for o in card.get("other_runs") or [] if not o.get("carried"))
            + (f" --carry {card['carried_from']}" if card.get("carried_from") else ""))


def _baseline(run: str | None) -> dict[str, Any] | None:
    if not run:
        return None
    path = Path(run) / "card.json"
    if not path.exists():
        return {"run": str(run), "test_error": None, "note": "baseline card not found when this card was written"}
    b = json.loads(path.read_text())
    return {"run": str(run), "name": b["name"], "test_error": b["test_error"], "params": b["params"],
            "command": b["command"], "wall_time_s": b["wall_time_s"]}


def plot_curves(path: Path, history: list[dict[str, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.plot(ep, [h["train_loss"] for h in history], marker="o")
    a1.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss")
    a2.plot(ep, [100 * h["train_error"] for h in history], marker="o", label="train (fresh distortions)")
    a2.plot(ep, [100 * h["val_error"] for h in history], marker="o", label="validation")
    a2.set(xlabel="epoch", ylabel="error (%)", yscale="log", title="error")
    a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def plot_rectified(path: Path, model: nn.Module, x: Tensor, y: Tensor, mean: float, std: float,
                   device: torch.device, n: int = 16) -> None:
    """Test inputs beside the transformer's rectified outputs, with the predicted class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    xb = ((x[:n] - mean) / std).to(device)
    logits, _, rect = model(xb)
    rect = (rect.cpu() * std + mean).clamp(0, 1)
    pred = logits.argmax(1).cpu()
    cols = 8
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows * 2, cols, figsize=(cols * 1.3, rows * 2.8))
    for i in range(n):
        r, c = divmod(i, cols)
        axes[2 * r, c].imshow(x[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[2 * r, c].set_title(f"input ({int(y[i])})", fontsize=8)
        axes[2 * r + 1, c].imshow(rect[i, 0], cmap="gray", vmin=0, vmax=1)
        colour = "green" if pred[i] == y[i] else "red"
        axes[2 * r + 1, c].set_title(f"rectified: {int(pred[i])}", fontsize=8, color=colour)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_card(out: Path, *, name: str, opts: dict[str, Any], cfg: ModelConfig, model: nn.Module,
               metrics: dict[str, Any], history: list[dict[str, float]], data_meta: dict[str, Any],
               hardware: dict[str, Any], wall_time_s: float, cpu_time_s: float, command: str | None,
               test: tuple[Tensor, Tensor] | None, device: torch.device) -> dict[str, Any]:
    dist = opts["distortion"]
    card: dict[str, Any] = {
        "name": name,
        "arch": cfg.arch,
        "transform": cfg.transform if cfg.arch == "stcnn" else None,
        "dataset": data_meta["dataset"],
        "test_error": metrics.get("test_error"),
        "test_set": f"the 10,000 MNIST-test digits, distorted once ({dist}, seed fixed in model/distort.py)",
        "val_error": metrics["val_error"],
        "best_epoch": metrics["epoch"],
        "epochs": opts["epochs"],
        "params": count_params(model),
        "paper": PAPER.get(dist),
        "baseline": _baseline(opts.get("baseline_run")),
        "wall_time_s": round(wall_time_s, 1),
        "cpu_time_s": round(cpu_time_s, 1),
        "hardware": hardware,
        "data": {"source": "MNIST (LeCun, Cortes, Burges)", "checksums_sha256": data_meta["checksums"],
                 "train": "MNIST-train digits 0-54,999, distortions drawn fresh every epoch",
                 "validation": "MNIST-train digits 55,000-59,999, distorted once (model selection)"},
        "command": command,
        "training": {k: v for k, v in opts.items() if k not in ("data_dir",)},
        "model_config": cfg.to_dict(),
        "history": history,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    plot_curves(out / "curves.png", history, name)
    if test is not None and cfg.arch == "stcnn":
        plot_rectified(out / "rectified.png", model, test[0], test[1], cfg.mean, cfg.std, device)
    (out / "card.md").write_text(render_markdown(card))
    return card


def refresh_baseline(run: Path, baseline_run: str) -> dict[str, Any]:
    """Point a finished run's card at a baseline run that finished after it, with the paper's figures as
    ``PAPER`` states them now; rewrite card.json and card.md."""
    card = json.loads((run / "card.json").read_text())
    card["baseline"] = _baseline(baseline_run)
    card["paper"] = PAPER.get(card["training"]["distortion"])
    (run / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (run / "card.md").write_text(render_markdown(card))
    return card


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def render_markdown(card: dict[str, Any]) -> str:
    b = card["baseline"]
    paper = card["paper"] or {}
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"{'Spatial transformer (' + card['transform'] + ') + CNN' if card['arch'] == 'stcnn' else 'Baseline CNN'}"
        f" trained on {card['dataset']}.",
        "",
        "| | test error |",
        "|---|---|",
        f"| this model ({card['params']:,} parameters) | **{_pct(card['test_error'])}** |",
    ]
    if b:
        lines.append(f"| baseline CNN: the same classifier without the transformer (`{b['run']}`) | "
                     f"{_pct(b.get('test_error'))} |")
    if paper:
        lines.append(f"| paper ST-CNN / CNN (Jaderberg et al. 2015, Table 1) | {_pct(paper.get('st-cnn'))} / "
                     f"{_pct(paper.get('cnn'))} |")
    hw = card["hardware"]
    lines += [
        "",
        f"- Test set: {card['test_set']}. Never used for training or model selection.",
        f"- Validation error {_pct(card['val_error'])} (best epoch {card['best_epoch']} of {card['epochs']}).",
        f"- Wall time {card['wall_time_s'] / 60:.1f} min, CPU time {card['cpu_time_s'] / 60:.1f} min on "
        f"{hw.get('cpu', hw['platform'])} ({hw['cpu_count']} cores, {hw['torch_threads']} torch threads, "
        f"device {hw['device']}), torch {hw['torch']}.",
        "- Data checksums (SHA-256): " + ", ".join(f"`{k}` {v[:12]}…" for k, v in
                                                     card["data"]["checksums_sha256"].items()),
        "",
        "Reproduce:",
        "",
        "```",
        str(card["command"]),
        "```",
        *(["", f"Baseline: `{b['command']}` ({b['wall_time_s'] / 60:.1f} min)."] if b and b.get("command") else []),
        "",
        "Training options: `" + json.dumps(card["training"], sort_keys=True) + "`",
        "",
        "![training curves](curves.png)",
    ]
    if card["arch"] == "stcnn":
        lines += ["", "![test inputs and rectified outputs](rectified.png)"]
    return "\n".join(lines) + "\n"
