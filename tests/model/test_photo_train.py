"""The photo trainer's options (model/photo_train.py) and the card's account of them (model/photo_card.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model import photo_card, photo_train
from model.photo import TEST_FONT_DIRS, TRAIN_FONT_DIRS, PhotoGenerator, font_files


def _train(tmp_path: Path, name: str, **opts: object) -> dict:
    if not font_files(TRAIN_FONT_DIRS):
        pytest.skip("no training fonts: run tests/setup_system.sh")
    return photo_train.train({**photo_train.OPTS, "epochs": 1, "steps_per_epoch": 2, "batch_size": 4,
                              "workers": 0, "val_photos": 8, "out": str(tmp_path / name), **opts}, "test")


def test_true_crop_weight_zero_leaves_the_term_out(tmp_path: Path) -> None:
    with_term = _train(tmp_path, "with")["history"][0]
    without = _train(tmp_path, "without", true_crop_weight=0.0)["history"][0]
    assert with_term["train_ce_gt"] > 0
    assert "train_ce_gt" not in without


def test_loss_sentence_follows_the_options() -> None:
    default = photo_card.loss_sentence(photo_train.OPTS)
    assert "weight falling from 1 to 0" in default and "held at the reader's weights" not in default
    frozen = photo_card.loss_sentence({**photo_train.OPTS, "true_crop_weight": 0.0, "cls_lr_scale": 0.0,
                                       "init_classifier": "runs/r/best.pt", "scribbles": 0.3})
    assert "true crop" not in frozen
    assert "held at the reader's weights" in frozen and frozen.endswith("the reader's cross-entropy.")
    assert "scribbles" not in frozen  # the schedule's sentence names each phase's scribbles


def test_eval_set_a_draws_the_pen_it_is_asked_for(mnist) -> None:
    from bench import photo_eval

    fonts = font_files(TEST_FONT_DIRS)
    if not fonts:
        pytest.skip("no held-out fonts: run tests/setup_system.sh")
    images, labels = mnist["test_images"][:300], mnist["test_labels"][:300]
    n = 30
    sets = {}
    for legible in (True, False):
        got = photo_eval.set_a("medium", n, images, labels, legible_pen=legible)
        gen = PhotoGenerator(images, labels, fonts, legible_pen=legible)
        rng = np.random.default_rng([photo_eval.SEED_A, photo_eval.CONDITIONS.index("medium")])
        assert [d for d, _ in got] == [gen.render(rng, "medium").data for _ in range(n)]
        sets[legible] = got
    # The same photos but where the earlier rule drew a max-filter of 5 on a digit (whose ink box it widens).
    same = [a == b for (a, _), (b, _) in zip(sets[True], sets[False], strict=True)]
    assert 0 < same.count(False) < n
    assert [(r["label"], r["size"]) for _, r in sets[True]] == [(r["label"], r["size"]) for _, r in sets[False]]
