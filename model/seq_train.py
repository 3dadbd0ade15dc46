"""``stn-train-seq``: train a sequence model (``model.seq_net``) on images drawn fresh every step.

    stn-train-seq --config model/configs/seq3.json
    stn-train-seq --config model/configs/seq3_cnn.json
    stn-train-seq --config model/configs/seq3.json --steps 50 --val-every 25 --out runs/seq3_smoke

Data (``data``): ``"seq3"`` is the MNIST-sequence benchmark of Sønderby et al. 2015 (``model.sequence``): three
digits from MNIST-train 0-54,999 on a cluttered 100x100 canvas, drawn fresh every step. Model selection: the
per-digit error on its fixed validation set (MNIST-train 55,000-59,999, its own seed). MNIST-test is read only
once, at the end, for the fixed test set the card reports.

Loss: cross-entropy of the length and of every position (``model.multi.sequence_loss``). By default labels
only, no boxes: the transformers learn where to look from the reader's error alone, as in Sønderby et al.
With ``box_weight`` = w > 0 the generator's boxes supervise the windows too: w times the mean absolute
difference between transformer i's window (its x and y half-sizes and centre, in the input's normalised
units) and digit i's 28x28 frame (``window_targets``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from model import data as mnist
from model import sequence
from model.checkpoint import read_checkpoint, save_checkpoint
from model.multi import NO_DIGIT, best_lengths, sequence_loss, sequence_targets
from model.nets import ModelConfig, build_model, count_params, full_config
from model.train import hardware, run_trainer

log = logging.getLogger("stn-train-seq")

OPTS: dict[str, Any] = {
    "data": "seq3", "arch": "seq", "transform": "scale_translation", "output_size": [28, 28],
    "loc_channels": [16, 32, 64], "loc_hidden": 128, "cls_channels": [32, 64, 128], "cls_hidden": 256,
    "dropout": 0.3, "start_scale": [0.3, 1.0], "view_pool": 2,
    "steps": 8000, "batch_size": 64, "lr": 2e-3, "loc_lr_scale": 0.3, "weight_decay": 1e-4,
    "seed": 0, "threads": 1, "val_every": 500, "val_size": 3000, "eval_batch_size": 250,
    "test_size": sequence.TEST_SIZE, "out": "runs/seq3", "box_weight": 0.0,
}
DATASETS = ("seq3",)


def model_config(opts: dict[str, Any]) -> ModelConfig:
    if opts["data"] not in DATASETS:
        raise SystemExit(f"unknown data {opts['data']!r}; choose {', '.join(DATASETS)}")
    side = sequence.CANVAS
    return full_config({
        "arch": opts["arch"], "transform": opts["transform"], "input_size": [side, side],
        "output_size": opts["output_size"], "loc_channels": opts["loc_channels"], "loc_hidden": opts["loc_hidden"],
        "cls_channels": opts["cls_channels"], "cls_hidden": opts["cls_hidden"], "dropout": opts["dropout"],
        "start_scale": opts["start_scale"], "max_len": sequence.N_DIGITS, "mean": mnist.MEAN, "std": mnist.STD,
        "view_pool": opts["view_pool"],
    })


def batches(data: dict[str, np.ndarray], seed: int,
            batch: int) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Fresh training batches forever: pixel-unit images (B, 1, 100, 100), lengths (B,), digits (B, L), and
    the digits' boxes (B, L, 4) (x0, y0, x1, y1 canvas pixels)."""
    images, labels = data["train_images"][:55_000], data["train_labels"][:55_000]
    rng = np.random.default_rng([seed, 1])
    while True:
        xs = np.empty((batch, 1, sequence.CANVAS, sequence.CANVAS), np.float32)
        boxes = np.empty((batch, sequence.N_DIGITS, 4), np.float32)
        ys = []
        for i in range(batch):
            s = sequence.render(rng, images, labels)
            xs[i, 0] = s.image
            boxes[i] = s.boxes
            ys.append(s.labels.tolist())
        lengths, digits = sequence_targets(ys, sequence.N_DIGITS)
        yield torch.from_numpy(xs), lengths, digits, torch.from_numpy(boxes)


