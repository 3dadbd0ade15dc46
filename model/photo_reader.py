"""``stn-train-reader``: pre-train the photo model's classifier on synthetic crops, before the photo model.

    stn-train-reader --config model/configs/photo_reader.json
    stn-train-reader --steps 40 --eval-every 20 --val-photos 200 --out runs/reader_smoke

The photo model (``model.photo_net``) reads a 32 px crop that its transformer cut from a photo, standardised
and polarity-flipped. Rendering photos costs 8 ms each on this CPU, and the photo model's localisation nets
cost most of a step, so in the photo run's budget its classifier sees each MNIST digit about eight times: on
the true crops of validation photos it misread 0.95 % (``bench/results/photo_analysis_20261202-0122.md``),
twice the error of the same classifier trained on RTS digits. This trainer shows it many more digits,
cheaply: each crop is made in torch straight from a 28 x 28 digit, batched, with what a photo does to the
crop around a digit (every range uniform unless said otherwise):

==================  ===============================================================================
digits              MNIST-train 0-54,999 (the photo run's training digits), and with probability 0.22
                    a digit of the training fonts (``model.photo.TRAIN_FONT_DIRS``), its ink fitted
                    into 20 x 20 and centred in 28 x 28 as MNIST's are
stroke              thinned (min-filter 3) with probability 0.15, thickened (max-filter 3) with
                    probability 0.3; edge sharpness as the generator's, gain 1.5-4
crop                the photo generator's true crop (side 1.4 times the longer ink side, about the ink
                    box's centre, ``model.photo.CROP_PER_INK``), jittered as a localisation net misses:
                    shift N(0, 0.12) half-sides, scale exp N(0, 0.10), rotation N(0, 8 deg), shear
                    N(0, 0.05); sampled at 32 px, or (each batch with probability 0.5) at 14-31 px and
                    resized to 32 (a small digit in the photo has few pixels); blurred with
                    probability 0.3 (Gaussian sigma 0.3-1.0 px)
paper and ink       paper 0.55-1.0, ink 5-60 % of the paper (opacity 0.45-1); with probability 0.15
                    light ink on a dark board instead; a linear light gradient of 0-0.35 across the
                    crop
lines               with probability 0.35, 1-4 parallel lines (ruled or squared paper seen at the
                    crop's angle), spacing 5-16 px, 0.7-2 px wide, 25-60 % darker than the paper;
                    with probability 0.25 one pen stroke through an edge of the crop
noise               Gaussian, sigma 0-0.03; then 8-bit quantised
==================  ===============================================================================

The crop is then standardised and flipped exactly as the photo model does (``photo_net.standardise``), so
the classifier's weights drop into ``PhotoSTN.classifier`` (``stn-train-photo --init-classifier``). Model
selection: the error on the *true crops* of the photo run's own validation photos (``photo_train.val_set``:
the last 5,000 MNIST-train digits, its seed). MNIST-test is never read.
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
from PIL import Image
from torch import Tensor

from model import data as mnist
from model.nets import Classifier, count_params, full_config
from model.photo import CROP_PER_INK, TRAIN_FONT_DIRS, font_files, glyph, ink_extent
from model.photo_net import sample_border, standardise
from model.train import hardware, run_trainer

log = logging.getLogger("stn-train-reader")

OPTS: dict[str, Any] = {
    "steps": 6000, "batch_size": 128, "lr": 2e-3, "weight_decay": 1e-4, "label_smoothing": 0.05, "seed": 0,
    "threads": 1, "eval_every": 500, "val_photos": 1600, "output_size": 32, "printed": 0.22,
    "out": "runs/photo_reader",
    # The validation photos with model.photo.stroke's legible rule (the reader's own crops never use a 5).
    "legible_pen": True,
}
SIDE = 28  # the digit bank's frame (MNIST's)


def font_bank(fonts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every (font, digit) glyph with its ink fitted into 20 x 20 and centred in 28 x 28, as MNIST's digits."""
    out, labels = [], []
    for f in fonts:
        for d in range(10):
            g = glyph(f, d)
            x0, y0, x1, y1 = ink_extent(g)
            g = g[int(y0):int(y1), int(x0):int(x1)]
            k = 20.0 / max(g.shape)
            w, h = max(1, round(g.shape[1] * k)), max(1, round(g.shape[0] * k))
            small = np.asarray(Image.fromarray((g * 255).astype(np.uint8)).resize((w, h), Image.Resampling.LANCZOS))
            canvas = np.zeros((SIDE, SIDE), np.uint8)
            top, left = (SIDE - h) // 2, (SIDE - w) // 2
            canvas[top:top + h, left:left + w] = small
            out.append(canvas)
            labels.append(d)
    return np.stack(out), np.asarray(labels, np.int64)


