"""The number model's card: ``card.json`` + ``card.md`` in the run folder, with its figures.

    python -m model.number_card runs/number --name stn_number --baseline runs/number_cnn
    python -m model.number_card runs/number_d --name stn_number --other runs/number_c --carry <previous card.json>

Measures the held-out set (``model.number.test_set``: 2,000 photos of numbers, lengths 1-5 in turn, MNIST-test
digits and the held-out fonts, its own seed) with PyTorch, for the transformer model and its baseline, so that
``stn-export`` can check the ONNX model against it: whole numbers wrong and digits wrong (misread, missed or
added), each with its 95 % interval, per length too; and where the transformers look: for every test digit,
whether the centre of its true crop lies inside the window of the transformer that read its position.
Figures: training photos with their digits' boxes, test photos with the line strip and each digit
transformer's window and crop, the windows' centres along the line over the test set (one colour per
transformer: the transformers sharing the work), and the training curves of both models. ``--carry`` keeps
a previous card's model, its other runs and its baseline as rows of the new table (measured then, on the same
fixed test set) when their run folders are gone.
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
from model import number, number_pool
from model.card import card_flags, carried, wilson
from model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from model.multi import NO_DIGIT
from model.nets import count_params
from model.number_net import NumberSTN
from model.number_train import VAL_SEED, errors, predict
from model.photo_card import generator_table, tile_grid
from model.seq_card import COLOURS, centres_inside, corners_px

GOALS = {"number_error": 0.05, "digit_error": 0.015}  # issue #11: at most 5 % of numbers, 1.5 % of digits


def measure(run: Path, test: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[nn.Module, dict[str, Any],
                                                                                  dict[str, Any], np.ndarray,
                                                                                  np.ndarray]:
    """-> model, checkpoint, errors (with counts, intervals and per length), digits read (N, L), theta."""
    model, ckpt = load_checkpoint(run / "best.ckpt")
    xs, ys, thetas = test
    pred, theta = predict(model, xs, 100)
    ev: dict[str, Any] = errors(pred, ys)
    wrong = pred != ys
    n_digits = int((ys != NO_DIGIT).sum())
    ev.update(numbers=len(ys), numbers_wrong=int(wrong.any(1).sum()), digits=n_digits,
              digits_wrong=int(wrong.sum()))
    ev["number_interval"] = wilson(ev["numbers_wrong"], len(ys))
    ev["digit_interval"] = wilson(ev["digits_wrong"], n_digits)
    lengths = (ys != NO_DIGIT).sum(1)
    read = (pred != NO_DIGIT).sum(1)
    ev.update(too_short=int((read < lengths).sum()), too_long=int((read > lengths).sum()),
              misread_same_length=int((wrong.any(1) & (read == lengths)).sum()))
    ev["by_length"] = {int(k): float(wrong[lengths == k].any(1).mean()) for k in np.unique(lengths)}
    if theta.shape[1] == ys.shape[1]:  # one transformer per position: does window i hold digit i?
        side = xs.shape[-1]
        c = (thetas[..., 2] + 1) * side / 2  # (N, L, 2) true crops' centres, px
        inside = centres_inside(theta, np.concatenate([c, c], -1), side)
        ev["centre_in_window"] = float(inside[ys != NO_DIGIT].mean())
    return model, ckpt, ev, pred, theta


def surface_mix(pool: dict[str, Any]) -> str:
    """The pool's mix of surfaces where it is not the generator's (``number_pool --surfaces``), else ''."""
    mix = pool["request"].get("surfaces")
    if mix is None:
        return ""
    share = ", ".join(f"{kind} {q:g}" for kind, q in zip(number.SURFACE_KINDS, mix, strict=True))
    own = ", ".join(f"{kind} {q:g}" for kind, q in zip(number.SURFACE_KINDS, number.SURFACES, strict=True))
    return f", its surfaces {share} (validation and the held-out set keep the generator's: {own})"


def pool_surfaces_flag(pool: dict[str, Any]) -> str:
    """``--surfaces ...`` followed by a space where the pool's mix is not the generator's, else ''."""
    mix = pool["request"].get("surfaces")
    return "" if mix is None else "--surfaces " + " ".join(f"{q:g}" for q in mix) + " "


def montage_training(path: Path, pool: Path, n: int = 16) -> None:
    """Training photos from the pool as the model sees them, each digit's target crop drawn."""
    from PIL import Image, ImageDraw

    x, d, t = number_pool.load(pool)
    tiles = []
    for i in range(n):
        im = Image.fromarray(np.asarray(x[i])).convert("RGB")
        draw = ImageDraw.Draw(im)
        k = int((d[i] != NO_DIGIT).sum())
        for j in range(k):
            pts = [tuple(p) for p in corners_px(t[i, j], x.shape[-1])]
            draw.line(pts + [pts[0]], fill=COLOURS[j], width=2)
        draw.text((4, 2), "".join(map(str, d[i, :k])), fill=(40, 200, 255))
        tiles.append(im)
    tile_grid(tiles, 8).save(path)