def window_targets(boxes: Tensor, side: int) -> Tensor:
    """Boxes (..., 4) in pixels of a ``side`` x ``side`` input -> the window that shows each exactly, as
    (..., 4): x half-size, y half-size, x centre, y centre, in normalised units (``align_corners=False``:
    the input spans [-1, 1])."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x1 - x0) / side, (y1 - y0) / side, (x0 + x1) / side - 1, (y0 + y1) / side - 1], -1)


def windows(theta: Tensor) -> Tensor:
    """Scale + translation thetas (..., 2, 3) -> their windows (..., 4) in ``window_targets``' order: x
    half-size, y half-size, x centre, y centre."""
    return torch.stack([theta[..., 0, 0], theta[..., 1, 1], theta[..., 0, 2], theta[..., 1, 2]], -1)


def window_loss(theta: Tensor, boxes: Tensor, side: int) -> Tensor:
    """Mean absolute difference between the windows of ``theta`` (B, L, 2, 3) and ``window_targets``."""
    return (windows(theta) - window_targets(boxes, side)).abs().mean()


@torch.no_grad()
def predict(model: nn.Module, x8: np.ndarray, batch: int, mean: float = mnist.MEAN,
            std: float = mnist.STD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> predicted lengths (N,), digits (N, L) (``NO_DIGIT`` past the length), theta (N, T, 2, 3) from 8-bit
    images normalised by ``mean`` and ``std``, in eval mode; the model is left in the mode it came in (a
    train-mode pass would move its batch norms' stats)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lens, digs, thetas = [], [], []
    for i in range(0, len(x8), batch):
        x = (torch.from_numpy(np.asarray(x8[i:i + batch])).to(device).float()[:, None] / 255.0 - mean) / std
        length_logits, digit_logits, theta, *_ = model(x)
        n = best_lengths(length_logits, digit_logits)
        d = digit_logits[..., :NO_DIGIT].argmax(-1)
        d[torch.arange(d.shape[1], device=d.device)[None] >= n[:, None]] = NO_DIGIT
        lens.append(n.cpu().numpy())
        digs.append(d.cpu().numpy())
        thetas.append(theta.float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(lens), np.concatenate(digs), np.concatenate(thetas)


def errors(pred_digits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Per-digit error (position i against digit i) and whole-sequence error."""
    wrong = pred_digits[:, : labels.shape[1]] != labels
    return {"digit_error": float(wrong.mean()), "sequence_error": float(wrong.any(1).mean())}


def param_groups(model: nn.Module, opts: dict[str, Any]) -> list[dict[str, Any]]:
    loc = [p for n, p in model.named_parameters() if n.startswith(("trunk.", "heads."))]
    rest = [p for n, p in model.named_parameters() if not n.startswith(("trunk.", "heads."))]
    groups = [{"params": rest, "lr": opts["lr"]}]
    if loc and opts["arch"] == "seq":
        groups.append({"params": loc, "lr": opts["lr"] * opts["loc_lr_scale"]})
    elif loc:
        groups[0]["params"] = rest + loc
    return groups


