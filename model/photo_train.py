"""``stn-train-photo``: train the photo model (``model.photo_net``) on photos drawn fresh every step.

    stn-train-photo --config model/configs/photo.json
    stn-train-photo --config model/configs/photo.json --steps-per-epoch 20 --epochs 2 --out runs/photo_smoke
    stn-train-photo --config model/configs/photo_r.json   # classifier from stn-train-reader (model.photo_reader)

Data: ``model.photo.PhotoGenerator`` over the first 55,000 MNIST-train digits and the training fonts,
rendered by ``workers`` processes (each its own seed stream), decoded and letterboxed as the service does.
Model selection: the error on a fixed validation set of photos of the last 5,000 MNIST-train digits (its
own seed, all conditions). MNIST-test is never read here; held-out photo sets are ``bench/photo_eval.py``'s.

Loss: cross-entropy on the crop the transformer chose, plus cross-entropy on the generator's true crop
(weight falling from 1 to 0 over the first half, so the classifier learns while localisation is still
poor), plus localisation terms against the generator's box: the crop's corners (relative to its size),
the coarse stage's centre and log-size, and a cross-entropy of its heat map against the true cell.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model import data as mnist
from model.checkpoint import read_checkpoint, save_checkpoint
from model.nets import build_model, count_params, full_config
from model.photo import TRAIN_FONT_DIRS, PhotoGenerator, example, fixed_set, font_files
from model.photo_net import PhotoSTN
from model.train import hardware, run_trainer

log = logging.getLogger("stn-train-photo")

VAL_SIZE = 5000
VAL_SEED = 7_000_001
OPTS: dict[str, Any] = {
    "epochs": 14, "steps_per_epoch": 400, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4,
    "label_smoothing": 0.05, "loc_weight": 1.0, "seed": 0, "threads": 1, "workers": 2, "val_photos": 1600,
    "input_size": 256, "output_size": 32, "out": "runs/photo",
    # Fine-tuning: start from a checkpoint's weights (empty: from scratch); the share of pen strokes drawn as
    # scribbles (model.photo.PhotoGenerator).
    "init": "", "scribbles": 0.0,
    # The classifier's weights from a reader pre-trained on synthetic crops (``stn-train-reader``, its
    # best.pt; empty: none), and its learning rate as a share of the rest's.
    "init_classifier": "", "cls_lr_scale": 1.0,
    # No max-filter of 5 on 28-px MNIST digits, in training and validation photos (model.photo.stroke).
    "legible_pen": False,
    # The true crop's cross-entropy weight at the first step of a run from scratch (it falls to 0 over the
    # first half); 0 leaves the term out, as with a classifier held at the reader's weights (cls_lr_scale 0),
    # where it would train nothing.
    "true_crop_weight": 1.0,
}
OUT_CORNERS = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])  # (4, 3)


def digits(data: dict[str, Any], part: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = data["train_images"], data["train_labels"]
    return (x[:-VAL_SIZE], y[:-VAL_SIZE]) if part == "train" else (x[-VAL_SIZE:], y[-VAL_SIZE:])


class Photos(IterableDataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, side: int, seed: int, epoch: int,
                 scribbles: float = 0.0, legible_pen: bool = False) -> None:
        self.images, self.labels, self.side, self.seed, self.epoch = images, labels, side, seed, epoch
        self.scribbles, self.legible_pen = scribbles, legible_pen

    def __iter__(self) -> Any:
        info = get_worker_info()
        wid = info.id if info else 0
        rng = np.random.default_rng([self.seed, self.epoch, wid])
        gen = PhotoGenerator(self.images, self.labels, font_files(TRAIN_FONT_DIRS), self.scribbles,
                             self.legible_pen)
        while True:
            x, y, t = example(gen, rng, self.side)
            yield torch.from_numpy(x)[None], y, torch.from_numpy(t)


def val_set(data: dict[str, Any], n: int, side: int, legible_pen: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The fixed validation photos (last 5,000 MNIST-train digits, training fonts, its own seed), uint8."""
    images, labels = digits(data, "val")
    xs, ys, ts = fixed_set(images, labels, font_files(TRAIN_FONT_DIRS), VAL_SEED, n, side, legible_pen)
    return torch.from_numpy(xs)[:, None], torch.from_numpy(ys), torch.from_numpy(ts)


def corners(theta: Tensor) -> Tensor:
    return OUT_CORNERS.to(theta) @ theta.transpose(1, 2)  # (B, 4, 2)


def half_side(theta_gt: Tensor) -> Tensor:
    """(B,) half-side of the true (square) crop, normalised: sqrt(det) of its linear part."""
    return torch.linalg.det(theta_gt[:, :, :2]).clamp_min(1e-6).sqrt()


def corner_error(theta: Tensor, theta_gt: Tensor) -> Tensor:
    """(B,) mean distance of the crop's corners from the true crop's, in units of its half-side."""
    return (corners(theta) - corners(theta_gt)).norm(dim=2).mean(1) / half_side(theta_gt)


def losses(model: PhotoSTN, x: Tensor, y: Tensor, theta_gt: Tensor, opts: dict[str, Any],
           gt_weight: float) -> tuple[Tensor, dict[str, float], Tensor]:
    heat, centre, log_a, theta = model.locate(x)
    logits, _ = model.classify(x, theta)
    ce = F.cross_entropy(logits, y, label_smoothing=opts["label_smoothing"])
    a_gt = half_side(theta_gt)
    c_gt = theta_gt[:, :, 2]
    corner = corner_error(theta, theta_gt).mean()
    coarse = ((centre - c_gt).norm(dim=1) / a_gt).mean() + (log_a - a_gt.log()).abs().mean()
    n = int(math.isqrt(heat.shape[1]))
    cell = ((c_gt + 1) / 2 * n).long().clamp(0, n - 1)
    heat_ce = F.cross_entropy(heat, cell[:, 1] * n + cell[:, 0])
    loss = ce + opts["loc_weight"] * (corner + coarse + heat_ce)
    parts = {"ce": ce.item(), "corner": corner.item(), "coarse": coarse.item()}
    if gt_weight > 0:
        logits_gt, _ = model.classify(x, theta_gt)
        ce_gt = F.cross_entropy(logits_gt, y, label_smoothing=opts["label_smoothing"])
        loss = loss + gt_weight * ce_gt
        parts["ce_gt"] = ce_gt.item()
    return loss, parts, logits