@torch.no_grad()
def plot_boxes(path: Path, model: nn.Module, xs: np.ndarray, ys: np.ndarray, pred: np.ndarray, theta: np.ndarray,
               n_examples: int = 12) -> None:
    """Left: test photos with the line strip (white) and each digit transformer's window, and the crops.
    Right: every window's centre in the line's own coordinates over the test set, one colour per transformer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    model.eval()
    side = xs.shape[-1]
    n_t = theta.shape[1]
    # Photos of every length, in turn (the set is in length order 1..5 repeating).
    pick = list(range(n_examples))
    x = torch.from_numpy(xs[pick]).float()[:, None] / 255.0
    out = model(x)
    crops, t_line = out[3], out[4] if len(out) > 4 else None
    cols = 4
    rows = (n_examples + cols - 1) // cols
    fig = plt.figure(figsize=(3.2 * cols + 5, 3.3 * rows))
    grid = fig.add_gridspec(rows, cols + 2)
    for k, i in enumerate(pick):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.imshow(xs[i], cmap="gray", vmin=0, vmax=255)
        if t_line is not None:
            ax.add_patch(Polygon(corners_px(t_line[k].numpy(), side) - 0.5, closed=True, fill=False, lw=1,
                                 edgecolor="white", ls="--"))
        n_read = int((pred[i] != NO_DIGIT).sum())
        for t in range(min(n_t, max(n_read, 1))):
            ax.add_patch(Polygon(corners_px(theta[i, t], side) - 0.5, closed=True, fill=False, lw=1.5,
                                 edgecolor=np.array(COLOURS[t % len(COLOURS)]) / 255))
        strip = np.concatenate([crops[k, t, 0].numpy() for t in range(crops.shape[1])], axis=1)
        ax.imshow(strip, cmap="gray", extent=(0, 0.16 * side * crops.shape[1], side, 0.84 * side), aspect="auto")
        read = "".join(str(d) for d in pred[i] if d != NO_DIGIT)
        true = "".join(str(d) for d in ys[i] if d != NO_DIGIT)
        ok = read == true
        ax.set_title(f"read {read}" + ("" if ok else f" (true {true})"), fontsize=8, color="green" if ok else "red")
        ax.set(xlim=(0, side), ylim=(side, 0), xticks=[], yticks=[], aspect="equal")
    ax = fig.add_subplot(grid[:, cols:])
    if n_t > 1:
        # Each window's centre relative to the number's first and last windows: 0 = the first, 1 = the last.
        lengths = (pred != NO_DIGIT).sum(1)
        for t in range(n_t):
            keep = lengths > t
            c = theta[keep, t, :, 2]
            first, last = theta[keep, 0, :, 2], theta[keep, np.maximum(lengths[keep] - 1, 0), :, 2]
            span = np.linalg.norm(last - first, axis=1)
            along = np.where(span > 1e-6, ((c - first) * (last - first)).sum(1) / np.maximum(span, 1e-6) ** 2, 0)
            ax.scatter(along, lengths[keep] + (t - n_t / 2) * 0.08, s=3,
                       color=np.array(COLOURS[t % len(COLOURS)]) / 255, alpha=0.5, label=f"transformer {t}")
        ax.set(xlabel="window centre along the line (first digit 0, last 1)", ylabel="digits read",
               title=f"where each transformer looks, {len(pred):,} test photos")
        ax.legend(fontsize=7, markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_curves(path: Path, runs: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, history in runs.items():
        steps = [h["step"] for h in history]
        a1.plot(steps, [100 * h["val_number_error"] for h in history], marker=".", label=name)
        a2.plot(steps, [100 * h["val_digit_error"] for h in history], marker=".", label=name)
    a1.set(xlabel="step", ylabel="numbers wrong (%)", yscale="log", title="validation: whole numbers")
    a2.set(xlabel="step", ylabel="digits wrong (%)", yscale="log", title="validation: digits")
    for a in (a1, a2):
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def _iv(iv: list[float] | tuple[float, float]) -> str:
    return f"{100 * iv[0]:.2f}-{100 * iv[1]:.2f}"


def _weights(opts: dict[str, Any]) -> tuple[float, float, float]:
    """A run's localisation weight, true-crop floor and jitter (runs from before an option have none)."""
    return float(opts.get("loc_weight", 1.0)), float(opts.get("gt_floor", 0.0)), float(opts.get("gt_jitter", 0.0))


