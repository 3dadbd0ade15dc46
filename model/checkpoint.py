"""Checkpoints: config + weights (+ data description, metrics, card), so a model is rebuilt from the file alone.

This module and ``model.nets`` are all that export needs; neither imports training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.nets import ModelConfig, build_model, full_config

FORMAT = "stn-checkpoint/1"


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig | dict[str, Any], data: dict[str, Any],
                    metrics: dict[str, Any], card: dict[str, Any] | None = None,
                    train_state: dict[str, Any] | None = None) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "config": full_config(config).to_dict(), "state_dict": model.state_dict(), "data": data,
            "metrics": metrics, "card": card, "train_state": train_state}
    write_checkpoint(path, blob)


def write_checkpoint(path: str | Path, blob: dict[str, Any]) -> None:
    """Write a checkpoint dict atomically: a crash mid-write never leaves a half checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not an {FORMAT} checkpoint")
    return ckpt


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint, in eval mode on the CPU."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