@torch.no_grad()
def evaluate(model: PhotoSTN, val: tuple[Tensor, Tensor, Tensor], batch: int = 200) -> dict[str, float]:
    model.eval()
    wrong, dist = 0, 0.0
    x8, y, t = val
    for i in range(0, len(y), batch):
        x = x8[i:i + batch].float() / 255.0
        logits, theta, _ = model(x)
        wrong += int((logits.argmax(1) != y[i:i + batch]).sum())
        dist += float(corner_error(theta, t[i:i + batch]).sum())
    model.train()
    return {"val_error": wrong / len(y), "val_corner": dist / len(y)}


def train(opts: dict[str, Any], command: str) -> dict[str, Any]:
    torch.set_num_threads(int(opts["threads"]))
    torch.manual_seed(opts["seed"])
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    data = mnist.load_mnist(None)
    images, labels = digits(data, "train")
    side = int(opts["input_size"])
    cfg = full_config({"arch": "photo", "transform": "affine", "input_size": [side, side],
                       "output_size": [opts["output_size"]] * 2, "mean": 0.0, "std": 1.0})
    model = build_model(cfg)
    assert isinstance(model, PhotoSTN)
    if opts["init"]:
        model.load_state_dict(read_checkpoint(opts["init"])["state_dict"])
        log.info("weights from %s", opts["init"])
    if opts["init_classifier"]:
        model.classifier.load_state_dict(torch.load(opts["init_classifier"], map_location="cpu")["state_dict"])
        log.info("classifier weights from %s", opts["init_classifier"])
    t0 = time.perf_counter()
    val = val_set(data, int(opts["val_photos"]), side, bool(opts["legible_pen"]))
    log.info("validation set: %d photos in %.0fs", len(val[1]), time.perf_counter() - t0)
    cls_params = list(model.classifier.parameters())
    cls_ids = {id(p) for p in cls_params}
    groups = [{"params": [p for p in model.parameters() if id(p) not in cls_ids], "lr": opts["lr"]},
              {"params": cls_params, "lr": opts["lr"] * opts["cls_lr_scale"]}]
    opt = torch.optim.AdamW(groups, lr=opts["lr"], weight_decay=opts["weight_decay"])
    total = opts["epochs"] * opts["steps_per_epoch"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=total,
                                                pct_start=0.15)
    data_meta = {"dataset": "photo", "labels": mnist.LABELS, "mean": 0.0, "std": 1.0, "polarity": "any",
                 "input_size": list(cfg.input_size), "resize": "letterbox", "checksums": data["checksums"]}
    history: list[dict[str, float]] = []
    best = math.inf
    wall0, cpu0 = time.perf_counter(), time.process_time()
    step = 0
    for epoch in range(opts["epochs"]):
        loader = DataLoader(Photos(images, labels, side, opts["seed"], epoch, opts["scribbles"],
                                   bool(opts["legible_pen"])),
                            batch_size=opts["batch_size"],
                            num_workers=opts["workers"], persistent_workers=False, prefetch_factor=4
                            if opts["workers"] else None)
        sums: dict[str, float] = {}
        correct = seen = 0
        for _, (x, y, t) in zip(range(opts["steps_per_epoch"]), loader, strict=False):
            # From scratch, the true crop's cross-entropy fades out over the first half; a fine-tuning run
            # (init) starts from a classifier that has long learned it.
            gt_weight = 0.0 if opts["init"] else opts["true_crop_weight"] * max(0.0, 1.0 - step / (0.5 * total))
            loss, parts, logits = losses(model, x, y, t, opts, gt_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        del loader
        ev = evaluate(model, val)
        wall = time.perf_counter() - wall0
        row = {"epoch": epoch + 1, "train_error": 1 - correct / seen, "wall_time_s": wall,
               **{f"train_{k}": v / opts["steps_per_epoch"] for k, v in sums.items()}, **ev}
        history.append(row)
        log.info("epoch %d/%d  train err %.2f%%  val err %.2f%%  val corner %.3f  ce %.3f corner %.3f  (%.0fs)",
                 epoch + 1, opts["epochs"], 100 * row["train_error"], 100 * ev["val_error"], ev["val_corner"],
                 row["train_ce"], row["train_corner"], wall)
        metrics = {"val_error": ev["val_error"], "val_corner": ev["val_corner"], "epoch": epoch + 1,
                   "test_error": None}
        if ev["val_error"] < best:
            best = ev["val_error"]
            save_checkpoint(out / "best.ckpt", model, cfg, data_meta, metrics)
        save_checkpoint(out / "last.ckpt", model, cfg, data_meta, metrics)
        (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {"name": "photo", "params": count_params(model), "best_val_error": best, "history": history,
               "opts": opts, "command": command, "wall_time_s": time.perf_counter() - wall0,
               "cpu_time_s_main": time.process_time() - cpu0, "hardware": hardware(torch.device("cpu"))}
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    run_trainer("stn-train-photo", __doc__, OPTS, train, ("name", "params", "best_val_error", "wall_time_s"), argv)


if __name__ == "__main__":
    main()