def ink_boxes(images: np.ndarray) -> np.ndarray:
    """(N, 4) float32 ink boxes (x0, y0, x1, y1), px, at the generator's threshold (``photo.ink_extent``)."""
    return np.asarray([ink_extent(im.astype(np.float32) / 255.0) for im in images], np.float32)


class Bank:
    """Digits (N, 1, 28, 28) float in [0, 1], labels and their true crops as ``theta`` (N, 2, 3) in the 28-px
    frame's normalised coordinates; ``printed`` indexes the font digits."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, fonts: list[str]) -> None:
        f_img, f_lab = font_bank(fonts) if fonts else (np.zeros((0, SIDE, SIDE), np.uint8), np.zeros(0, np.int64))
        allimg = np.concatenate([images, f_img])
        self.x = torch.from_numpy(allimg.astype(np.float32) / 255.0)[:, None]
        self.y = torch.from_numpy(np.concatenate([labels, f_lab]))
        self.n_mnist, self.n_fonts = len(images), len(f_img)
        box = torch.from_numpy(ink_boxes(allimg))
        centre = (box[:, :2] + box[:, 2:]) / 2 / SIDE * 2 - 1
        half = (box[:, 2:] - box[:, :2]).max(dim=1).values * CROP_PER_INK / 2 / SIDE * 2
        self.theta = torch.zeros(len(allimg), 2, 3)
        self.theta[:, 0, 0] = self.theta[:, 1, 1] = half
        self.theta[:, :, 2] = centre

    def draw(self, g: torch.Generator, n: int, printed: float) -> Tensor:
        """``n`` indices: a font digit with probability ``printed``, else an MNIST one."""
        idx = torch.randint(0, self.n_mnist, (n,), generator=g)
        if self.n_fonts:
            pick = torch.rand(n, generator=g) < printed
            idx = torch.where(pick, self.n_mnist + torch.randint(0, self.n_fonts, (n,), generator=g), idx)
        return idx


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _gauss_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-sample separable Gaussian blur, ``sigma`` (B,) px (a 7-tap kernel)."""
    r = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-0.5 * (r[None] / sigma[:, None].clamp_min(1e-3)) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, 7)
    b = x.shape[0]
    xp = F.pad(x.transpose(0, 1), (3, 3, 3, 3), mode="replicate")  # (1, B, H+6, W+6)
    xp = F.conv2d(xp, k.view(b, 1, 1, 7), groups=b)
    xp = F.conv2d(xp, k.view(b, 1, 7, 1), groups=b)
    return xp.transpose(0, 1)


def _lines(g: torch.Generator, b: int, size: int, angle: Tensor, spacing: Tensor, width: Tensor,
           count: Tensor) -> Tensor:
    """(B, 1, S, S) alpha of ``count`` parallel lines at ``angle`` through the crop, ``spacing`` apart."""
    c = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    d = (-torch.sin(angle)[:, None, None] * xx + torch.cos(angle)[:, None, None] * yy)  # signed distance
    d = d + _u(g, b, -0.5, 0.5)[:, None, None] * spacing[:, None, None]
    k = torch.round(d / spacing[:, None, None])
    dist = (d - k * spacing[:, None, None]).abs()
    alpha = (width[:, None, None] / 2 + 0.5 - dist).clamp(0, 1)
    keep = k.abs() <= (count[:, None, None] - 1) / 2 + 0.5
    return (alpha * keep)[:, None]


