"""Spatial transformers inside the CNN and side by side: the building blocks of the paper's ST-CNN Multi (one
transformer before each of the first convolution layers, on feature maps) and of its 2x / 4x ST-CNN (several
transformers on the same input, each with its own localisation net, their outputs feeding the classifier).

- ``FeatureTransformer``: a transformer at any depth: ``(B, C, H, W)`` feature maps in, ``(B, C, h, w)``
  out, the same transform applied to every channel, predicted by its own small localisation net from those
  maps. It samples with zero padding (what lies outside a feature map is no activation).
- ``ParallelTransformers``: ``n`` transformers on one input; their crops are concatenated along channels
  (``(B, n * C, h, w)``) and their parameters stacked (``(B, n, ...)``). Identical transformers would get
  identical gradients and never part, so each starts from its own place: the identity shrunk to
  ``start_scale`` and moved to one of ``n`` points spread over the input (``start_offsets``).

- ``SequenceHead``: reads up to ``max_len`` (5) digits: a length head and one classifier per position over
  the ten digits and "no digit" (Goodfellow et al. 2013), with ``sequence_targets``, ``sequence_loss`` and
  ``decode_sequence`` (the number and its probability).

Every grid is built as in ``model.transforms`` (plain tensor ops), so a model made of these exports with one
native ``GridSample`` per transformer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.transforms import Family, build_family


class SmallLocNet(nn.Module):
    """A localisation net for feature maps: one 3x3 convolution (then a 2x2 max-pool where the maps are at
    least 8 wide), two fully connected layers; the last starts at zero weight and the given bias."""

    def __init__(self, channels: int, size: tuple[int, int], family: Family, start: Tensor, conv: int = 16,
                 hidden: int = 32) -> None:
        super().__init__()
        h, w = size
        pool = min(h, w) >= 8
        self.features = nn.Sequential(nn.Conv2d(channels, conv, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(2) if pool else nn.Identity())
        if pool:
            h, w = h // 2, w // 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(conv * h * w, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, family.num_params)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(start)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.features(x)))


class FeatureTransformer(nn.Module):
    """``forward(x)`` -> ``(sampled (B, C, h, w), params_out)`` for feature maps ``x`` ``(B, C, H, W)``."""

    def __init__(self, channels: int, size: tuple[int, int], out_size: tuple[int, int] | None = None,
                 transform: str = "affine", start: Tensor | None = None, conv: int = 16, hidden: int = 32,
                 tps_grid: int = 4) -> None:
        super().__init__()
        self.channels, self.size = int(channels), (int(size[0]), int(size[1]))
        self.out_size = (int(out_size[0]), int(out_size[1])) if out_size else self.size
        self.family = build_family(transform, self.out_size, tps_grid)
        self.loc = SmallLocNet(self.channels, self.size, self.family,
                               self.family.identity() if start is None else start, conv, hidden)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.channels, *self.size):
            raise ValueError(f"feature maps must be (B, {self.channels}, {self.size[0]}, {self.size[1]}), "
                             f"got {tuple(x.shape)}")
        p = self.loc(x)
        grid = self.family.grid(p)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out, self.family.params_out(p)


def start_offsets(n: int) -> list[tuple[float, float]]:
    """``n`` points spread over the normalised input: a row for ``n <= 3``, else a near-square grid."""
    cols = n if n <= 3 else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pts = []
    for i in range(n):
        r, c = divmod(i, cols)
        x = 0.0 if cols == 1 else -0.5 + c / (cols - 1)
        y = 0.0 if rows == 1 else -0.5 + r / (rows - 1)
        pts.append((x, y))
    return pts


def start_params(transform: str, scale: float | tuple[float, float], offset: tuple[float, float]) -> Tensor:
    """The parameters of an affine-type family for ``theta = [[sx, 0, x], [0, sy, y]]`` (``scale`` is one
    number, or ``(sx, sy)`` where the family has a scale per axis)."""
    x, y = offset
    sx, sy = (scale, scale) if isinstance(scale, int | float) else (float(scale[0]), float(scale[1]))
    if sx != sy and transform not in ("affine", "scale_translation"):
        raise ValueError(f"{transform!r} has one scale for both axes, got ({sx}, {sy})")
    table = {
        "affine": [sx, 0.0, x, 0.0, sy, y],
        "attention": [sx, x, y],
        "scale_translation": [sx, sy, x, y],
        "similarity": [sx, 0.0, x, y],
        "translation": [x, y],
    }
    if transform not in table:
        raise ValueError(f"parallel transformers take an affine-type family, not {transform!r}")
    return torch.tensor(table[transform])


class ParallelTransformers(nn.Module):
    """``n`` transformers on the same input: ``forward(x)`` -> ``(crops (B, n*C, h, w), params (B, n, ...),
    [each transformer's crop (B, C, h, w)])``."""

    def __init__(self, n: int, channels: int, size: tuple[int, int], out_size: tuple[int, int],
                 transform: str = "scale_translation", start_scale: float = 0.5,
                 offsets: Sequence[tuple[float, float]] | None = None, conv: int = 16, hidden: int = 32) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        offsets = list(offsets) if offsets is not None else start_offsets(n)
        if len(offsets) != n:
            raise ValueError(f"{n} transformers need {n} offsets, got {len(offsets)}")
        self.transformers = nn.ModuleList(
            FeatureTransformer(channels, size, out_size, transform, start_params(transform, start_scale, o),
                               conv, hidden)
            for o in offsets
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        outs = [t(x) for t in self.transformers]
        crops = [o for o, _ in outs]
        return torch.cat(crops, dim=1), torch.stack([p for _, p in outs], dim=1), crops


NO_DIGIT = 10  # the "no digit" class of a position head


class SequenceHead(nn.Module):
    """Reads up to ``max_len`` digits from features ``(B, F)``: ``max_len`` position classifiers over 11
    classes (the ten digits and ``NO_DIGIT``), and a length head over ``0..max_len`` (Goodfellow et al. 2013's
    form). ``forward`` -> ``(length_logits (B, max_len + 1), digit_logits (B, max_len, 11))``."""

    def __init__(self, features: int, max_len: int = 5, hidden: int = 0) -> None:
        super().__init__()
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.max_len = int(max_len)
        trunk: list[nn.Module] = [nn.Linear(features, hidden), nn.ReLU(inplace=True)] if hidden else []
        self.trunk = nn.Sequential(*trunk)
        width = hidden or features
        self.length = nn.Linear(width, self.max_len + 1)
        self.digits = nn.Linear(width, self.max_len * (NO_DIGIT + 1))

    def forward(self, f: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(f)
        return self.length(h), self.digits(h).view(-1, self.max_len, NO_DIGIT + 1)


def sequence_targets(labels: Sequence[Sequence[int]], max_len: int = 5) -> tuple[Tensor, Tensor]:
    """Numbers as digit lists -> (lengths (B,), position targets (B, max_len), ``NO_DIGIT`` past the end)."""
    if any(len(s) > max_len for s in labels):
        raise ValueError(f"a number has more than {max_len} digits")
    lengths = torch.tensor([len(s) for s in labels])
    digits = torch.full((len(labels), max_len), NO_DIGIT, dtype=torch.long)
    for i, s in enumerate(labels):
        digits[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return lengths, digits


def sequence_loss(length_logits: Tensor, digit_logits: Tensor, lengths: Tensor, digits: Tensor) -> Tensor:
    """Cross-entropy of the length and of every position (``NO_DIGIT`` included), summed."""
    per_position = F.cross_entropy(digit_logits.reshape(-1, digit_logits.shape[-1]), digits.reshape(-1))
    return F.cross_entropy(length_logits, lengths) + digit_logits.shape[1] * per_position


def best_lengths(length_logits: Tensor, digit_logits: Tensor) -> Tensor:
    """(B,) the length of the most probable number: argmax over n of
    log P(n) + sum_{i < n} log max_c P(digit c at i | a digit) (Goodfellow et al. 2013's MAP reading)."""
    log_len = length_logits.log_softmax(-1)  # (B, L + 1)
    log_top = digit_logits[..., :NO_DIGIT].log_softmax(-1).max(-1).values  # (B, L)
    prefix = torch.cat([torch.zeros_like(log_top[:, :1]), log_top.cumsum(1)], dim=1)  # (B, L + 1)
    return (log_len + prefix).argmax(1)


def decode_sequence(length_logits: Tensor, digit_logits: Tensor) -> list[tuple[list[int], float]]:
    """The most probable number and its probability per sample (``best_lengths``; ``NO_DIGIT`` excluded
    from the digits): probability = P(length) x prod P(digit | a digit)."""
    p_len = length_logits.softmax(-1)
    p_dig = digit_logits[..., :NO_DIGIT].softmax(-1)  # a digit, given the position holds one
    lengths = best_lengths(length_logits, digit_logits)
    out = []
    for b in range(length_logits.shape[0]):
        n = int(lengths[b])
        best = p_dig[b, :n].max(-1)
        prob = float(p_len[b, n]) * float(best.values.prod()) if n else float(p_len[b, 0])
        out.append(([int(v) for v in best.indices], prob))
    return out
