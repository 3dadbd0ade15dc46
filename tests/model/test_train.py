"""A tiny training run (1,000 digits, 1 epoch) whose loss falls; resume; the card and the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from model import distort
from model.checkpoint import load_checkpoint
from model.nets import build_model
from model.train import TRAIN_DEFAULTS, main, model_config, train


def _opts(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    return {**TRAIN_DEFAULTS, "distortion": "rts", "epochs": 1, "batch_size": 32, "limit_train": 1000,
            "threads": 1, "out": str(tmp_path / "run"), "skip_test": True, **kw}


def _val_loss(model: torch.nn.Module, mnist: dict[str, Any]) -> float:
    x, y = distort.val_set("rts", mnist)
    x, y = x[:1000], y[:1000]
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model((x - 0.1307) / 0.3081)[0], y))


def test_tiny_training_run_loss_falls(tmp_path: Path, mnist: dict[str, Any]) -> None:
    opts = _opts(tmp_path, schedule="none", lr=1e-3, batch_size=16)
    torch.manual_seed(opts["seed"])
    before = _val_loss(build_model(model_config(opts)), mnist)
    card = train(opts, command="test")
    model, ckpt = load_checkpoint(tmp_path / "run" / "best.ckpt")
    after = _val_loss(model, mnist)
    assert after < before - 0.1, (before, after)  # from chance (ln 10 = 2.30) down
    assert len(card["history"]) == 1 and card["test_error"] is None  # skip_test: MNIST-test untouched
    assert ckpt["config"]["input_size"] == [42, 42] and ckpt["card"]["params"] == card["params"]
    for f in ("card.json", "card.md", "curves.png", "best.ckpt", "last.ckpt"):
        assert (tmp_path / "run" / f).exists(), f


def test_resume_continues_where_it_stopped(tmp_path: Path) -> None:
    opts = _opts(tmp_path, epochs=2, limit_train=256, batch_size=64)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(opts))
    main(["--config", str(cfg_file), "--stop-after", "1"])
    assert not (tmp_path / "run" / "card.json").exists()  # stopped early: no card yet
    stopped = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert stopped["train_state"]["epoch"] == 0
    main(["--resume", str(tmp_path / "run" / "last.ckpt")])
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    assert card["history"][0] == stopped["train_state"]["history"][0]
    assert card["command"].startswith("stn-train --resume")


def test_trainer_options_come_from_defaults_then_the_config_file_then_flags(tmp_path: Path) -> None:
    """``stn-train-photo`` and ``stn-train-seq`` read their options this way (model.train.parse_options)."""
    from model.photo_train import OPTS as PHOTO
    from model.seq_train import OPTS as SEQ
    from model.train import parse_options

    cfg = tmp_path / "c.json"
    cfg.write_text('{"steps": 77, "start_scale": [0.4, 0.4], "lr": 0.01}')
    opts = parse_options("stn-train-seq", None, SEQ, ["--config", str(cfg), "--lr", "0.5", "--output-size", "32",
                                                       "32"])
    assert (opts["steps"], opts["start_scale"], opts["lr"], opts["output_size"]) == (77, [0.4, 0.4], 0.5, [32, 32])
    assert opts["batch_size"] == SEQ["batch_size"]
    assert parse_options("stn-train-photo", None, PHOTO, ["--epochs", "2"])["epochs"] == 2
    cfg.write_text('{"stepz": 1}')
    with pytest.raises(SystemExit):
        parse_options("stn-train-seq", None, SEQ, ["--config", str(cfg)])
