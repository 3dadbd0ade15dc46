"""The number model: reads a number of 1-5 digits in a phone photo (issue #11, the house-number use).

``NumberSTN`` (arch ``"number"``) chains three kinds of spatial transformer, each localised on a small view
while every sampler reads the full-resolution input (the paper's birds recipe, as in ``model.photo_net``):

1. **Line transformer.** A fully convolutional net on a ``view_size`` (64) px view of the letterboxed
   ``input_size`` (256) px photo gives a heat map over 16x16 cells and, per cell, the strip's log half-height
   and the line's angle; the soft-argmax of the heat map is the line's centre, the heat-weighted values its
   height and angle. A ``GridSample`` reads an upright ``strip_size`` (32x160) strip along the line: a turned
   rectangle ``STRIP_ASPECT`` (5) times as long as it is high, centred on the number.
2. **Digit transformers, in parallel.** A CNN on the strip regresses one affine per digit position
   (``max_len`` = 5, left to right), relative to the strip; each is composed with the strip's transform and a
   ``GridSample`` reads the ``output_size`` (32) px crop of that digit from the full input.
   With ``refine``, a second transformer per position (``RefineLoc``, shared by the five) corrects each crop
   from a 32 px view ``CONTEXT`` (1.5) times its side sampled at full resolution around it: the first
   stage places the crop from the strip (where a crop is about 23 px a side), the second from the digit's
   own pixels (its correction composed onto the first's transform, ``refine_theta``).
3. **Reader**, shared by the five crops: the single-digit models' ``Classifier`` over eleven classes (the ten
   digits and ``NO_DIGIT``), after per-crop standardisation and a polarity flip (light ink on a dark ground,
   whatever the photo's); a **length head** on the strip's features says how many digits there are. With
   ``crop_length`` the length logits also take the reader's word (``crop_evidence``): for ``n`` digits,
   positions below ``n`` should hold a digit and the rest "no digit" (trained on crops past each number's
   end, placed where its next digit would be), so a digit the length head missed, or one it added, shows.

``forward`` -> ``(length_logits (B, 6), digit_logits (B, 5, 11), theta (B, 5, 2, 3), rectified (B, 5, 1,
32, 32), line_theta (B, 2, 3), line (B, 1, 32, 160))``: the sequence contract of ``model.seq_net`` plus the
line transformer's transform and strip (with ``refine`` also ``coarse_theta`` (B, 5, 2, 3) and ``context``
(B, 5, 1, 32, 32), the first digit transformers' crops and the refining views); digit ``i`` is read from
crop ``i``, so its region is crop ``i``'s window. Trained with the generator's digit boxes as well as the
labels (``model.number_train``).

``NumberCNN`` (arch ``"numbercnn"``) is the baseline without transformers: the same classifier's convolutions
on the whole standardised photo resampled to ``output_size`` (128 px: the classifier's three stages then see
16x16 cells), then a length head and five position heads (Goodfellow et al. 2013). It has the sequence
contract's four outputs, ``theta`` the identity and ``rectified`` the resized photo.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.multi import NO_DIGIT
from model.nets import Classifier, ModelConfig, check_input, full_config
from model.photo_net import _conv, cell_centres, sample_border, skewness, standardise
from model.seq_net import SequenceCNN

STRIP_ASPECT = 5  # the strip's length over its height
STRIP_SIZE = (32, 160)  # (h, w) px of the strip the digit transformers localise on
LINE_PER_CROP = 1.4  # the strip's half-height over the digits' mean crop half-side (training's target)
OUTPUT_NAMES = ["length_logits", "digit_logits", "theta", "rectified", "line_theta", "line"]
REFINE_NAMES = ["coarse_theta", "context"]  # with ``refine``: the first digit transformers' crops and views
CONTEXT = 1.5  # the refining view's side over the coarse crop's


class LineLoc(nn.Module):
    """View (B, 1, v, v) -> heat logits (B, n*n), centre (B, 2), log half-height (B,), angle (B,) radians."""

    def __init__(self, view: int, width: int = 48) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv(1, 16), nn.MaxPool2d(2), *_conv(16, 32), nn.MaxPool2d(2),
            *_conv(32, width), *_conv(width, width, 2), *_conv(width, width, 4), *_conv(width, width, 8),
        )
        self.head = nn.Conv2d(width, 3, 1)
        self.register_buffer("cells", cell_centres(view // 4), persistent=False)
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([0.0, math.log(0.1), 0.0]))

    cells: Tensor

    def forward(self, view: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.head(self.features(view)).flatten(2)  # (B, 3, n*n)
        heat = out[:, 0]
        p = torch.softmax(heat, dim=1)
        return heat, p @ self.cells, (p * out[:, 1]).sum(1), (p * out[:, 2]).sum(1)


class StripLoc(nn.Module):
    """Strip (B, 1, 32, 160) -> features (B, hidden) and one affine per position (B, L, 2, 3), relative to the
    strip in its own isotropic units (the strip's half-height is 1, its half-length ``STRIP_ASPECT``)."""

    def __init__(self, max_len: int, hidden: int = 256) -> None:
        super().__init__()
        self.max_len = max_len
        h, w = STRIP_SIZE
        self.features = nn.Sequential(*_conv(1, 32), nn.MaxPool2d(2), *_conv(32, 64), nn.MaxPool2d(2),
                                      *_conv(64, 64), nn.MaxPool2d(2), *_conv(64, 64))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (h // 8) * (w // 8), hidden),
                                  nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, 6 * max_len)
        nn.init.zeros_(self.fc.weight)
        start = []
        a = 1.0 / LINE_PER_CROP  # the digits' mean half-side, in the strip's half-heights
        for i in range(max_len):  # centres spread along the strip
            u = (i - (max_len - 1) / 2) * 1.7 * a
            start += [a, 0.0, u, 0.0, a, 0.0]
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor(start))

    def forward(self, strip: Tensor) -> tuple[Tensor, Tensor]:
        f = self.head(self.features(strip))
        return f, self.fc(f).view(-1, self.max_len, 2, 3)