def crops(bank: Bank, idx: Tensor, g: torch.Generator, size: int = 32) -> Tensor:
    """Synthetic photo crops (B, 1, size, size) in [0, 1], dark ink on light paper or light on a board, not
    yet standardised (the module docstring lists every range)."""
    b = len(idx)
    x = bank.x[idx]
    r = torch.rand(b, generator=g)
    thin = -F.max_pool2d(-x, 3, 1, 1)
    thick = F.max_pool2d(x, 3, 1, 1)
    thin_ok = thin.sum((1, 2, 3)) >= 0.5 * x.sum((1, 2, 3))
    x = torch.where(((r < 0.15) & thin_ok)[:, None, None, None], thin, x)
    x = torch.where(((r >= 0.15) & (r < 0.45))[:, None, None, None], thick, x)
    gain = _u(g, b, 1.5, 4.0)[:, None, None, None]
    x = ((x - 0.5) * gain + 0.5).clamp(0, 1)

    # The crop: the true one, missed a little, at a random resolution.
    theta = bank.theta[idx].clone()
    half = theta[:, 0, 0].clone()
    s = torch.exp(0.10 * torch.randn(b, generator=g))
    a = (8.0 * math.pi / 180) * torch.randn(b, generator=g)
    sh = 0.05 * torch.randn(b, generator=g)
    lin = torch.stack([torch.stack([torch.cos(a), -torch.sin(a) + sh], 1),
                       torch.stack([torch.sin(a), torch.cos(a)], 1)], 1) * (s * half)[:, None, None]
    theta[:, :, :2] = lin
    theta[:, :, 2] += 0.12 * torch.randn(b, 2, generator=g) * half[:, None]
    res = size if float(torch.rand(1, generator=g)) < 0.5 else int(torch.randint(14, size, (1,), generator=g))
    alpha = sample_border(F.pad(x, (4, 4, 4, 4)), theta * torch.tensor([[SIDE / 36, SIDE / 36, SIDE / 36]]),
                          (res, res))
    if res != size:
        alpha = F.interpolate(alpha, size=(size, size), mode="bilinear", align_corners=False)

    # Marks under the ink: lines of ruled/squared paper, a pen stroke through an edge.
    marks = torch.zeros_like(alpha)
    has_lines = torch.rand(b, generator=g) < 0.35
    ang = _u(g, b, -math.pi / 3, math.pi / 3)
    lines = _lines(g, b, size, ang, _u(g, b, 5, 16), _u(g, b, 0.7, 2.0), torch.randint(1, 5, (b,), generator=g))
    marks = torch.where(has_lines[:, None, None, None], lines * _u(g, b, 0.25, 0.6)[:, None, None, None], marks)
    has_stroke = torch.rand(b, generator=g) < 0.25
    stroke = _lines(g, b, size, _u(g, b, -math.pi, math.pi), torch.full((b,), 1e4), _u(g, b, 1.0, 3.0),
                    torch.ones(b))
    # Shift the stroke off-centre, towards an edge: the generator keeps marks out of the digit's circle.
    stroke = torch.roll(stroke, shifts=int(torch.randint(10, 15, (1,), generator=g)), dims=2)
    marks = torch.maximum(marks, stroke * has_stroke[:, None, None, None])

    paper = _u(g, b, 0.55, 1.0)[:, None, None, None]
    ink = paper * _u(g, b, 0.05, 0.6)[:, None, None, None]
    board = torch.rand(b, generator=g) < 0.15
    paper = torch.where(board[:, None, None, None], _u(g, b, 0.06, 0.3)[:, None, None, None], paper)
    ink = torch.where(board[:, None, None, None], _u(g, b, 0.7, 0.98)[:, None, None, None], ink)
    opacity = _u(g, b, 0.45, 1.0)[:, None, None, None]
    a_all = torch.maximum(alpha, marks) * opacity
    img = paper * (1 - a_all) + ink * a_all
    c = torch.arange(size, dtype=torch.float32) / (size - 1) - 0.5
    ga = _u(g, b, -math.pi, math.pi)
    grad = torch.cos(ga)[:, None, None] * c[None, None, :] + torch.sin(ga)[:, None, None] * c[None, :, None]
    img = img * (1 + _u(g, b, 0, 0.35)[:, None, None] * grad)[:, None]
    blur = torch.rand(b, generator=g) < 0.3
    img = torch.where(blur[:, None, None, None], _gauss_blur(img, _u(g, b, 0.3, 1.0)), img)
    img = img + _u(g, b, 0, 0.03)[:, None, None, None] * torch.randn(img.shape, generator=g)
    return torch.round(img.clamp(0, 1) * 255) / 255


