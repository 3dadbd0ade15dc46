"""The photo model's card: ``card.json`` + ``card.md`` in the run folder, with its figures.

    python -m model.photo_card runs/photo --eval bench/results/photo_eval_<stamp>.json

Measures the fixed photo test set (``model.photo.test_set``: MNIST-test digits, held-out fonts, its own
seed) with PyTorch, so that ``stn-export`` can check the ONNX model against it, and takes the per-condition
errors through HTTP from ``bench/photo_eval.py``'s results. Figures: training curves, a montage of training
photos (the generator's output, as the model sees it), and held-out photos with the region the model chose
and its crop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import data as mnist
from model import photo, photo_reader
from model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from model.nets import count_params


def generator_table(module: Any = photo) -> str:
    """The parameter table of a generator module's docstring (``model.photo``'s by default)."""
    doc = module.__doc__ or ""
    m = re.search(r"(=+ +=+\n.*?\n=+ +=+\n)", doc, re.S)
    return m.group(1) if m else ""


def plot_curves(path: Path, history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.6))
    a1.plot(ep, [h["train_ce"] for h in history], marker="o", label="cross-entropy (chosen crop)")
    a1.plot(ep, [h["train_corner"] for h in history], marker="o", label="corner error / half-side")
    a1.set(xlabel="epoch", yscale="log", title="training losses")
    a1.legend(fontsize=8)
    a2.plot(ep, [100 * h["train_error"] for h in history], marker="o", label="train (fresh photos)")
    a2.plot(ep, [100 * h["val_error"] for h in history], marker="o", label="validation photos")
    a2.set(xlabel="epoch", ylabel="error (%)", yscale="log", title="error")
    a2.legend(fontsize=8)
    a3.plot(ep, [h["val_corner"] for h in history], marker="o")
    a3.set(xlabel="epoch", ylabel="mean corner error / half-side", yscale="log", title="validation localisation")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def montage_training(path: Path, data: dict[str, Any], n: int = 24, seed: int = 123, scribbles: float = 0.0,
                     legible_pen: bool = False) -> None:
    """Training photos as the model sees them (letterboxed 256x256), with the target crop drawn."""
    from PIL import Image, ImageDraw

    images, labels = data["train_images"][:-5000], data["train_labels"][:-5000]
    gen = photo.PhotoGenerator(images, labels, photo.font_files(photo.TRAIN_FONT_DIRS), scribbles, legible_pen)
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(n):
        p = gen.render(rng)
        x, (s, ox, oy) = photo.photo_input(p.data, 256)
        im = Image.fromarray(np.round(x * 255).astype(np.uint8)).convert("RGB")
        pts = [(float(a * s + ox), float(b * s + oy)) for a, b in p.crop_corners()]
        d = ImageDraw.Draw(im)
        d.line(pts + [pts[0]], fill=(255, 60, 40), width=2)
        d.text((4, 2), f"{p.label} {p.params['surface']}", fill=(40, 200, 255))
        tiles.append(im)
    tile_grid(tiles, 8).save(path)


def tile_grid(tiles: list[Any], cols: int) -> Any:
    from PIL import Image

    w, h = tiles[0].size
    rows = (len(tiles) + cols - 1) // cols
    out = Image.new("RGB", (cols * w, rows * h), (40, 40, 40))
    for i, t in enumerate(tiles):
        out.paste(t, ((i % cols) * w, (i // cols) * h))
    return out


@torch.no_grad()
def montage_boxes(path: Path, model: torch.nn.Module, data: dict[str, Any], seed: int = 321) -> None:
    """Held-out photos (MNIST-test, held-out fonts), each condition, with the model's box and its crop."""
    from PIL import Image, ImageDraw

    gen = photo.PhotoGenerator(data["test_images"], data["test_labels"], photo.font_files(photo.TEST_FONT_DIRS),
                               legible_pen=True)
    rng = np.random.default_rng(seed)
    tiles = []
    for cond in ("large", "medium", "small", "printed", "ruled", "dark", "exif", "canvas"):
        for _ in range(2):
            p = gen.render(rng, cond)
            x, (s, ox, oy) = photo.photo_input(p.data, 256)
            logits, theta, rect = model(torch.from_numpy(x)[None, None])
            corners = torch.tensor([[-1.0, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]]) @ theta[0].T
            pts = [(float((cx + 1) * 128), float((cy + 1) * 128)) for cx, cy in corners.tolist()]
            im = Image.fromarray(np.round(x * 255).astype(np.uint8)).convert("RGB")
            d = ImageDraw.Draw(im)
            d.line(pts + [pts[0]], fill=(255, 60, 40), width=2)
            crop = Image.fromarray(np.clip(rect[0, 0].numpy() * 255, 0, 255).astype(np.uint8)).resize((72, 72))
            im.paste(crop.convert("RGB"), (256 - 74, 2))
            pred = int(logits.argmax(1))
            d.text((4, 2), f"{cond}: {pred}", fill=(40, 220, 60) if pred == p.label else (255, 40, 40))
            tiles.append(im)
    tile_grid(tiles, 8).save(path)


