"""``stn-train-number``: train a number-photo model (``model.number_net``) from the rendered pool.

    python -m model.number_pool --n 120000 --workers 2 --out runs/number_pool
    stn-train-number --config model/configs/number.json
    stn-train-number --config model/configs/number_cnn.json
    stn-train-number --config model/configs/number.json --steps 40 --val-every 20 --out runs/number_smoke

Data: the pool (``model.number_pool``: photos of 1-5 digit numbers from ``model.number.NumberGenerator`` over
MNIST-train 0-54,999 and the training fonts, decoded and letterboxed as the service does), batches drawn
uniformly from it. Model selection: the whole-number error on a fixed validation set (MNIST-train
55,000-59,999, training fonts, its own seed). MNIST-test is read once, at the end, for the held-out set
(``model.number.test_set``: MNIST-test digits, the held-out fonts, its own seed) that the card reports.

Loss (arch ``number``): cross-entropy of the length and of each digit the number has, plus localisation terms
against the generator's boxes: each digit crop's corners (relative to its size), the line's centre, height
and angle, and a cross-entropy of the line heat map against the true cell; plus cross-entropy on the true
crops with a weight falling from 1 to 0 over the first half (so the reader learns while localisation is
still poor); ``gt_floor`` keeps that weight from falling below it (the reader then reads the true crops as
well as its own all through, 18 % more time a step here), and ``gt_jitter`` misses the true crops at random as
a localisation net misses (``jitter``). With ``crop_length`` (the length logits take the crops' evidence,
``model.number_net.crop_evidence``) every position is placed and read: past a number's end the digit
transformers are pulled to where its next digits would be (``next_slots``) and the reader learns "no digit"
there; the length's cross-entropy is of the combined logits. With ``refine`` (a second digit transformer per
position, ``model.number_net.RefineLoc``) both the first crops and the refined ones are held to the true
crops. With ``ema`` (a decay, e.g. 0.998) validation, the checkpoints and the export take an exponential
moving average of the weights (``WeightEMA``), not the last step's. With ``bf16`` the training steps run under
CPU autocast to bfloat16 (convolutions and matrix products; the weights, the optimiser and every validation
and test pass stay float32): 1.6 times the steps a minute on this machine's AVX512-BF16 cores. The baseline
(``numbercnn``) has only the labels: the length and the five positions, "no digit" past the end
(``model.multi.sequence_loss``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model import data as mnist
from model import number, number_pool, seq_train
from model.checkpoint import read_checkpoint, save_checkpoint
from model.multi import NO_DIGIT, sequence_loss
from model.nets import ModelConfig, build_model, count_params, full_config
from model.number_net import LINE_PER_CROP, NumberSTN
from model.photo import TRAIN_FONT_DIRS, font_files
from model.photo_train import corner_error
from model.train import hardware, pick_device, run_trainer

log = logging.getLogger("stn-train-number")

VAL_SEED = 7_000_011
OPTS: dict[str, Any] = {
    "arch": "number", "input_size": 256, "output_size": [32, 32], "loc_hidden": 256,
    "cls_channels": [32, 64, 128], "cls_hidden": 256, "dropout": 0.3,
    "steps": 12000, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "label_smoothing": 0.05,
    "loc_weight": 1.0, "crop_length": False, "refine": False, "ema": 0.0, "bf16": False, "gt_floor": 0.0,
    "gt_jitter": 0.0, "seed": 0, "threads": 1,
    # cpu (every run so far), cuda or auto (model.train.pick_device); the pool is read on the CPU and each
    # batch moved to the device. The CUDA path is written and has never run on a GPU here.
    "device": "cpu",
    # A pre-trained reader (``stn-train-reader``'s best.pt, ten digit classes; empty: none): the number
    # reader starts from its weights, its "no digit" row from the layer's own initialisation.
    "init_reader": "",
    "val_every": 500, "val_size": 1000, "eval_batch_size": 100,
    "test_size": number.TEST_NUMBERS, "pool": "runs/number_pool", "pool_size": 120_000, "pool_workers": 2,
    # The pool's mix of plain, ruled, squared paper and board (the generator's, number.SURFACES, unless a
    # config gives another); validation and the held-out set keep the generator's mix.
    "pool_surfaces": list(number.SURFACES),
    "out": "runs/number",
}
ARCHS = ("number", "numbercnn")


def model_config(opts: dict[str, Any]) -> ModelConfig:
    if opts["arch"] not in ARCHS:
        raise SystemExit(f"unknown arch {opts['arch']!r}; choose {', '.join(ARCHS)}")
    side = int(opts["input_size"])
    return full_config({
        "arch": opts["arch"], "transform": "affine", "input_size": [side, side], "output_size": opts["output_size"],
        "loc_hidden": opts["loc_hidden"], "cls_channels": opts["cls_channels"], "cls_hidden": opts["cls_hidden"],
        "dropout": opts["dropout"], "max_len": number.MAX_DIGITS, "mean": 0.0, "std": 1.0,
        "crop_length": bool(opts["crop_length"]), "refine": bool(opts["refine"]),
    })


def val_set(data: dict[str, Any], n: int, side: int,
            params: list[dict[str, Any]] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed validation numbers: the last 5,000 MNIST-train digits, the training fonts, their own seed
    (each photo's generator parameters appended to ``params`` where one is given)."""
    images, labels = data["train_images"][number_pool.TRAIN_DIGITS:], data["train_labels"][number_pool.TRAIN_DIGITS:]
    return number.fixed_set(images, labels, font_files(TRAIN_FONT_DIRS), VAL_SEED, n, side, params)


