"""The photo reader's pre-training (model/photo_reader.py) and its hand-over to the photo model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import photo_reader
from model.nets import build_model
from model.photo import CROP_PER_INK, TRAIN_FONT_DIRS, font_files, ink_extent
from model.photo_net import PhotoSTN, sample_border
from model.photo_reader import SIDE, Bank, crops, font_bank


@pytest.fixture(scope="module")
def bank(mnist) -> Bank:
    fonts = font_files(TRAIN_FONT_DIRS)[:3]
    if not fonts:
        pytest.skip("no training fonts: run tests/setup_system.sh")
    return Bank(mnist["train_images"][:500], mnist["train_labels"][:500], fonts)


def test_font_digits_sit_in_the_frame_as_mnist_digits_do() -> None:
    fonts = font_files(TRAIN_FONT_DIRS)[:2]
    if not fonts:
        pytest.skip("no training fonts: run tests/setup_system.sh")
    images, labels = font_bank(fonts)
    assert images.shape == (20, SIDE, SIDE) and labels.tolist() == list(range(10)) * 2
    for im in images:
        x0, y0, x1, y1 = ink_extent(im.astype(np.float32) / 255.0)
        assert 17 <= max(x1 - x0, y1 - y0) <= 20  # the longer ink side fitted to 20 px, as MNIST's
        assert abs((x0 + x1) / 2 - SIDE / 2) <= 1.5 and abs((y0 + y1) / 2 - SIDE / 2) <= 1.5


def test_true_crop_is_the_generators(bank: Bank) -> None:
    """Each digit's crop is the square of 1.4 times its longer ink side about its ink box's centre: unjittered,
    it holds all the ink, and its side is the photo generator's."""
    for i in [0, 7, 499, 500, 520]:
        x0, y0, x1, y1 = ink_extent(bank.x[i, 0].numpy())
        half_px = float(bank.theta[i, 0, 0]) * SIDE / 2
        assert half_px * 2 == pytest.approx(max(x1 - x0, y1 - y0) * CROP_PER_INK, rel=1e-5)
        crop = sample_border(bank.x[i:i + 1], bank.theta[i:i + 1], (64, 64))
        assert float(crop.sum()) * (2 * half_px / 64) ** 2 == pytest.approx(float(bank.x[i].sum()), rel=0.03)


def test_crops_are_photo_like_and_reproducible(bank: Bank) -> None:
    idx = bank.draw(torch.Generator().manual_seed(3), 256, 0.5)
    assert (idx >= bank.n_mnist).float().mean().item() == pytest.approx(0.5, abs=0.1)
    a = crops(bank, idx, torch.Generator().manual_seed(5))
    b = crops(bank, idx, torch.Generator().manual_seed(5))
    assert a.shape == (256, 1, 32, 32) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(torch.round(a * 255), a * 255)  # 8-bit, as a decoded photo
    contrast = a.amax((1, 2, 3)) - a.amin((1, 2, 3))
    assert float(contrast.min()) > 0.05  # every crop shows its digit


def test_reader_weights_fit_the_photo_model() -> None:
    model = build_model({"arch": "photo", "transform": "affine", "input_size": [256, 256],
                         "output_size": [32, 32], "mean": 0.0, "std": 1.0})
    assert isinstance(model, PhotoSTN)
    model.classifier.load_state_dict(photo_reader.reader(32).state_dict())  # strict: same keys and shapes


def test_reader_then_photo_model_train(tmp_path: Path, mnist) -> None:
    if not font_files(TRAIN_FONT_DIRS):
        pytest.skip("no training fonts: run tests/setup_system.sh")
    from model import photo_train

    out = tmp_path / "reader"
    summary = photo_reader.train({**photo_reader.OPTS, "steps": 4, "eval_every": 2, "val_photos": 20,
                                  "batch_size": 16, "out": str(out)}, "test")
    assert [r["step"] for r in summary["history"]] == [2, 4]
    assert (out / "best.pt").exists() and json.loads((out / "train.json").read_text())["best_val_error"] <= 1
    state = torch.load(out / "best.pt")["state_dict"]
    photo = photo_train.train({**photo_train.OPTS, "epochs": 1, "steps_per_epoch": 2, "batch_size": 4,
                               "workers": 0, "val_photos": 8, "out": str(tmp_path / "photo"),
                               "init_classifier": str(out / "best.pt"), "cls_lr_scale": 0.0}, "test")
    assert len(photo["history"]) == 1
    from model.checkpoint import read_checkpoint

    trained = read_checkpoint(str(tmp_path / "photo" / "last.ckpt"))["state_dict"]
    # At a learning rate of zero the classifier's weights are the reader's (batch-norm statistics still move).
    for k, v in state.items():
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(trained["classifier." + k], v), k