@torch.no_grad()
def test_error(model: torch.nn.Module, data: dict[str, Any], side: int) -> tuple[float, int, int]:
    xs, ys, _ = photo.test_set(data, side)
    wrong = 0
    for i in range(0, len(ys), 200):
        x = torch.from_numpy(xs[i:i + 200])[:, None].float() / 255.0
        wrong += int((model(x)[0].argmax(1).numpy() != ys[i:i + 200]).sum())
    return wrong / len(ys), wrong, len(ys)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def eval_tables(ev: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for set_name, conds in ev["sets"].items():
        title = {"A": "set A: the training generator's code, its own seed, MNIST-test, held-out fonts, the "
                      f"{ev.get('pen_a', 'earlier')} pen rule",
                 "B": "set B: the independent renderer `bench/photo_render.py`"}.get(set_name, set_name)
        lines += [f"**Through HTTP, {title}** ({ev['n_per_condition']:,} photos per condition; error %, "
                  "95 % interval):", "",
                  "| condition | stn_photo | classical anchor → stn_rts | stn_rts | region ok |",
                  "| --- | --- | --- | --- | --- |"]
        for cond, r in conds.items():
            cells = [f"{100 * r[s]['error']:.1f} ({100 * r[s]['ci95'][0]:.1f}–{100 * r[s]['ci95'][1]:.1f})"
                     for s in ("stn_photo", "classical", "stn_rts")]
            reg = r.get("region")
            cells.append(f"{100 * reg['both']:.1f} %" if reg else "")
            lines.append(f"| {cond} | " + " | ".join(cells) + " |")
        lines.append("")
    ms = ev.get("mnist_style") or {}
    if ms:
        lines += ["**MNIST-style inputs through HTTP** (error %, 95 % interval):", "",
                  "| input | n | stn_photo | stn_rts |", "| --- | --- | --- | --- |"]
        for kind, r in ms.items():
            cells = [f"{100 * r[s]['error']:.2f} ({100 * r[s]['ci95'][0]:.2f}–{100 * r[s]['ci95'][1]:.2f})"
                     for s in ("stn_photo", "stn_rts")]
            lines.append(f"| {kind} | {r['n']:,} | " + " | ".join(cells) + " |")
        lines.append("")
    goals = {"large": 0.01, "medium": 0.01, "exif": 0.01, "small": 0.02, "printed": 0.02, "ruled": 0.02,
             "dark": 0.02}
    lines += ["**Against the photo issue's goals** (error through HTTP; below the classical anchor on every "
              "condition):", "", "| condition | goal | " + " | ".join(f"set {k}" for k in ev["sets"]) + " |",
              "| --- | --- |" + " --- |" * len(ev["sets"])]
    for cond, goal in goals.items():
        cells = []
        for conds in ev["sets"].values():
            r = conds.get(cond)
            if r is None:
                cells.append("")
                continue
            ok = r["stn_photo"]["error"] <= goal and r["stn_photo"]["error"] < r["classical"]["error"]
            cells.append(f"{100 * r['stn_photo']['error']:.1f} % {'met' if ok else '**not met**'}")
        lines.append(f"| {cond} | ≤ {100 * goal:.0f} % | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"Region ok: the answer's `region` covers ≥ 90 % of the digit's ink box and its area is at most 6 "
              f"times the square on the box's longer side. Command: `{ev['command']}` ({ev['date']}).", ""]
    return lines


def write(run: Path, eval_path: Path | None, limitations: Path | None = None) -> dict[str, Any]:
    train = json.loads((run / "train.json").read_text())
    phases = [train]
    while phases[0]["opts"].get("init"):  # a fine-tuning run: its starting point's run first
        phases.insert(0, json.loads((Path(phases[0]["opts"]["init"]).parent / "train.json").read_text()))
    reader = None
    if phases[0]["opts"].get("init_classifier"):  # its classifier pre-trained by stn-train-reader
        reader = json.loads((Path(phases[0]["opts"]["init_classifier"]).parent / "train.json").read_text())
    model, ckpt = load_checkpoint(run / "best.ckpt")
    model.eval()
    cfg = ckpt["config"]
    side = int(cfg["input_size"][0])
    data = mnist.load_mnist(None)
    err, wrong, n = test_error(model, data, side)
    history = train["history"]
    best = min(history, key=lambda h: h["val_error"])
    ev = json.loads(eval_path.read_text()) if eval_path else None
    commands = ([reader["command"]] if reader else []) + [p["command"] for p in phases]
    card: dict[str, Any] = {
        "name": "photo", "arch": "photo", "transform": "affine", "dataset": "photo",
        "test_error": err, "test_errors": wrong, "test_n": n,
        "test_set": f"{n:,} photos drawn once by model.photo.test_set (MNIST-test digits, fonts-urw-base35, "
                    f"seed {photo.TEST_SEED}, the conditions in turn, the legible pen)",
        "val_error": best["val_error"], "best_epoch": best["epoch"], "epochs": len(history),
        "params": count_params(model),
        "wall_time_s": round(sum(p["wall_time_s"] for p in phases) + (reader["wall_time_s"] if reader else 0), 1),
        "cpu_time_s_main": round(sum(p["cpu_time_s_main"] for p in phases), 1), "hardware": train["hardware"],
        "command": " && ".join(commands), "commands": commands,
        "reader": None if reader is None else {
            "command": reader["command"], "opts": reader["opts"], "wall_time_s": round(reader["wall_time_s"], 1),
            "best_true_crop_val_error": reader["best_val_error"], "history": reader["history"]},
        "phases": [{"command": p["command"], "opts": p["opts"], "wall_time_s": round(p["wall_time_s"], 1),
                    "best_val_error": p["best_val_error"], "epochs": len(p["history"])} for p in phases],
        "training": train["opts"], "model_config": cfg, "history": history,
        "data": {"source": "MNIST (LeCun, Cortes, Burges)", "checksums_sha256": ckpt["data"]["checksums"],
                 "train": "photos of MNIST-train digits 0-54,999 and of the training fonts, drawn fresh every step",
                 "validation": "1,600 photos of MNIST-train digits 55,000-59,999, drawn once (model selection)"},
        "photo_eval": ev,
        "limitations": limitations.read_text() if limitations else None,
        "limitations_file": str(limitations) if limitations else None,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    plot_curves(run / "curves.png", history)
    montage_training(run / "training_photos.png", data, scribbles=float(train["opts"].get("scribbles", 0.0)),
                     legible_pen=bool(train["opts"].get("legible_pen")))
    montage_boxes(run / "boxes.png", model, data)
    (run / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (run / "card.md").write_text(render(card))
    blob = read_checkpoint(run / "best.ckpt")
    metrics = {**blob["metrics"], "test_error": err}
    save_checkpoint(run / "best.ckpt", model, cfg, blob["data"], metrics, card=card)
    return card


def loss_sentence(opts: dict[str, Any]) -> str:
    """What the first phase's loss was, from its options (``model.photo_train.OPTS``)."""
    w = float(opts.get("true_crop_weight", 1.0))
    out = ("cross-entropy on the crop the transformer chose, plus the generator's digit box as supervision of "
           "the localisation (the crop's corners relative to its size, the coarse centre and log-size, a "
           "cross-entropy of the heat map against the true cell)")
    if w > 0:
        out += (f", plus cross-entropy on the true crop with a weight falling from {w:g} to 0 over the first "
                "half (so the classifier learns while the localisation is still poor)")
    if opts.get("init_classifier") and float(opts.get("cls_lr_scale", 1.0)) == 0:
        out += ("; the classifier is held at the reader's weights (learning rate 0; its batch-norm statistics "
                "still follow the crops), so the first phase trains the localisation only, through the box "
                "terms and the reader's cross-entropy")
    return out + "."


def render(card: dict[str, Any]) -> str:
    hw = card["hardware"]
    t = card["training"]
    lines = [
        "# Model card: stn_photo",
        "",
        "Reads one digit in a phone photo: handwritten or printed, dark ink on paper (plain, ruled, squared) "
        "or chalk on a board, 10-90 % of the photo's shorter side, turned up to ±45°, anywhere in the frame. "
        "A two-stage spatial transformer finds it (`model/photo_net.py`): a coarse localisation net on a "
        "64 px view of the letterboxed 256 px photo gives the digit's centre and size (soft-argmax of a heat "
        "map), a `GridSample` reads a 48 px glimpse around it from the full 256 px input, a fine localisation "
        "net turns and re-fits the crop (affine), and a second `GridSample` reads the 32 px upright crop "
        "from the full input for the classifier. `theta` (the composed affine) and `rectified` (the crop) "
        "are outputs of the graph.",
        "",
        f"- Parameters: {card['params']:,}. Input: gray photo letterboxed into 256×256, in [0, 1] "
        "(`stn.resize = letterbox`, `stn.mean = 0`, `stn.std = 1`, `stn.polarity = any`: the model "
        "standardises each view and flips dark ink to light itself).",
        f"- Fixed test set ({card['test_set']}): **{_pct(card['test_error'])}** "
        f"({card['test_errors']} of {card['test_n']:,}); never used for training or model selection.",
        f"- Validation error {_pct(card['val_error'])} (best epoch {card['best_epoch']} of {card['epochs']}).",
        f"- Trained on the CPU: {card['wall_time_s'] / 60:.1f} min wall in all on {hw.get('cpu', hw['platform'])} "
        f"({hw['cpu_count']} cores: {t['threads']} torch thread + {t['workers']} photo-rendering worker "
        f"processes), torch {hw['torch']}"
        + ("; in phases: " + "; ".join(
            ([f"the reader {r['wall_time_s'] / 60:.1f} min, {r['opts']['steps']:,} steps, best validation "
              f"{_pct(r['best_true_crop_val_error'])} on the true crops"] if (r := card.get("reader")) else [])
            + [f"{p['wall_time_s'] / 60:.1f} min, {p['epochs']} epochs, best validation "
               f"{_pct(p['best_val_error'])}" for p in card["phases"]])
           if len(card["phases"]) > 1 or card.get("reader") else "") + ".",
        "- Training: " + loss_sentence(card["phases"][0]["opts"]) + " AdamW, one-cycle schedule, batch "
        + ", then ".join(f"{p['opts']['batch_size']}, {p['opts']['epochs']} × {p['opts']['steps_per_epoch']} "
                                  f"steps at a peak learning rate of {p['opts']['lr']}"
                                  + (f", scribbles {p['opts']['scribbles']}" if p["opts"].get("scribbles") else "")
                                  for p in card["phases"]) + "."
        + (" The second phase starts from the first's best weights, "
           + ("draws a share of the pen strokes as scribbles, " if card["phases"][-1]["opts"].get("scribbles")
              and not card["phases"][0]["opts"].get("scribbles") else "")
           + "trains every weight, and leaves out the true-crop term." if len(card["phases"]) > 1 else "")
        + (" Every photo, in training and validation, is drawn with the legible pen (`model.photo.stroke`: no "
           "max-filter of 5 on a 28-px MNIST digit)." if t.get("legible_pen") else "")
        + (f" Before it, the classifier alone (`stn-train-reader`, `model/photo_reader.py`) read "
           f"{r['opts']['steps']:,} batches of {r['opts']['batch_size']} synthetic crops made in torch from "
           "MNIST-train and training-font digits (the reader's table below), chosen by its error on the true "
           "crops of the validation photos; the photo run starts its classifier from those weights, at "
           f"{card['phases'][0]['opts'].get('cls_lr_scale', 1.0)} times the learning rate of the rest."
           if (r := card.get("reader")) else ""),
        "",
        "Reproduce:",
        "",
        "```",
        *card["commands"],
        "make export-photo && make eval-photo",
        f"python -m model.photo_card {t['out']} --eval bench/results/photo_eval_<stamp>.json"
        + (f" --limitations {card['limitations_file']}" if card.get("limitations_file") else "")
        + " && make export-photo",
        "```",
        "",
        "Training options: `" + json.dumps(t, sort_keys=True) + "`",
        "",
    ]
    if card.get("photo_eval"):
        lines += ["## Results", ""] + eval_tables(card["photo_eval"])
    lines += [
        "## Known limitations",
        "",
        *([card["limitations"].rstrip("\n")] if card.get("limitations") else []),
        "- One digit per photo: with two whole digits in view it reads one of them.",
        "- The photo's luminance only (as the service decodes it): a digit that differs from its paper in "
        "colour but not in brightness is invisible to it.",
        "",
        "## Data",
        "",
        f"- Training: {card['data']['train']}; validation: {card['data']['validation']}.",
        "- Data checksums (SHA-256): " + ", ".join(f"`{k}` {v[:12]}…" for k, v in
                                                     card["data"]["checksums_sha256"].items()),
        "- The photo generator, `model/photo.py` (every parameter, uniform unless said otherwise):",
        "",
        "```",
        generator_table().rstrip("\n"),
        "```",
        "",
        *(["The reader's synthetic crops, `model/photo_reader.py` (pre-training of the classifier only):", "",
           "```", generator_table(photo_reader).rstrip("\n"), "```", ""] if card.get("reader") else []),
        "Training photos as the model sees them, with the target crop:",
        "",
        "![training photos](training_photos.png)",
        "",
        "Held-out photos with the region the model chose and its crop (top right; the label it read, green "
        "when right):",
        "",
        "![held-out photos, boxes and crops](boxes.png)",
        "",
        "![training curves](curves.png)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.photo_card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--eval", type=Path, help="bench/photo_eval.py's results JSON")
    p.add_argument("--limitations", type=Path,
                   help="a Markdown list of what this model's measurements showed it gets wrong, put under the "
                        "card's Known limitations before the limits every photo model shares")
    a = p.parse_args(argv)
    card = write(a.run, a.eval, a.limitations)
    print(json.dumps({"test_error": card["test_error"], "val_error": card["val_error"]}))  # noqa: T201 (CLI)


if __name__ == "__main__":
    main()