def train(opts: dict[str, Any], command: str,
          on_val: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    torch.set_num_threads(int(opts["threads"]))
    torch.manual_seed(opts["seed"])
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    data = mnist.load_mnist(None)
    cfg = model_config(opts)
    model = build_model(cfg)
    val_x, val_y, _ = sequence.val_set(data, int(opts["val_size"]))
    opt = torch.optim.AdamW(param_groups(model, opts), weight_decay=opts["weight_decay"])
    total = int(opts["steps"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                total_steps=total, pct_start=0.1)
    data_meta = {"dataset": f"mnist-sequence-{opts['data']}", "labels": mnist.LABELS, "mean": mnist.MEAN,
                 "std": mnist.STD, "polarity": "white_on_black", "input_size": list(cfg.input_size),
                 # The service fits an upload into the square input unstretched (the canvas is square).
                 "resize": "letterbox", "checksums": data["checksums"]}
    log.info("%s %s: %d parameters, %d steps of %d", opts["data"], opts["arch"], count_params(model), total,
             opts["batch_size"])
    history: list[dict[str, Any]] = []
    best = math.inf
    wall0, cpu0 = time.perf_counter(), time.process_time()
    loss_sum, wrong, seen = 0.0, 0, 0
    model.train()
    box_weight = float(opts["box_weight"])
    if box_weight and opts["arch"] != "seq":
        raise SystemExit("box_weight supervises the transformers' windows: it needs arch 'seq'")
    for step, (x, lengths, digits, boxes) in enumerate(batches(data, opts["seed"], opts["batch_size"]), start=1):
        length_logits, digit_logits, theta, _ = model((x - mnist.MEAN) / mnist.STD)
        loss = sequence_loss(length_logits, digit_logits, lengths, digits)
        if box_weight:
            loss = loss + box_weight * window_loss(theta, boxes, sequence.CANVAS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        loss_sum += float(loss.detach())
        wrong += int((digit_logits.argmax(-1) != digits).sum())
        seen += digits.numel()
        if step % opts["val_every"] == 0 or step == total:
            _, pred, theta = predict(model, val_x, opts["eval_batch_size"])
            ev = errors(pred, val_y)
            row = {"step": step, "train_loss": loss_sum / opts["val_every"], "train_digit_error": wrong / seen,
                   "val_digit_error": ev["digit_error"], "val_sequence_error": ev["sequence_error"],
                   "wall_time_s": time.perf_counter() - wall0,
                   "val_window_centres": theta[:, :, :, 2].mean(0).round(3).tolist()}
            history.append(row)
            log.info("step %d/%d  loss %.4f  train digit err %.2f%%  val digit err %.2f%%  seq err %.2f%%  (%.0fs)",
                     step, total, row["train_loss"], 100 * row["train_digit_error"], 100 * ev["digit_error"],
                     100 * ev["sequence_error"], row["wall_time_s"])
            metrics = {"val_digit_error": ev["digit_error"], "val_sequence_error": ev["sequence_error"],
                       "step": step, "test_digit_error": None}
            if ev["digit_error"] < best:
                best = ev["digit_error"]
                save_checkpoint(out / "best.ckpt", model, cfg, data_meta, metrics)
            save_checkpoint(out / "last.ckpt", model, cfg, data_meta, metrics)
            (out / "history.json").write_text(json.dumps(history, indent=1))
            if on_val:
                on_val(row)
            loss_sum, wrong, seen = 0.0, 0, 0
        if step == total:
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    best_ckpt = read_checkpoint(out / "best.ckpt")
    model.load_state_dict(best_ckpt["state_dict"])
    test_x, test_y, _ = sequence.test_set(data, int(opts["test_size"]))
    _, pred, _ = predict(model, test_x, opts["eval_batch_size"])
    test = errors(pred, test_y)
    log.info("test (fixed, MNIST-test, %d sequences): digit err %.2f%%  sequence err %.2f%%", len(test_y),
             100 * test["digit_error"], 100 * test["sequence_error"])
    metrics = {**best_ckpt["metrics"], "test_digit_error": test["digit_error"],
               "test_sequence_error": test["sequence_error"], "test_size": len(test_y)}
    summary = {"name": out.name, "data": opts["data"], "arch": opts["arch"], "params": count_params(model),
               "metrics": metrics, "history": history, "opts": opts, "command": command, "wall_time_s": wall,
               "cpu_time_s": cpu, "hardware": hardware(torch.device("cpu"))}
    save_checkpoint(out / "best.ckpt", model, cfg, data_meta, metrics, card=summary)
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    run_trainer("stn-train-seq", __doc__, OPTS, train, ("name", "params", "metrics", "wall_time_s"), argv)


if __name__ == "__main__":
    main()