class RefineLoc(nn.Module):
    """Views (K, 1, 32, 32) around each coarse crop, ``CONTEXT`` times its side -> a correction (K, 2, 3) in
    the coarse crop's own units: ``[I + D | t]``, the identity at initialisation."""

    def __init__(self, size: tuple[int, int], hidden: int = 128) -> None:
        super().__init__()
        h, w = size
        self.features = nn.Sequential(*_conv(1, 16), nn.MaxPool2d(2), *_conv(16, 32), nn.MaxPool2d(2),
                                      *_conv(32, 64), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (h // 8) * (w // 8), hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 6))
        last = self.head[-1]
        assert isinstance(last, nn.Linear) and last.bias is not None
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, view: Tensor) -> Tensor:
        return self.head(self.features(view)).view(-1, 2, 3)


def refine_theta(coarse: Tensor, correction: Tensor) -> Tensor:
    """Crops (..., 2, 3): each coarse crop ``[A | c]`` composed with its correction ``[R | t]`` in its own
    units, ``[A R | A t + c]``."""
    lin = coarse[..., :2] @ correction[..., :2]
    return torch.cat([lin, coarse[..., :2] @ correction[..., 2:] + coarse[..., 2:]], dim=-1)


def crop_evidence(digit_logits: Tensor) -> Tensor:
    """(B, L + 1) from digit logits (B, L, 11): for each length n, sum over i < n of log P(a digit at i) plus
    sum over i >= n of log P(no digit at i), the reader's log-likelihood of the number being n digits long.
    Written in ops with CUDA kernels (Softmax, ReduceSum, Clip, Log, and MatMuls by constant matrices); each
    probability is floored at 1e-30 (a log of -69) where the reader is that sure."""
    p = torch.softmax(digit_logits, -1)
    log_none = p[..., NO_DIGIT].clamp_min(1e-30).log()  # (B, L)
    log_some = p[..., :NO_DIGIT].sum(-1).clamp_min(1e-30).log()
    length = digit_logits.shape[1]
    steps = torch.arange(length + 1, device=digit_logits.device)
    below = (steps[:, None] > steps[None, :length]).to(digit_logits.dtype)  # (L+1, L)
    return log_some @ below.T + log_none @ (1 - below).T


def line_theta(centre: Tensor, log_hh: Tensor, angle: Tensor) -> Tensor:
    """(B, 2, 3): the strip's output square onto the turned rectangle in the input (half-height e^log_hh)."""
    hh = torch.exp(log_hh)
    c, s = torch.cos(angle), torch.sin(angle)
    row0 = torch.stack([STRIP_ASPECT * hh * c, -hh * s, centre[:, 0]], 1)
    row1 = torch.stack([STRIP_ASPECT * hh * s, hh * c, centre[:, 1]], 1)
    return torch.stack([row0, row1], 1)


def compose(t_line: Tensor, rel: Tensor) -> Tensor:
    """Digit crops in the input (B, L, 2, 3) from ``rel`` (B, L, 2, 3) in the strip's isotropic units."""
    # Strip isotropic units (u, v) -> strip normalised (u / ASPECT, v) -> input: scale the first row of rel.
    to_norm = torch.tensor([[1.0 / STRIP_ASPECT], [1.0]], dtype=rel.dtype, device=rel.device)
    rel_n = rel * to_norm  # (B, L, 2, 3)
    lin = t_line[:, None, :, :2] @ rel_n  # (B, L, 2, 3): [A | t] of the strip times [R | u]
    return lin + torch.cat([torch.zeros_like(t_line[:, None, :, :2]), t_line[:, None, :, 2:]], dim=3)


class NumberSTN(nn.Module):
    output_names = OUTPUT_NAMES

    def __init__(self, config: dict[str, Any] | ModelConfig) -> None:
        super().__init__()
        self.config = cfg = full_config(config)
        h, w = cfg.input_size
        if h != w or h % cfg.view_size:
            raise ValueError(f"the number model takes a square input, a multiple of {cfg.view_size}; got {h}x{w}")
        self.side, self.view, self.max_len = int(h), cfg.view_size, cfg.max_len
        self.out_hw = cfg.output_size
        self.line_loc = LineLoc(self.view)
        self.strip_loc = StripLoc(cfg.max_len, cfg.loc_hidden)
        self.length = nn.Linear(cfg.loc_hidden, cfg.max_len + 1)
        self.reader = Classifier(1, cfg.output_size, cfg.cls_channels, cfg.cls_hidden, NO_DIGIT + 1, cfg.dropout)
        self.refine_loc = RefineLoc(cfg.output_size) if cfg.refine else None
        self.output_names = OUTPUT_NAMES + REFINE_NAMES if cfg.refine else OUTPUT_NAMES

    def sample(self, x: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
        return sample_border(x, theta, size)

    def locate(self, x: Tensor) -> dict[str, Tensor]:
        """The localisation stages: heat, centre, log_hh, angle, line_theta, line (the strip), features f
        and the digit crops' theta (B, L, 2, 3); with ``refine`` also the first stage's crops (coarse) and the
        views (context, (B, L, 1, h, w)) the second refined them from."""
        check_input(x, self.config)
        view = standardise(F.avg_pool2d(x, self.side // self.view), flip=False)
        heat, centre, log_hh, angle = self.line_loc(view)
        t_line = line_theta(centre, log_hh, angle)
        line = self.sample(x, t_line, STRIP_SIZE)
        f, rel = self.strip_loc(standardise(line, flip=True))
        theta = compose(t_line, rel)
        out = {"heat": heat, "centre": centre, "log_hh": log_hh, "angle": angle, "line_theta": t_line,
               "line": line, "f": f, "theta": theta}
        if self.refine_loc is not None:
            wide = torch.cat([theta[..., :2] * CONTEXT, theta[..., 2:]], dim=-1)
            context = torch.stack([self.sample(x, wide[:, i], self.out_hw) for i in range(self.max_len)], dim=1)
            correction = self.refine_loc(standardise(context.flatten(0, 1), flip=True))
            out.update(coarse=theta, context=context,
                       theta=refine_theta(theta, correction.view(-1, self.max_len, 2, 3)))
        return out

    def read(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Crops at ``theta`` (B, L, 2, 3) -> digit logits (B, L, 11), crops (B, L, 1, h, w)."""
        crops = torch.stack([self.sample(x, theta[:, i], self.out_hw) for i in range(theta.shape[1])], dim=1)
        flat = standardise(crops.flatten(0, 1), flip=True)
        return self.reader(flat).view(-1, theta.shape[1], NO_DIGIT + 1), crops

    def read_where(self, x: Tensor, theta: Tensor, where: Tensor) -> Tensor:
        """Digit logits (K, 11) of only the positions ``where`` (B, L) is true (training reads no crop past a
        number's end: the length head says where it ends)."""
        b = where.nonzero()[:, 0]
        crops = self.sample(x[b], theta[where], self.out_hw)
        return self.reader(standardise(crops, flip=True))

    @torch.no_grad()
    def polarity_skew(self, x: Tensor) -> Tensor:
        """(B, 1 + L) the skewness by whose sign the strip and each crop are flipped (``standardise``; 1 for a
        flat image), (B, 1 + 2L) with ``refine`` (the refining views too): where one is within rounding of zero,
        the flip is a tie (the export's check leaves such a sample out)."""
        loc = self.locate(x)
        _, crops = self.read(x, loc["theta"])
        images = [loc["context"], crops] if self.refine_loc is not None else [crops]
        return torch.cat([skewness(loc["line"])[:, None]]
                         + [skewness(c.flatten(0, 1)).view(-1, self.max_len) for c in images], 1)

    def length_logits(self, f: Tensor, digit_logits: Tensor) -> Tensor:
        """(B, L + 1): the length head's logits on the strip's features ``f``, plus the crops' evidence
        (``crop_evidence``) with ``crop_length``."""
        head = self.length(f)
        return head + crop_evidence(digit_logits) if self.config.crop_length else head

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        loc = self.locate(x)
        digit_logits, crops = self.read(x, loc["theta"])
        out = (self.length_logits(loc["f"], digit_logits), digit_logits, loc["theta"], crops, loc["line_theta"],
               loc["line"])
        return out + (loc["coarse"], loc["context"]) if self.refine_loc is not None else out


class NumberCNN(SequenceCNN):
    """``SequenceCNN`` on a photo: the resize reads the letterbox's edge past the photo (border padding) and
    the classifier sees the resized photo standardised and flipped to light ink on dark, as the reader does."""

    output_names = OUTPUT_NAMES[:4]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        check_input(x, self.config)
        theta = self.theta_id.expand(x.shape[0], 2, 3)
        resized = sample_border(x, theta, self.output_size)
        length_logits, digit_logits = self.head(self.trunk(self.features(standardise(resized, flip=True))))
        return length_logits, digit_logits, theta[:, None], resized[:, None]
