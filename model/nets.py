"""The spatial transformer layer, the classifier behind it, and the ST-CNN / baseline CNN built from a config.

Convention: see ``model.transforms`` (normalised ``[-1, 1]``, x before y, align_corners=False, the grid maps
output pixels to input sample points). A model is rebuilt from its config dict alone
(``build_model(config)``), so a checkpoint (config + weights) is all that export needs.

Inputs are normalised images ``(pixel / 255 - mean) / std``. The sampler pads with the value that
normalised black takes (``-mean / std``), so what lies outside the input reads as background, not grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.transforms import FAMILIES, Family, affine_grid, build_family

ARCHS = ("stcnn", "cnn", "photo", "seq", "seqcnn", "number", "numbercnn")


@dataclass(frozen=True)
class ModelConfig:
    """What a model takes, and its defaults (checkpoints store it as a dict: ``to_dict`` / ``from_dict``)."""

    arch: str = "stcnn"  # "stcnn" (spatial transformer + classifier), "cnn" (the classifier alone), "photo",
    # or the sequence models (model.seq_net): "seq" (parallel transformers, one per digit) and "seqcnn",
    # and the number-photo models (model.number_net): "number" and its baseline "numbercnn"
    transform: str = "affine"  # the transformer's family (model.transforms.FAMILIES)
    in_channels: int = 1
    input_size: tuple[int, int] = (42, 42)  # (H, W) of the input
    output_size: tuple[int, int] = (28, 28)  # (h, w) of the rectified crop the classifier reads
    num_classes: int = 10
    tps_grid: int = 4  # tps only: control points per side
    loc_channels: tuple[int, ...] = (20, 40)  # the localisation net's conv widths
    loc_hidden: int = 64
    cls_channels: tuple[int, ...] = (32, 64, 128)  # the classifier's conv widths
    cls_hidden: int = 256
    dropout: float = 0.3
    mean: float = 0.1307  # input normalisation: (pixel / 255 - mean) / std
    std: float = 0.3081
    # arch "photo" and "number" (model.photo_net, model.number_net): the coarse localisation view; "photo"
    # also the glimpse, in pixels.
    view_size: int = 64
    glimpse_size: int = 48
    # arch "seq" / "seqcnn" only (model.seq_net): up to ``max_len`` digits, one transformer per position,
    # each starting at its own point of a row with window half-sizes ``start_scale`` (x, y); the
    # localisation net sees the input average-pooled by ``view_pool``.
    max_len: int = 3
    start_scale: tuple[float, float] = (0.3, 1.0)
    view_pool: int = 2
    # arch "stcnn" only: spatial transformers on the classifier's feature maps, one before each of its conv
    # stages 2..k+1 (the paper's ST-CNN Multi: with the input transformer, one before each of the first k+1
    # convolution layers), each with its own small localisation net (model.multi.FeatureTransformer), affine.
    feature_transformers: int = 0
    # arch "number" only (model.number_net): the length logits add the crops' evidence, the reader's "no
    # digit" probability at every position (trained on crops past each number's end).
    crop_length: bool = False
    # arch "number" only: a second digit transformer per position refines each crop from a full-resolution
    # view around it (model.number_net.RefineLoc), composed onto the first's transform.
    refine: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose {', '.join(repr(a) for a in ARCHS)}")
        if self.transform not in FAMILIES:
            raise ValueError(f"unknown transform family {self.transform!r}; choose one of {', '.join(FAMILIES)}")
        for name in ("input_size", "output_size"):
            size = getattr(self, name)
            if len(size) != 2 or any(int(v) < 1 for v in size):
                raise ValueError(f"{name} must be two positive integers (H, W), got {size}")

    @classmethod
    def from_dict(cls, config: dict[str, Any] | ModelConfig) -> ModelConfig:
        if isinstance(config, ModelConfig):
            return config
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        typed: dict[str, Any] = dict(config)
        for name in ("input_size", "output_size", "loc_channels", "cls_channels"):
            if name in typed:
                typed[name] = tuple(int(v) for v in typed[name])
        if "start_scale" in typed:
            typed["start_scale"] = tuple(float(v) for v in typed["start_scale"])
        return cls(**typed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists for the tuples), as checkpoints and cards store it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


DEFAULTS: dict[str, Any] = ModelConfig().to_dict()


def full_config(config: dict[str, Any] | ModelConfig) -> ModelConfig:
    """The typed config of ``config`` (a checkpoint's dict, or a ``ModelConfig``), defaults filled in."""
    return ModelConfig.from_dict(config)


def check_input(x: Tensor, cfg: ModelConfig) -> None:
    """The model's boundary: ``x`` must be ``(B, C, H, W)`` as the config says, else a ValueError saying what
    arrived (rather than a matmul error deep inside)."""
    c = cfg.in_channels
    h, w = cfg.input_size
    if x.dim() != 4 or tuple(x.shape[1:]) != (c, int(h), int(w)):
        raise ValueError(f"input must be (B, {c}, {h}, {w}), got {tuple(x.shape)}")


def _conv_out(n: int) -> int:
    # 5x5 conv with padding 2 keeps the size; 2x2 max-pool floors it.
    return n // 2


def sample_filled(x: Tensor, grid: Tensor, fill: float) -> Tensor:
    """Bilinear ``GridSample`` of ``x`` at ``grid`` reading ``fill`` (normalised black) outside the input:
    differentiable in the grid (rounding to integer indices would have zero gradient)."""
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


class LocNet(nn.Module):
    """Localisation net: a small CNN on the input (first halved by max-pooling) regressing the parameters.

    Its last layer starts at zero weight and identity bias, so training starts from the identity transform.
    """

    def __init__(self, in_channels: int, input_size: tuple[int, int], channels: Sequence[int], hidden: int,
                 family: Family) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        h, w = input_size
        for _ in range(3):
            h, w = _conv_out(h), _conv_out(w)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * h * w, hidden), nn.ReLU(inplace=True))
        self.fc = nn.Linear(hidden, family.num_params)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(family.identity())

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.features(x)))  # (B, num_params)