def reader(output_size: int) -> Classifier:
    """The photo model's classifier, as ``PhotoSTN`` builds it (the same config keys)."""
    cfg = full_config({"arch": "photo", "transform": "affine", "input_size": [256, 256],
                       "output_size": [output_size] * 2, "mean": 0.0, "std": 1.0})
    return Classifier(1, cfg.output_size, cfg.cls_channels, cfg.cls_hidden, cfg.num_classes, cfg.dropout)


@torch.no_grad()
def true_crop_error(model: Classifier, val: tuple[Tensor, Tensor, Tensor], size: int, batch: int = 200) -> float:
    """Error on the true crops of validation photos (uint8 inputs, labels, target thetas)."""
    model.eval()
    x8, y, t = val
    wrong = 0
    for i in range(0, len(y), batch):
        crop = sample_border(x8[i:i + batch].float() / 255.0, t[i:i + batch], (size, size))
        wrong += int((model(standardise(crop, flip=True)).argmax(1) != y[i:i + batch]).sum())
    model.train()
    return wrong / len(y)


def train(opts: dict[str, Any], command: str) -> dict[str, Any]:
    from model.photo_train import digits, val_set

    torch.set_num_threads(int(opts["threads"]))
    torch.manual_seed(opts["seed"])
    g = torch.Generator().manual_seed(int(opts["seed"]))
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    data = mnist.load_mnist(None)
    images, labels = digits(data, "train")
    bank = Bank(images, labels, font_files(TRAIN_FONT_DIRS))
    size = int(opts["output_size"])
    t0 = time.perf_counter()
    val = val_set(data, int(opts["val_photos"]), 256, bool(opts["legible_pen"]))
    log.info("bank: %d MNIST + %d font digits; validation: %d photos in %.0fs", bank.n_mnist, bank.n_fonts,
             len(val[1]), time.perf_counter() - t0)
    model = reader(size).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=opts["lr"], weight_decay=opts["weight_decay"])
    total = int(opts["steps"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opts["lr"], total_steps=total, pct_start=0.15)
    history: list[dict[str, float]] = []
    best = math.inf
    wall0 = time.perf_counter()
    loss_sum, correct, seen = 0.0, 0, 0
    for step in range(1, total + 1):
        idx = bank.draw(g, int(opts["batch_size"]), float(opts["printed"]))
        x = standardise(crops(bank, idx, g, size), flip=True).contiguous(memory_format=torch.channels_last)
        y = bank.y[idx]
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=opts["label_smoothing"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.item()
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if step % int(opts["eval_every"]) == 0 or step == total:
            err = true_crop_error(model, val, size)
            row = {"step": step, "train_loss": loss_sum / max(1, seen // len(y)), "train_error": 1 - correct / seen,
                   "val_error": err, "wall_time_s": time.perf_counter() - wall0}
            history.append(row)
            log.info("step %d/%d  train err %.2f%%  val (true crops) %.2f%%  (%.0fs)", step, total,
                     100 * row["train_error"], 100 * err, row["wall_time_s"])
            loss_sum, correct, seen = 0.0, 0, 0
            if err < best:
                best = err
                torch.save({"state_dict": model.state_dict(), "step": step, "val_error": err}, out / "best.pt")
            (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {"name": "photo_reader", "params": count_params(model), "best_val_error": best, "history": history,
               "opts": opts, "command": command, "wall_time_s": time.perf_counter() - wall0,
               "hardware": hardware(torch.device("cpu"))}
    (out / "train.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    run_trainer("stn-train-reader", __doc__, OPTS, train, ("name", "params", "best_val_error", "wall_time_s"), argv)


if __name__ == "__main__":
    main()