def recipe(opts: dict[str, Any]) -> str:
    """The training options that tell this model's runs apart, in words (for the table's rows)."""
    w, floor, jit = _weights(opts)
    crops = f"true crops fading to {floor:g}" + (f", jittered {jit:g}" if jit else "")
    evidence = "; length from the head and the crops" if opts.get("crop_length") else ""
    refine = "; crops refined by a second transformer" if opts.get("refine") else ""
    ema = f"; weights averaged (EMA {opts['ema']:g})" if opts.get("ema") else ""
    bf16 = "; steps under bfloat16 autocast" if opts.get("bf16") else ""
    reader = "; reader started from a pre-trained one (`stn-train-reader`)" if opts.get("init_reader") else ""
    return f"learning rate {opts['lr']:g}, localisation weight {w:g}, {crops}{evidence}{refine}{ema}{bf16}{reader}"


def reader_run(opts: dict[str, Any]) -> dict[str, Any] | None:
    """The pre-trained reader a run started from (``init_reader``): its command and time, from its folder."""
    if not opts.get("init_reader"):
        return None
    folder = Path(opts["init_reader"]).parent
    rtrain = json.loads((folder / "train.json").read_text())
    return {"run": str(folder), "command": rtrain["command"], "wall_time_s": round(rtrain["wall_time_s"], 1),
            "val_true_crop_error": rtrain.get("best_val_error")}


def loss_sentence(opts: dict[str, Any]) -> str:
    w, floor, jit = _weights(opts)
    crops = ("cross-entropy on the true crops fading from 1 to 0 over the first half" if not floor else
             f"cross-entropy on the true crops with a weight falling from 1 to {floor:g} over the first half and "
             "staying there")
    if jit:
        crops += (f", those crops missed at random as a localisation net misses (shift N(0, {jit:g}) half-sides, "
                  f"scale exp N(0, {0.8 * jit:.3g}), turn N(0, {jit:g}) rad; `number_train.jitter`)")
    if opts.get("crop_length"):
        ces = ("cross-entropy of each digit, of \"no digit\" on the crops past each number's end, and of the length "
               "(its logits the length head's plus the crops' evidence)")
        corners = ("each crop's corners, past the end the slots where the next digits would be "
                   "(`number_train.next_slots`);")
    else:
        ces, corners = "cross-entropy of the length and of each digit", "each crop's corners,"
    if opts.get("refine"):
        corners = corners.replace("each crop's corners", "each crop's corners, first and refined,", 1)
    ema = (f" Validation, the checkpoints and the export take an exponential moving average of the weights "
           f"(decay {opts['ema']:g}, `number_train.WeightEMA`)." if opts.get("ema") else "")
    return (f"Loss: {ces}, plus the generator's boxes as supervision of the localisation ({corners} the line's "
            "centre, height and angle, the line heat map" + (f"; weight {w:g}" if w != 1 else "")
            + f"), plus {crops} (`model.number_train`).{ema}")


def carried_runs(previous: dict[str, Any]) -> list[dict[str, Any]]:
    """A previous card's model and its other runs, as rows of ``other_runs`` (measured then, on the same fixed
    test set; marked ``carried``)."""
    t = previous["training"]
    return carried({"run": previous["run"], "command": previous["command"],
                    "val_number_error": previous["val_number_error"], "wall_time_s": previous["wall_time_s"],
                    "steps": t["steps"], "threads": t["threads"], "recipe": recipe(t),
                    **{k[len("test_"):]: v for k, v in previous.items()
                       if k.startswith("test_") and k not in ("test_error", "test_set")}}, previous)