class SpatialTransformer(nn.Module):
    """Localisation net -> grid generator (inverse mapping) -> bilinear sampler.

    ``forward(x)`` returns ``(rectified, params_out)``: the sampled ``(B, C, h, w)`` image and the
    family's exported parameters (``theta`` ``(B, 2, 3)`` for the affine-type families).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.family = build_family(cfg.transform, cfg.output_size, cfg.tps_grid)
        self.loc = LocNet(cfg.in_channels, cfg.input_size, cfg.loc_channels, cfg.loc_hidden,
                          self.family)
        self.fill = -cfg.mean / cfg.std  # normalised black

    def sample(self, x: Tensor, grid: Tensor) -> Tensor:
        return sample_filled(x, grid, self.fill)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self.loc(x)  # (B, num_params)
        grid = self.family.grid(p)  # (B, h, w, 2)
        return self.sample(x, grid), self.family.params_out(p)


class Classifier(nn.Module):
    """Three conv-BN-ReLU-pool stages and two fully connected layers, on the ``output_size`` image.

    With ``feature_transformers`` = k, a spatial transformer on the feature maps precedes each of the conv
    stages 2..k+1 (``model.multi.FeatureTransformer``: C x H x W in, the same out, starting at the identity);
    ``forward_with_params`` then also returns their thetas ``(B, k, 2, 3)``."""

    def __init__(self, in_channels: int, size: tuple[int, int], channels: Sequence[int], hidden: int,
                 num_classes: int, dropout: float, feature_transformers: int = 0) -> None:
        super().__init__()
        from model.multi import FeatureTransformer

        if not 0 <= feature_transformers < len(channels):
            raise ValueError(f"feature_transformers must be 0..{len(channels) - 1} (before conv stages 2..), "
                             f"got {feature_transformers}")
        layers: list[nn.Module] = []
        self.transformers = nn.ModuleList()
        c_in = in_channels
        h, w = size
        for i, c in enumerate(channels):
            if 1 <= i <= feature_transformers:
                # A stage boundary: split the layers so that the transformer sits between two stages.
                self.transformers.append(FeatureTransformer(c_in, (h, w)))
                layers.append(nn.Identity())
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in, h, w = c, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * h * w, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_params(x)[0] if len(self.transformers) else self.head(self.features(x))

    def forward_with_params(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        thetas = []
        t = 0
        for layer in self.features:
            if isinstance(layer, nn.Identity):  # where a feature-map transformer goes
                x, theta = self.transformers[t](x)
                thetas.append(theta)
                t += 1
            else:
                x = layer(x)
        return self.head(x), torch.stack(thetas, dim=1) if thetas else None


class STCNN(nn.Module):
    """Spatial transformer in front of the classifier. ``forward`` -> ``(logits, params, rectified)``."""

    def __init__(self, config: dict[str, Any] | ModelConfig) -> None:
        super().__init__()
        self.config = full_config(config)
        cfg = self.config
        self.stn = SpatialTransformer(cfg)
        self.classifier = Classifier(cfg.in_channels, cfg.output_size, cfg.cls_channels,
                                     cfg.cls_hidden, cfg.num_classes, cfg.dropout, cfg.feature_transformers)

    @property
    def output_names(self) -> list[str]:
        param_name = {"projective": "homography", "tps": "control_points"}.get(self.config.transform, "theta")
        extra = ["feature_theta"] if self.config.feature_transformers else []
        return ["logits", param_name, "rectified", *extra]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """-> ``(logits, params, rectified)``, and ``feature_theta`` ``(B, k, 2, 3)`` with feature-map
        transformers (``feature_transformers`` = k)."""
        check_input(x, self.config)
        rectified, params = self.stn(x)
        if not self.config.feature_transformers:
            return self.classifier(rectified), params, rectified
        logits, feature_theta = self.classifier.forward_with_params(rectified)
        assert feature_theta is not None
        return logits, params, rectified, feature_theta


class BaselineCNN(nn.Module):
    """The same classifier without the transformer: it sees the whole input, resampled to ``output_size``
    by the fixed identity grid (a plain bilinear resize), so the only difference is the learned transform.
    ``forward`` -> ``(logits, theta, rectified)`` with ``theta`` the constant identity, for a uniform interface.
    """

    def __init__(self, config: dict[str, Any] | ModelConfig) -> None:
        super().__init__()
        self.config = full_config(config)
        cfg = self.config
        self.output_size = cfg.output_size
        self.fill = -cfg.mean / cfg.std
        self.register_buffer("theta_id", torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), persistent=False)
        self.classifier = Classifier(cfg.in_channels, self.output_size, cfg.cls_channels,
                                     cfg.cls_hidden, cfg.num_classes, cfg.dropout)

    output_names = ["logits", "theta", "rectified"]
    theta_id: Tensor  # (1, 2, 3) buffer

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_input(x, self.config)
        theta = self.theta_id.expand(x.shape[0], 2, 3)
        grid = affine_grid(theta, self.output_size)
        rectified = sample_filled(x, grid, self.fill)
        return self.classifier(rectified), theta, rectified


def build_model(config: dict[str, Any] | ModelConfig) -> nn.Module:
    cfg = full_config(config)
    if cfg.arch == "stcnn":
        return STCNN(cfg)
    if cfg.arch == "cnn":
        return BaselineCNN(cfg)
    if cfg.arch == "photo":
        from model.photo_net import PhotoSTN

        return PhotoSTN(cfg)
    if cfg.arch in ("seq", "seqcnn"):
        from model.seq_net import SequenceCNN, SequenceSTN

        return SequenceSTN(cfg) if cfg.arch == "seq" else SequenceCNN(cfg)
    if cfg.arch in ("number", "numbercnn"):
        from model.number_net import NumberCNN, NumberSTN

        return NumberSTN(cfg) if cfg.arch == "number" else NumberCNN(cfg)
    raise ValueError(f"unknown arch {cfg.arch!r}; choose {', '.join(repr(a) for a in ARCHS)}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
