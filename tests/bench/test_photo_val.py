"""bench.photo_val: the bundled photo model's validation error from its ONNX file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import photo_val
from model.photo import TRAIN_FONT_DIRS, font_files

ONNX = Path(__file__).resolve().parents[2] / "service" / "model_repository" / "stn_photo" / "1" / "model.onnx"


def test_bundled_model_reads_its_validation_photos(capsys: pytest.CaptureFixture[str]) -> None:
    if not font_files(TRAIN_FONT_DIRS):
        pytest.skip("no training fonts: run tests/setup_system.sh")
    wrong, n = photo_val.val_error(ONNX, "legible", n=40, batch=16)
    assert n == 40 and wrong <= 3  # 1.8 % on 1,600
    assert photo_val.main([str(ONNX), "--pen", "earlier", "--n", "9"]) == 0
    assert "of 9 earlier-pen validation photos wrong" in capsys.readouterr().out