def write(run: Path, baseline: Path | None, name: str | None = None,
          others: list[Path] | None = None, carry: Path | None = None, context: str = "",
          selection: str = "") -> dict[str, Any]:
    data = mnist.load_mnist(None)
    train = json.loads((run / "train.json").read_text())
    side = int(train["opts"]["input_size"])
    test = number.test_set(data, side)
    model, ckpt, ev, pred, theta = measure(run, test)
    assert isinstance(model, NumberSTN)
    base = None
    curves = {f"{train['arch']} (this model)": train["history"]}
    if baseline:
        btrain = json.loads((baseline / "train.json").read_text())
        bmodel, _, bev, _, _ = measure(baseline, test)
        base = {"run": str(baseline), "arch": btrain["arch"], "params": count_params(bmodel),
                "wall_time_s": round(btrain["wall_time_s"], 1), "command": btrain["command"],
                "model_config": read_checkpoint(baseline / "best.ckpt")["config"], **bev}
        curves[f"{btrain['arch']} (baseline)"] = btrain["history"]
    tried = []
    for other in others or []:  # other runs trained for this model: chosen between on validation
        otrain = json.loads((other / "train.json").read_text())
        _, _, oev, _, _ = measure(other, test)
        tried.append({"run": str(other), "command": otrain["command"],
                      "val_number_error": min(h["val_number_error"] for h in otrain["history"]),
                      "wall_time_s": round(otrain["wall_time_s"], 1), "steps": otrain["opts"]["steps"],
                      "threads": otrain["opts"]["threads"], "recipe": recipe(otrain["opts"]), **oev})
    previous = json.loads(carry.read_text()) if carry else None
    if previous:
        tried += carried_runs(previous)
        if previous.get("baseline") and not baseline:
            base = {**previous["baseline"], "carried": True}
    cfg = ckpt["config"]
    history = train["history"]
    best = min(history, key=lambda h: h["val_number_error"])
    pool = train["pool"]
    steps, batch = int(train["opts"]["steps"]), int(train["opts"]["batch_size"])
    card: dict[str, Any] = {
        "name": name or run.name, "run": str(run), "arch": cfg["arch"], "transform": cfg["transform"],
        "dataset": ckpt["data"]["dataset"], **{f"test_{k}": v for k, v in ev.items()},
        "test_error": ev["digit_error"],
        "test_set": f"{len(test[1]):,} photos drawn once by model.number.test_set (lengths 1-5 in turn, MNIST-test "
                    f"digits, the held-out fonts fonts-urw-base35, seed {number.TEST_SEED})",
        "val_number_error": best["val_number_error"], "val_digit_error": best["val_digit_error"],
        "best_step": best["step"], "steps": steps, "params": count_params(model),
        "wall_time_s": round(train["wall_time_s"], 1), "cpu_time_s": round(train["cpu_time_s"], 1),
        "hardware": train["hardware"], "command": train["command"], "training": train["opts"],
        "model_config": cfg, "history": history, "baseline": base, "other_runs": tried, "goals": GOALS,
        "carried_from": str(carry) if carry else None, "context": context, "selection": selection, "pool": pool,
        "reader": reader_run(train["opts"]),
        "data": {"source": "MNIST (LeCun, Cortes, Burges) and Debian's fonts",
                 "checksums_sha256": ckpt["data"]["checksums"],
                 "train": f"a pool of {pool['request']['n']:,} photos rendered once (model.number_pool, seed "
                          f"{pool['request']['seed']}, {pool['render_s'] / 60:.1f} min on {pool['workers']} "
                          f"process{'es' if pool['workers'] > 1 else ''}) from MNIST-train digits 0-54,999 and the "
                          f"training fonts{surface_mix(pool)}; {steps:,} steps "
                          f"of {batch} draw each photo {steps * batch / pool['request']['n']:.1f} times on average",
                 "validation": f"{train['opts']['val_size']:,} photos of MNIST-train digits 55,000-59,999 and the "
                               f"training fonts, drawn once (seed {VAL_SEED}; model selection)"},
        "generator": generator_table(number),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    montage_training(run / "training_photos.png", Path(train["opts"]["pool"]))
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
    tr = card["training"]
    refined = ", each refined by a second" if card["model_config"].get("refine") else ""
    rows = [(f"this model: line transformer, then 5 affine digit transformers in parallel{refined}", card,
             card["params"], card["wall_time_s"])]
    if base:
        rows.append((f"baseline: {base['arch']}, the same classifier on the whole photo at "
                     f"{base['model_config']['output_size'][0]} px", {f"test_{k}": v for k, v in base.items()},
                     base["params"], base["wall_time_s"]))
    lines = [
        f"# Model card: {card['name']}", "",
        "Reads a number of 1-5 digits in a phone photo, handwritten or printed, on paper or a board, the line "
        "turned up to ±15° and 35-85 % of the photo's width (the house-number use). Three kinds of spatial "
        "transformer (`model/number_net.py`): a line transformer localised on a 64 px view finds the number and "
        "samples a 32x160 strip along it from the letterboxed 256 px photo; five affine digit transformers, "
        "localised on the strip, each sample one digit's 32 px crop from the full 256 px input"
        + ("; five more, one per position, each refine their crop from a 32 px view around it, 1.5 times its "
           "side and also sampled from the full input (`number_net.RefineLoc`)"
           if card["model_config"].get("refine") else "")
        + "; a shared reader classifies the crops and a length head says how many digits there are"
        + (", its logits plus the crops' evidence (the reader's probability of a digit at each position below "
           "the length and of \"no digit\" from there on, `number_net.crop_evidence`)"
           if card["model_config"].get("crop_length") else "")
        + ". Every transformer's parameters and samples are outputs of the graph (`theta`, `rectified`, "
        "`line_theta`, `line`" + (", `coarse_theta`, `context`" if card["model_config"].get("refine") else "")
        + ").", "",
        f"## Results on the held-out set ({card['test_set']})", "",
        "| model | numbers wrong (95 % interval) | digits wrong (95 % interval) | parameters | training time |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, m, p, t in rows:
        lines.append(f"| {label} | {_pct(m['test_number_error'])} ({_iv(m['test_number_interval'])}) | "
                     f"{_pct(m['test_digit_error'])} ({_iv(m['test_digit_interval'])}) | {p:,} | {t / 60:.1f} min |")
    for o in card.get("other_runs") or []:
        how = f"; {o['recipe']}" if o.get("recipe") else ""
        lines.append(f"| another run of this model{' (carried)' if o.get('carried') else ''}: {o['steps']:,} steps "
                     f"on {o['threads']} thread{'s' if o['threads'] > 1 else ''}{how} (validation "
                     f"{_pct(o['val_number_error'])} of numbers) | "
                     f"{_pct(o['number_error'])} ({_iv(o['number_interval'])}) | {_pct(o['digit_error'])} "
                     f"({_iv(o['digit_interval'])}) | | {o['wall_time_s'] / 60:.1f} min |")
    goal_n, goal_d = card["goals"]["number_error"], card["goals"]["digit_error"]
    met_n = card["test_number_error"] <= goal_n
    met_d = card["test_digit_error"] <= goal_d
    lines += [
        "",
        f"{card['test_numbers_wrong']} of {card['test_numbers']:,} numbers and {card['test_digits_wrong']} of "
        f"{card['test_digits']:,} digits wrong (a digit misread, missed or added counts). Goals (the numbers "
        f"issue): at most {_pct(goal_n)} of numbers ({'met' if met_n else '**not met**'}), "
        f"{_pct(goal_d)} of digits ({'met' if met_d else '**not met**'}).", "",
        f"Of the {card['test_numbers_wrong']} numbers misread, {card['test_too_short']} were read a digit or more "
        f"short, {card['test_too_long']} too long, and {card['test_misread_same_length']} at the right length with "
        "a digit misread.", "",
        *([card.get("selection") or "Of the runs trained for this model, the one bundled is the one with the lowest "
           "validation error; the test set chose nothing.", ""] if card.get("other_runs") else []),
        *([f"Rows marked carried (and the baseline) are copied from the previous card, `{card['carried_from']}`: "
           "measured then, on this same fixed test set; their run folders are not kept.", ""]
          if card.get("carried_from") else []),
        "Numbers wrong by length: " + ", ".join(f"{k} digit{'s' if int(k) > 1 else ''} {_pct(v)}"
                                                for k, v in card["test_by_length"].items())
        + (" (baseline: " + ", ".join(f"{k}: {_pct(v)}" for k, v in base["by_length"].items()) + ")"
           if base else "") + ".",
    ]
    if card.get("test_centre_in_window") is not None:
        lines += ["", f"Where the transformers look: the centre of digit i's true crop lies inside transformer i's "
                  f"window for {_pct(card['test_centre_in_window'])} of the test digits."]
    lines += [
        "", "![where each transformer looks](boxes.png)", "",
        "Left: test photos with the line strip (dashed) and the windows of the digit transformers that read a "
        "digit (red: digit 0, green: 1, blue: 2, yellow: 3, violet: 4), and at the bottom the five crops the "
        "reader saw. Right: where each transformer's window sits along the line, over the whole test set: "
        "transformer i takes the i-th digit of every number, whatever its length.", "",
        "![training photos](training_photos.png)", "",
        "Training photos as the model sees them (letterboxed 256x256), with each digit's target crop.", "",
        "![training curves](curves.png)", "",
        "## Training", "",
        f"- Data: {card['data']['train']}. Validation: {card['data']['validation']}. MNIST-test is read only for "
        "the held-out set above.",
        f"- {loss_sentence(tr)}",
        f"- {card['steps']:,} steps of {tr['batch_size']} (AdamW, one-cycle learning rate {tr['lr']}"
        + (f", each under {'CUDA' if hw.get('gpu') else 'CPU'} autocast to bfloat16: convolutions and matrix "
           "products; weights, optimiser, validation and test in float32" if tr.get("bf16") else "") + "), best "
        f"validation at step {card['best_step']:,} ({_pct(card['val_number_error'])} of numbers, "
        f"{_pct(card['val_digit_error'])} of digits).",
        f"- {card['wall_time_s'] / 60:.1f} min on "
        + (f"{hw['gpu']} with " if hw.get("gpu") else "")
        + f"{hw.get('cpu', 'a CPU')}, {hw['torch_threads']} torch thread"
        f"{'s' if hw['torch_threads'] > 1 else ''}, torch {hw['torch']}, after the pool was rendered ("
        f"{card['pool']['render_s'] / 60:.1f} min)" + (f"; {card['context']}" if card.get("context") else "") + ".",
        *([f"- The reader started from a pre-trained one (`{card['reader']['command']}`, "
           f"{card['reader']['wall_time_s'] / 60:.1f} min on the same machine, its ten digit classes; the \"no digit\" "
           f"row from its own initialisation; `number_train.init_reader`): "
           f"{(card['wall_time_s'] + card['reader']['wall_time_s']) / 60:.1f} min of training in all."]
          if card.get("reader") else []),
        "",
        "Generator (`model/number.py`, built on `model/photo.py`):", "", "```", card["generator"].rstrip(), "```", "",
        "Reproduce:", "", "```",
        f"python -m model.number_pool --n {card['pool']['request']['n']} --workers {card['pool']['workers']} "
        f"{pool_surfaces_flag(card['pool'])}--out {tr['pool']}",
        *([card["reader"]["command"]] if card.get("reader") else []),
        card["command"],
    ]
    if base:
        lines.append(base["command"])
    lines += [o["command"] for o in card.get("other_runs") or []]
    lines += [f"python -m model.number_card {card['run']} --name {card['name']}{card_flags(card)}", "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.number_card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--baseline", type=Path, help="the baseline's run folder, for the side-by-side")
    p.add_argument("--name", help="the model's name on its card (default: the run folder's)")
    p.add_argument("--other", type=Path, action="append", default=[],
                   help="another run trained for this model (chosen between on validation), for the table")
    p.add_argument("--carry", type=Path, help="a previous card.json: its model, other runs and baseline join the "
                   "table as carried rows (for runs whose folders are gone)")
    p.add_argument("--context", default="", help="how the run shared the machine, for the card's training section")
    p.add_argument("--selection", default="", help="how the bundled run was chosen, where the runs' own validation "
                   "figures do not say it (default: the lowest validation error)")
    a = p.parse_args(argv)
    card = write(a.run, a.baseline, a.name, a.other, a.carry, a.context, a.selection)
    print(json.dumps({k: card[k] for k in ("name", "test_number_error", "test_digit_error")}))


if __name__ == "__main__":
    main()
