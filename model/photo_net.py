"""The photo model: a two-stage spatial transformer that finds a digit in a photo and reads it.

The input is the whole photo, letterboxed into a square of ``input_size`` (256) pixels, gray in ``[0, 1]``
(``stn.mean = 0``, ``stn.std = 1``; either polarity: dark ink on paper or chalk on a board). As in the
paper's birds experiment, the localisation nets see small views while every sampler reads the full input:

1. **Coarse localisation** on a ``view_size`` (64) px average-pooled view: a fully convolutional net gives a
   heat map over 16x16 cells and a log-scale map; the soft-argmax of the heat map is the digit's centre
   ``(c_x, c_y)``, the heat-weighted log-scale its half-size ``a`` (attention: scale + translation).
2. **Glimpse**: ``GridSample`` reads a ``glimpse_size`` (48) px square of side ``4 a`` around the centre from
   the full-resolution input.
3. **Fine localisation** on the glimpse: a small CNN regresses an affine ``A`` relative to the glimpse
   (identity: its central half), so that it can turn, stretch and re-centre the crop.
4. **Crop**: ``theta_out_to_in = T_glimpse @ A`` composed, and ``GridSample`` reads the ``output_size`` (32)
   px crop from the full-resolution input. That crop is the ``rectified`` output, in input units.
5. **Classifier** on the crop after per-crop standardisation and a polarity flip (the sign of the crop's
   skewness: the ink is the minority of a crop's pixels), so it always sees light ink on a dark ground.

Every step is plain tensor ops and two ``GridSample`` nodes, so the export stays native. Localisation is
trained with the generator's digit box as well as the class (``model.photo_train``), which is what lets it
learn within the CPU budget.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.nets import Classifier, ModelConfig, check_input
from model.transforms import affine_grid

EPS = 1e-4


def _zscore(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample ``(x - mean) / sqrt(var + EPS)`` over (C, H, W), and the variance (B, 1, 1, 1)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    z = x - mean
    var = (z * z).mean(dim=(1, 2, 3), keepdim=True)
    return z / torch.sqrt(var + EPS), var


def standardise(x: Tensor, flip: bool) -> Tensor:
    """Per-sample zero mean, unit variance over (C, H, W); with ``flip``, negated where the skew is < 0."""
    z, _ = _zscore(x)
    if flip:
        skew = (z * z * z).mean(dim=(1, 2, 3), keepdim=True)
        z = torch.where(skew >= 0, z, -z)
    return z


def skewness(x: Tensor) -> Tensor:
    """(B,) the skewness by whose sign ``standardise`` flips each image; 1 for a flat image (a crop past the
    photo's edge, border padding), which standardises to zero whichever way it is flipped."""
    z, var = _zscore(x)
    var = var.flatten()
    return torch.where(var < 1e-8, torch.ones_like(var), (z * z * z).mean(dim=(1, 2, 3)))


def sample_border(x: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear ``GridSample`` of ``x`` at ``theta`` (B, 2, 3), ``size`` (h, w) out, with border padding: outside
    the photo reads as its edge (the letterbox fill), not as black."""
    return F.grid_sample(x, affine_grid(theta, size), mode="bilinear", padding_mode="border", align_corners=False)


def _conv(c_in: int, c_out: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


def cell_centres(n: int) -> Tensor:
    """(n*n, 2) the centres (x, y) of an n x n grid of cells over the normalised input, row by row."""
    cells = (torch.arange(n, dtype=torch.float32) * 2 + 1) / n - 1
    gy, gx = torch.meshgrid(cells, cells, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


class CoarseLoc(nn.Module):
    """View (B, 1, 64, 64) -> heat logits (B, 16*16), centre (B, 2), log half-size (B,)."""

    def __init__(self, view: int, width: int = 48) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv(1, 16), nn.MaxPool2d(2), *_conv(16, 32), nn.MaxPool2d(2),
            *_conv(32, width), *_conv(width, width, 2), *_conv(width, width, 4),
        )
        self.head = nn.Conv2d(width, 2, 1)
        self.register_buffer("cells", cell_centres(view // 4), persistent=False)
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([0.0, -1.0]))  # log half-size e^-1 = 0.37 to start

    cells: Tensor  # (n*n, 2) cell centres, normalised (x, y)

    def forward(self, view: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.head(self.features(view)).flatten(2)  # (B, 2, n*n)
        heat, log_scale = out[:, 0], out[:, 1]
        p = torch.softmax(heat, dim=1)  # (B, n*n)
        centre = p @ self.cells  # (B, 2)
        log_a = (p * log_scale).sum(dim=1)  # (B,)
        return heat, centre, log_a


class FineLoc(nn.Module):
    """Glimpse (B, 1, g, g) -> affine (B, 2, 3) relative to the glimpse; identity = its central half."""

    def __init__(self, glimpse: int, hidden: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(*_conv(1, 16), nn.MaxPool2d(2), *_conv(16, 32), nn.MaxPool2d(2),
                                      *_conv(32, 64), nn.MaxPool2d(2))
        n = glimpse // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * n * n, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, 6)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0, 0.5, 0.0]))

    def forward(self, g: Tensor) -> Tensor:
        return self.fc(self.head(self.features(g))).view(-1, 2, 3)


class PhotoSTN(nn.Module):
    """``forward(x)`` -> ``(logits, theta, rectified)``; ``locate(x)`` also returns the coarse stage."""

    output_names = ["logits", "theta", "rectified"]

    def __init__(self, config: dict[str, Any] | ModelConfig) -> None:
        super().__init__()
        from model.nets import full_config

        self.config = full_config(config)
        cfg = self.config
        h, w = cfg.input_size
        if h != w:
            raise ValueError(f"the photo model takes a square input, got {h}x{w}")
        self.input_side = int(h)
        self.view = cfg.view_size
        self.glimpse = cfg.glimpse_size
        self.out_hw = cfg.output_size
        if self.input_side % self.view:
            raise ValueError(f"input_size {h} must be a multiple of view_size {self.view}")
        self.coarse = CoarseLoc(self.view)
        self.fine = FineLoc(self.glimpse)
        self.classifier = Classifier(1, self.out_hw, cfg.cls_channels, cfg.cls_hidden, cfg.num_classes, cfg.dropout)

    def sample(self, x: Tensor, theta: Tensor, size: tuple[int, int]) -> Tensor:
        return sample_border(x, theta, size)

    def locate(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> heat (B, n*n), centre (B, 2), log half-size (B,), theta (B, 2, 3)."""
        check_input(x, self.config)
        view = standardise(F.avg_pool2d(x, self.input_side // self.view), flip=False)
        heat, centre, log_a = self.coarse(view)
        a2 = 2.0 * torch.exp(log_a)  # the glimpse's half-side: twice the crop's
        zero = torch.zeros_like(a2)
        t1 = torch.stack([torch.stack([a2, zero, centre[:, 0]], 1), torch.stack([zero, a2, centre[:, 1]], 1)], 1)
        glimpse = standardise(self.sample(x, t1, (self.glimpse, self.glimpse)), flip=True)
        rel = self.fine(glimpse)  # (B, 2, 3)
        theta = torch.cat([rel[:, :, :2] * a2[:, None, None], rel[:, :, 2:] * a2[:, None, None]
                           + centre[:, :, None]], dim=2)
        return heat, centre, log_a, theta

    def classify(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        rectified = self.sample(x, theta, self.out_hw)
        return self.classifier(standardise(rectified, flip=True)), rectified

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        theta = self.locate(x)[3]
        logits, rectified = self.classify(x, theta)
        return logits, theta, rectified