def line_targets(theta_gt: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """From the digit crops (B, L, 2, 3) and their mask (B, L): the line's centre (B, 2), its strip's half-height
    (B,) and its angle (B,): the row of the first and the last digit's centres (one digit: its own angle)."""
    n = valid.sum(1)
    centres = theta_gt[..., 2]  # (B, L, 2)
    first = centres[:, 0]
    last = centres[torch.arange(len(n), device=n.device), n - 1]
    a = torch.linalg.det(theta_gt[..., :2]).clamp_min(1e-8).sqrt()  # (B, L) half-sides (zero past the end)
    hh = LINE_PER_CROP * (a * valid).sum(1) / n
    d = last - first
    own = torch.atan2(theta_gt[:, 0, 1, 0], theta_gt[:, 0, 0, 0])
    angle = torch.where(n > 1, torch.atan2(d[:, 1], d[:, 0]), own)
    return (first + last) / 2, hh, angle


def next_slots(theta_gt: Tensor, valid: Tensor) -> Tensor:
    """Crops (B, L, 2, 3): the true ones, and past each number's end where its next digits would be: the last
    digit's crop moved on by the number's mean step from digit to digit (a one-digit number: 1.3 of its crop's
    half-sides along its own x axis, about a digit and a gap), one step per position."""
    n = valid.sum(1)
    rows = torch.arange(len(n), device=n.device)
    last = theta_gt[rows, n - 1]  # (B, 2, 3)
    span = (last[:, :, 2] - theta_gt[:, 0, :, 2]) / (n - 1).clamp_min(1)[:, None]
    step = torch.where((n > 1)[:, None], span, 1.3 * last[:, :, 0])  # (B, 2)
    k = (torch.arange(valid.shape[1], device=n.device)[None] - n[:, None] + 1).clamp_min(0).to(theta_gt.dtype)  # (B, L)
    ahead = last[:, None].expand_as(theta_gt).clone()
    ahead[..., 2] = ahead[..., 2] + k[..., None] * step[:, None]
    return torch.where(valid[..., None, None], theta_gt, ahead)


def jitter(theta: Tensor, j: float) -> Tensor:
    """Crops (K, 2, 3) missed at random, in each crop's own units: shifted N(0, j) half-sides, scaled by
    exp N(0, 0.8 j), turned N(0, j) radians (j = 0.12: a 12 % shift, 10 % scale, 7 degrees)."""
    k = theta.shape[0]
    s = torch.exp(0.8 * j * torch.randn(k, dtype=theta.dtype, device=theta.device))
    a = j * torch.randn(k, dtype=theta.dtype, device=theta.device)
    c, sn = torch.cos(a) * s, torch.sin(a) * s
    lin = torch.stack([torch.stack([c, -sn], 1), torch.stack([sn, c], 1)], 1)  # (K, 2, 2)
    shift = j * torch.randn(k, 2, 1, dtype=theta.dtype, device=theta.device)
    return torch.cat([theta[:, :, :2] @ lin, theta[:, :, :2] @ shift + theta[:, :, 2:]], dim=2)


def number_losses(model: NumberSTN, x: Tensor, digits: Tensor, theta_gt: Tensor, opts: dict[str, Any],
                  gt_weight: float) -> tuple[Tensor, dict[str, float], Tensor]:
    """-> the loss, its parts, and the digit logits (K, 11) of the K digits the numbers have."""
    valid = digits != NO_DIGIT
    lengths = valid.sum(1)
    loc = model.locate(x)
    ls = opts["label_smoothing"]
    parts: dict[str, float] = {}
    if model.config.crop_length:
        # Every position is read and placed: past the end, on the slot where a next digit would be, "no digit".
        all_logits, _ = model.read(x, loc["theta"])  # (B, L, 11)
        logits = all_logits[valid]
        length_ce = F.cross_entropy(model.length_logits(loc["f"], all_logits), lengths)
        targets, placed = next_slots(theta_gt, valid), torch.ones_like(valid)
        past = ~valid
        end_ce = F.cross_entropy(all_logits[past], digits[past], label_smoothing=ls) if past.any() else None
        parts["end_ce"] = end_ce.item() if end_ce is not None else 0.0
        end_term = end_ce * past.sum(1).float().mean() if end_ce is not None else 0.0
    else:
        logits = model.read_where(x, loc["theta"], valid)  # (K, 11): only the digits the numbers have
        length_ce = F.cross_entropy(model.length(loc["f"]), lengths)
        targets, placed, end_term = theta_gt, valid, 0.0
    digit_ce = F.cross_entropy(logits, digits[valid], label_smoothing=ls)
    corner = corner_error(loc["theta"][placed], targets[placed]).mean()
    coarse = corner_error(loc["coarse"][placed], targets[placed]).mean() if "coarse" in loc else None
    c_gt, hh_gt, angle_gt = line_targets(theta_gt, valid)
    line = ((loc["centre"] - c_gt).norm(dim=1) / hh_gt).mean() + (loc["log_hh"] - hh_gt.log()).abs().mean() \
        + 2.0 * (loc["angle"] - angle_gt).abs().mean()
    n = int(math.isqrt(loc["heat"].shape[1]))
    cell = ((c_gt + 1) / 2 * n).long().clamp(0, n - 1)
    heat_ce = F.cross_entropy(loc["heat"], cell[:, 1] * n + cell[:, 0])
    loss = length_ce + digit_ce * lengths.float().mean() + end_term \
        + opts["loc_weight"] * (corner + line + heat_ce)
    parts.update(length_ce=length_ce.item(), digit_ce=digit_ce.item(), corner=corner.item(), line=line.item())
    if coarse is not None:  # with ``refine``: the first digit transformers are held to the same crops
        loss = loss + opts["loc_weight"] * coarse
        parts["coarse"] = coarse.item()
    if gt_weight > 0:
        t_gt = theta_gt
        if opts["gt_jitter"] > 0:
            t_gt = theta_gt.clone()
            t_gt[valid] = jitter(theta_gt[valid], float(opts["gt_jitter"]))
        ce_gt = F.cross_entropy(model.read_where(x, t_gt, valid), digits[valid], label_smoothing=ls)
        loss = loss + gt_weight * ce_gt
        parts["ce_gt"] = ce_gt.item()
    return loss, parts, logits


def init_reader(reader: nn.Module, digits: dict[str, Tensor]) -> None:
    """Load a ten-class reader's weights (``model.photo_reader``: the same ``Classifier`` on 32 px crops) into
    the number reader, whose last layer has one more class (``NO_DIGIT``, last): its ten digit rows are the
    reader's, the "no digit" row keeps its initialisation."""
    own = reader.state_dict()
    if own.keys() != digits.keys():
        raise ValueError(f"the reader's layers differ: {sorted(own.keys() ^ digits.keys())}")
    merged = {}
    for k, v in digits.items():
        if own[k].shape == v.shape:
            merged[k] = v
        elif own[k].shape[0] == v.shape[0] + 1 and own[k].shape[1:] == v.shape[1:]:  # the classes' layer
            merged[k] = torch.cat([v, own[k][NO_DIGIT:]])
        else:
            raise ValueError(f"{k}: {tuple(v.shape)} does not fit the number reader's {tuple(own[k].shape)}")
    reader.load_state_dict(merged)


class WeightEMA:
    """An exponential moving average of a model's weights and batch-norm statistics (timm's ``ModelEmaV2``),
    its decay warmed up as ``min(decay, (1 + step) / (10 + step))`` so the early average is not the
    initialisation's; integer buffers are copied. ``module`` is the averaged copy, in eval mode."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))
        self._avg = [(a, b) for a, b in pairs if a.is_floating_point()]
        self._copy = [(a, b) for a, b in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_([a for a, _ in self._avg], [b for _, b in self._avg], 1.0 - d)
        for a, b in self._copy:
            a.copy_(b)


def predict(model: nn.Module, x8: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """-> digits (N, L) (``NO_DIGIT`` past the read length) and theta (N, T, 2, 3) of photos in [0, 255]
    (``model.seq_train.predict``, the number models taking pixels / 255)."""
    _, digits, theta = seq_train.predict(model, x8, batch, mean=0.0, std=1.0)
    return digits, theta


def errors(pred: np.ndarray, digits: np.ndarray) -> dict[str, float]:
    """Whole-number error, and per-digit error: positions where the read number and the true one differ (a
    digit misread, missed or added), over the true digits."""
    wrong = pred != digits
    return {"number_error": float(wrong.any(1).mean()),
            "digit_error": float(wrong.sum() / (digits != NO_DIGIT).sum())}


def train(opts: dict[str, Any], command: str) -> dict[str, Any]:
    torch.set_num_threads(int(opts["threads"]))
    torch.manual_seed(opts["seed"])
    device = pick_device(str(opts["device"]))  # before the pool: a device that is not there fails at once
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    side = int(opts["input_size"])
    pool_dir = Path(opts["pool"])
    pool_meta = number_pool.build(pool_dir, int(opts["pool_size"]), side, 0, int(opts["pool_workers"]),
                                  tuple(opts["pool_surfaces"]))
    px, pd, pt = number_pool.load(pool_dir)
    data = mnist.load_mnist(None)
    cfg = model_config(opts)
    # Channels-last: the CPU's pooling and batch-norm kernels are vectorised for it (a step 25 % faster here);
    # the weights, and so the checkpoint, are the same.
    model = build_model(cfg).to(device, memory_format=torch.channels_last)
    if opts["init_reader"]:
        if not isinstance(model, NumberSTN):
            raise SystemExit("init_reader is for the number model (arch number)")
        init_reader(model.reader, torch.load(opts["init_reader"], map_location="cpu")["state_dict"])
        log.info("reader weights from %s", opts["init_reader"])
    ema = WeightEMA(model, float(opts["ema"])) if opts["ema"] else None
    judged = ema.module if ema else model  # what validation measures and the checkpoints hold
    t0 = time.perf_counter()
    val_x, val_y, _ = val_set(data, int(opts["val_size"]), side)
    log.info("validation set: %d photos in %.0fs", len(val_y), time.perf_counter() - t0)
    opt = torch.optim.AdamW(model.parameters(), lr=opts["lr"], weight_decay=opts["weight_decay"])
    total = int(opts["steps"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opts["lr"], total_steps=total, pct_start=0.1)
    data_meta = {"dataset": "number-photo", "labels": mnist.LABELS, "mean": 0.0, "std": 1.0, "polarity": "any",
                 "input_size": list(cfg.input_size), "resize": "letterbox", "checksums": data["checksums"]}
    log.info("%s: %d parameters, %d steps of %d from a pool of %d", opts["arch"], count_params(model), total,
             opts["batch_size"], len(pd))
    rng = np.random.default_rng([opts["seed"], 2])
    history: list[dict[str, Any]] = []
    best = math.inf
    wall0, cpu0 = time.perf_counter(), time.process_time()
    sums: dict[str, float] = {}
    wrong = seen = 0
    model.train()
    for step in range(1, total + 1):
        idx = np.sort(rng.choice(len(pd), int(opts["batch_size"]), replace=False))
        x = (torch.from_numpy(px[idx]).to(device).float()[:, None] / 255.0).contiguous(
            memory_format=torch.channels_last)
        digits, theta_gt = torch.from_numpy(pd[idx]).to(device), torch.from_numpy(pt[idx]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(opts["bf16"])):
            if isinstance(model, NumberSTN):
                loss, parts, digit_logits = number_losses(model, x, digits, theta_gt, opts,
                                                          max(float(opts["gt_floor"]), 1.0 - step / (0.5 * total)))
            else:
                length_logits, digit_logits, _, _ = model(x)
                loss = sequence_loss(length_logits, digit_logits, (digits != NO_DIGIT).sum(1), digits)
                parts = {"loss": loss.item()}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if ema:
            ema.update(step)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        valid = digits != NO_DIGIT
        read = digit_logits.argmax(-1)
        wrong += int((read != digits[valid]).sum() if read.dim() == 1 else (read != digits)[valid].sum())
        seen += int(valid.sum())
        if step == 50:
            log.info("%.2f s a step", (time.perf_counter() - wall0) / step)
        if step % opts["val_every"] == 0 or step == total:
            pred, _ = predict(judged, val_x, opts["eval_batch_size"])
            ev = errors(pred, val_y)
            row = {"step": step, "train_digit_error": wrong / seen, "val_number_error": ev["number_error"],
                   "val_digit_error": ev["digit_error"], "wall_time_s": time.perf_counter() - wall0,
                   **{f"train_{k}": v / opts["val_every"] for k, v in sums.items()}}
            history.append(row)
            log.info("step %d/%d  %s  train digit err %.2f%%  val number err %.2f%%  digit err %.2f%%  (%.0fs)",
                     step, total, " ".join(f"{k} {v / opts['val_every']:.3f}" for k, v in sums.items()),
                     100 * row["train_digit_error"], 100 * ev["number_error"], 100 * ev["digit_error"],
                     row["wall_time_s"])
            metrics = {"val_number_error": ev["number_error"], "val_digit_error": ev["digit_error"], "step": step,
                       "test_number_error": None, "test_digit_error": None}
            if ev["number_error"] < best:
                best = ev["number_error"]
                save_checkpoint(out / "best.ckpt", judged, cfg, data_meta, metrics)
            save_checkpoint(out / "last.ckpt", judged, cfg, data_meta, metrics)
            (out / "history.json").write_text(json.dumps(history, indent=1))
            sums, wrong, seen = {}, 0, 0
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    best_ckpt = read_checkpoint(out / "best.ckpt")
    model.load_state_dict(best_ckpt["state_dict"])
    test_x, test_y, _ = number.test_set(data, side, int(opts["test_size"]))
    pred, _ = predict(model, test_x, opts["eval_batch_size"])
    test = errors(pred, test_y)
    log.info("test (held out: MNIST-test, held-out fonts, %d numbers): number err %.2f%%  digit err %.2f%%",
             len(test_y), 100 * test["number_error"], 100 * test["digit_error"])
    metrics = {**best_ckpt["metrics"], "test_number_error": test["number_error"],
               "test_digit_error": test["digit_error"], "test_size": len(test_y),
               "test_digits": int((test_y != NO_DIGIT).sum())}
    summary = {"name": out.name, "arch": opts["arch"], "params": count_params(model), "metrics": metrics,
               "history": history, "opts": opts, "command": command, "wall_time_s": wall, "cpu_time_s": cpu,
               "pool": pool_meta, "hardware": hardware(device)}
    save_checkpoint(out / "best.ckpt", model, cfg, data_meta, metrics, card=summary)
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    run_trainer("stn-train-number", __doc__, OPTS, train, ("name", "params", "metrics", "wall_time_s"), argv)


if __name__ == "__main__":
    main()
