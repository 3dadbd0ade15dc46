"""Sequence models: read up to ``max_len`` digits from one image.

``SequenceSTN`` (arch ``"seq"``) is the paper's parallel ST-CNN applied to numbers, one transformer per digit
position:

1. **Localisation trunk**, shared: three conv-BN-ReLU-pool stages and a fully connected layer on the input
   average-pooled by ``view_pool`` (the localisation net needs where, not detail).
2. **One head per transformer** (its own fully connected layer, starting at zero weight): transformer ``i``
   starts at the ``i``-th point of a row across the input (``model.multi.start_offsets``) with window
   half-sizes ``start_scale``. Identical starts would get identical gradients and never part; these
   starts put transformer ``i`` over the ``i``-th digit's usual place, so position ``i`` stays digit ``i``.
3. **Samplers**: each head's transform reads an ``output_size`` crop from the full-resolution input, one
   native ``GridSample`` each.
4. **Reader**: one classifier (the single-digit models' ``Classifier``), shared by every crop, over eleven
   classes: the ten digits and ``NO_DIGIT`` (a transformer past the number's end reads "no digit").
5. **Length head** on the trunk's features: how many digits the image holds (``0..max_len``).

``forward`` -> ``(length_logits (B, L + 1), digit_logits (B, L, 11), theta (B, L, 2, 3),
rectified (B, L, C, h, w))``; digit ``i`` of the answer is read from crop ``i``, so its region in the input
is transformer ``i``'s window. Trained with labels alone (``model.seq_train``): no box is ever given.

``SequenceCNN`` (arch ``"seqcnn"``) is the baseline: the same classifier's convolutions on the whole input
resampled to ``output_size`` (a fixed bilinear resize), then the length head and ``L`` position heads
(Goodfellow et al. 2013). It has the same outputs, ``theta`` the identity and ``rectified`` the resized input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.multi import NO_DIGIT, SequenceHead, start_offsets, start_params
from model.nets import Classifier, ModelConfig, check_input, full_config, sample_filled
from model.transforms import affine_grid, build_family

OUTPUT_NAMES = ["length_logits", "digit_logits", "theta", "rectified"]


class LocTrunk(nn.Module):
    """View ``(B, C, H, W)`` -> features ``(B, hidden)``: conv-BN-ReLU-pool stages, then a linear layer."""

    def __init__(self, in_channels: int, size: tuple[int, int], channels: Sequence[int], hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, (h, w) = in_channels, size
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in, h, w = c, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * h * w, hidden), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SequenceSTN(nn.Module):
    output_names = OUTPUT_NAMES

    def __init__(self, config: dict[str, Any] | ModelConfig) -> None:
        super().__init__()
        self.config = cfg = full_config(config)
        h, w = cfg.input_size
        if h % cfg.view_pool or w % cfg.view_pool:
            raise ValueError(f"input_size {h}x{w} must be a multiple of view_pool {cfg.view_pool}")
        self.max_len = cfg.max_len
        self.view_pool = cfg.view_pool
        self.output_size = cfg.output_size
        self.fill = -cfg.mean / cfg.std  # normalised black: outside the input reads as background
        self.family = build_family(cfg.transform, cfg.output_size)
        self.trunk = LocTrunk(cfg.in_channels, (h // cfg.view_pool, w // cfg.view_pool), cfg.loc_channels,
                              cfg.loc_hidden)
        self.heads = nn.ModuleList()
        for offset in start_offsets(cfg.max_len):
            fc = nn.Linear(cfg.loc_hidden, self.family.num_params)
            nn.init.zeros_(fc.weight)
            with torch.no_grad():
                fc.bias.copy_(start_params(cfg.transform, cfg.start_scale, (offset[0], 0.0)))
            self.heads.append(fc)
        self.length = nn.Linear(cfg.loc_hidden, cfg.max_len + 1)
        self.reader = Classifier(cfg.in_channels, cfg.output_size, cfg.cls_channels, cfg.cls_hidden,
                                 NO_DIGIT + 1, cfg.dropout)

    def sample(self, x: Tensor, p: Tensor) -> Tensor:
        return sample_filled(x, self.family.grid(p), self.fill)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        check_input(x, self.config)
        view = F.avg_pool2d(x, self.view_pool) if self.view_pool > 1 else x
        f = self.trunk(view)
        params = [head(f) for head in self.heads]
        crops = torch.stack([self.sample(x, p) for p in params], dim=1)  # (B, L, C, h, w)
        digit_logits = self.reader(crops.flatten(0, 1)).view(-1, self.max_len, NO_DIGIT + 1)
        theta = torch.stack([self.family.params_out(p) for p in params], dim=1)
        return self.length(f), digit_logits, theta, crops


class SequenceCNN(nn.Module):
    output_names = OUTPUT_NAMES

    def __init__(self, config: dict[str, Any] | ModelConfig) -> None:
        super().__init__()
        self.config = cfg = full_config(config)
        self.output_size = cfg.output_size
        self.fill = -cfg.mean / cfg.std
        self.register_buffer("theta_id", torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), persistent=False)
        cls = Classifier(cfg.in_channels, cfg.output_size, cfg.cls_channels, cfg.cls_hidden, 1, cfg.dropout)
        self.features = cls.features
        self.trunk = cls.head[:-1]  # flatten, linear, ReLU, dropout: everything but the 1-class layer
        self.head = SequenceHead(cfg.cls_hidden, cfg.max_len)

    theta_id: Tensor

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        check_input(x, self.config)
        theta = self.theta_id.expand(x.shape[0], 2, 3)
        grid = affine_grid(theta, self.output_size)
        resized = sample_filled(x, grid, self.fill)
        length_logits, digit_logits = self.head(self.trunk(self.features(resized)))
        return length_logits, digit_logits, theta[:, None], resized[:, None]
