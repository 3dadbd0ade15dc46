"""The number-photo models (model.number_net) and their trainer (model.number_train): shapes, the composed
transforms, the line targets, the losses' gradients, and the pool."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from model.multi import NO_DIGIT
from model.nets import build_model
from model.number import fixed_set
from model.number_net import (
    LINE_PER_CROP,
    REFINE_NAMES,
    STRIP_ASPECT,
    STRIP_SIZE,
    NumberCNN,
    NumberSTN,
    compose,
    crop_evidence,
    line_theta,
    refine_theta,
)
from model.number_train import WeightEMA, errors, jitter, line_targets, next_slots, number_losses
from model.photo import TRAIN_FONT_DIRS, font_files

SMALL = {"input_size": [256, 256], "output_size": [32, 32], "loc_hidden": 32, "cls_channels": [8, 8, 8],
         "cls_hidden": 16, "max_len": 5, "mean": 0.0, "std": 1.0}
OPTS = {"label_smoothing": 0.05, "loc_weight": 1.0, "gt_jitter": 0.12}


def test_number_stn_outputs_a_crop_per_position_and_the_line() -> None:
    torch.manual_seed(0)
    model = build_model({**SMALL, "arch": "number"}).eval()
    assert isinstance(model, NumberSTN)
    length, digits, theta, crops, t_line, strip = model(torch.rand(2, 1, 256, 256))
    assert length.shape == (2, 6) and digits.shape == (2, 5, NO_DIGIT + 1)
    assert theta.shape == (2, 5, 2, 3) and crops.shape == (2, 5, 1, 32, 32)
    assert t_line.shape == (2, 2, 3) and strip.shape == (2, 1, *STRIP_SIZE)
    with pytest.raises(ValueError, match=r"input must be \(B, 1, 256, 256\)"):
        model(torch.rand(2, 1, 128, 128))


def test_number_cnn_has_the_sequence_contract() -> None:
    model = build_model({**SMALL, "arch": "numbercnn", "output_size": [64, 64]}).eval()
    assert isinstance(model, NumberCNN)
    length, digits, theta, resized = model(torch.rand(3, 1, 256, 256))
    assert length.shape == (3, 6) and digits.shape == (3, 5, NO_DIGIT + 1)
    assert torch.equal(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 1, 2, 3))
    assert resized.shape == (3, 1, 1, 64, 64)


def test_compose_maps_through_the_strip() -> None:
    """A point of a digit crop goes crop -> strip (isotropic units) -> strip normalised -> input."""
    torch.manual_seed(1)
    t_line = line_theta(torch.tensor([[0.1, -0.2]]), torch.tensor([math.log(0.15)]), torch.tensor([0.3]))
    rel = torch.randn(1, 5, 2, 3) * 0.5
    theta = compose(t_line, rel)
    pq = torch.tensor([0.4, -0.7, 1.0])
    uv = rel[0] @ pq  # (5, 2) strip isotropic units
    uv_n = torch.stack([uv[:, 0] / STRIP_ASPECT, uv[:, 1], torch.ones(5)], 1)
    expected = uv_n @ t_line[0].T
    assert torch.allclose(theta[0] @ pq, expected, atol=1e-6)
    # The strip is STRIP_ASPECT times as long as it is high, in input pixels too (the input is square).
    lin = t_line[0, :, :2]
    assert lin[:, 0].norm() / lin[:, 1].norm() == pytest.approx(STRIP_ASPECT)
    assert STRIP_SIZE[1] / STRIP_SIZE[0] == STRIP_ASPECT


def test_line_targets_of_a_known_row() -> None:
    """Three digits of half-side 0.1 along a row turned by 0.2 rad: centre, angle and strip height."""
    angle, a = 0.2, 0.1
    d = torch.tensor([math.cos(angle), math.sin(angle)])
    centres = [torch.tensor([0.1, 0.0]) + k * 0.25 * d for k in range(3)]
    theta = torch.zeros(1, 5, 2, 3)
    for i, c in enumerate(centres):
        theta[0, i, :, :2] = a * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle),
                                                                                    math.cos(angle)]])
        theta[0, i, :, 2] = c
    valid = torch.tensor([[True, True, True, False, False]])
    c, hh, ang = line_targets(theta, valid)
    assert torch.allclose(c[0], centres[1], atol=1e-6)
    assert float(ang[0]) == pytest.approx(angle, abs=1e-6)
    assert float(hh[0]) == pytest.approx(LINE_PER_CROP * a, rel=1e-5)
    # One digit: its own angle.
    c1, _, ang1 = line_targets(theta, torch.tensor([[True, False, False, False, False]]))
    assert torch.allclose(c1[0], centres[0]) and float(ang1[0]) == pytest.approx(angle, abs=1e-6)


@pytest.fixture(scope="module")
def photos(mnist: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fonts = font_files(TRAIN_FONT_DIRS)
    if not fonts:
        pytest.skip("no training fonts (tests/setup_system.sh installs them)")
    return fixed_set(mnist["train_images"][:2000], mnist["train_labels"][:2000], fonts, 5, 10, 256)


def test_the_true_strip_holds_every_digit(photos: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """With the line targets, every digit crop's centre lies inside the strip, the whole row within its
    length: what the digit transformers localise on shows them all."""
    _, digits, thetas = photos
    d, t = torch.from_numpy(digits), torch.from_numpy(thetas)
    valid = d != NO_DIGIT
    c, hh, ang = line_targets(t, valid)
    t_line = line_theta(c, hh.log(), ang)
    inv = torch.linalg.inv(t_line[:, :, :2])
    uv = (inv[:, None] @ (t[..., 2] - c[:, None])[..., None])[..., 0]  # strip normalised
    inside = (uv[..., 0].abs() < 0.8) & (uv[..., 1].abs() < 0.5)
    assert bool(inside[valid].all())


def test_number_losses_reach_every_stage(photos: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    torch.manual_seed(0)
    model = build_model({**SMALL, "arch": "number"})
    assert isinstance(model, NumberSTN)
    x8, digits, thetas = photos
    x = torch.from_numpy(x8[:4]).float()[:, None] / 255.0
    loss, parts, logits = number_losses(model, x, torch.from_numpy(digits[:4]), torch.from_numpy(thetas[:4]),
                                        OPTS, 0.5)
    assert math.isfinite(float(loss)) and set(parts) >= {"length_ce", "digit_ce", "corner", "line", "ce_gt"}
    loss.backward()
    for name in ("line_loc.head.weight", "strip_loc.fc.weight", "reader.head.4.weight", "length.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_refinement_starts_at_the_identity_and_composes_in_the_crops_own_units() -> None:
    """At initialisation the refining transformers leave every crop where the first put it; a known correction
    (half the size, shifted half a side right in the crop's own turned frame) lands where the algebra says."""
    torch.manual_seed(0)
    model = build_model({**SMALL, "arch": "number", "refine": True})
    assert isinstance(model, NumberSTN) and model.output_names[-2:] == REFINE_NAMES
    x = torch.rand(2, 1, 256, 256)
    with torch.no_grad():
        loc = model.locate(x)
    torch.testing.assert_close(loc["theta"], loc["coarse"])
    assert loc["context"].shape == (2, 5, 1, 32, 32)
    c, s = math.cos(0.3), math.sin(0.3)
    coarse = torch.tensor([[0.2 * c, -0.2 * s, 0.1], [0.2 * s, 0.2 * c, -0.3]])
    refined = refine_theta(coarse, torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.5, 0.0]]))
    want = torch.tensor([[0.1 * c, -0.1 * s, 0.1 + 0.1 * c], [0.1 * s, 0.1 * c, -0.3 + 0.1 * s]])
    torch.testing.assert_close(refined, want)


def test_refining_losses_reach_both_digit_stages(photos: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    torch.manual_seed(0)
    model = build_model({**SMALL, "arch": "number", "refine": True, "crop_length": True})
    assert isinstance(model, NumberSTN)
    x8, digits, thetas = photos
    x = torch.from_numpy(x8[:4]).float()[:, None] / 255.0
    loss, parts, _ = number_losses(model, x, torch.from_numpy(digits[:4]), torch.from_numpy(thetas[:4]), OPTS, 0.5)
    assert parts["coarse"] > 0 and parts["corner"] > 0
    loss.backward()
    for name in ("strip_loc.fc.weight", "refine_loc.head.3.weight", "reader.head.4.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_weight_ema_averages_floats_and_copies_counters() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(step=1000)  # past the warm-up: the decay itself
    torch.testing.assert_close(ema.module[0].weight, start + 0.1)
    assert int(ema.module[1].num_batches_tracked) == 7 and not ema.module.training
    ema.update(step=0)  # warm-up: decay (1 + 0) / (10 + 0) = 0.1, the average moves most of the way
    torch.testing.assert_close(ema.module[0].weight, start + 0.1 + 0.9 * 0.9)


def test_crop_evidence_is_the_readers_log_likelihood_of_each_length() -> None:
    """For n digits: log P(a digit) at positions below n plus log P(no digit) from n on, each from the
    position's own softmax; a reader sure of three digits then two blanks gives length 3 the evidence."""
    torch.manual_seed(3)
    logits = torch.randn(4, 5, NO_DIGIT + 1) * 3
    ev = crop_evidence(logits)
    p_none = logits.softmax(-1)[..., NO_DIGIT]
    for n in range(6):
        want = torch.log1p(-p_none[:, :n]).sum(1) + p_none[:, n:].log().sum(1)
        assert torch.allclose(ev[:, n], want, atol=1e-5), n
    sure = torch.full((1, 5, NO_DIGIT + 1), -20.0)
    sure[0, :3, 7] = 20.0
    sure[0, 3:, NO_DIGIT] = 20.0
    assert int(crop_evidence(sure).argmax(1)) == 3


def test_crop_length_adds_the_evidence_to_the_length_head(photos: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    torch.manual_seed(0)
    x = torch.from_numpy(photos[0][:2]).float()[:, None] / 255.0
    plain = build_model({**SMALL, "arch": "number"}).eval()
    with_crops = build_model({**SMALL, "arch": "number", "crop_length": True}).eval()
    assert isinstance(with_crops, NumberSTN)
    with_crops.load_state_dict(plain.state_dict())
    with torch.no_grad():
        a, b = plain(x), with_crops(x)
    assert torch.equal(a[1], b[1])  # the same digits; only the length logits differ, by the evidence
    assert torch.allclose(b[0], a[0] + crop_evidence(a[1]), atol=1e-5)


def test_next_slots_continue_each_number_by_its_step() -> None:
    """Past the end, the last crop moved on by the mean step between the digits (one digit: 1.3 of its
    half-sides along its own x axis, here turned by 90 degrees); the true crops are left as they are."""
    t = torch.zeros(2, 5, 2, 3)
    for i, cx in enumerate([-0.5, -0.3, -0.2]):
        t[0, i] = torch.tensor([[0.1, 0.0, cx], [0.0, 0.1, 0.2 + 0.05 * i]])
    t[1, 0] = torch.tensor([[0.0, -0.1, 0.3], [0.1, 0.0, -0.1]])  # turned 90 degrees: its x axis points down
    valid = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    out = next_slots(t, valid)
    assert torch.equal(out[valid], t[valid])
    assert torch.allclose(out[0, 3:, :, 2], torch.tensor([[-0.05, 0.35], [0.1, 0.4]]), atol=1e-6)
    assert torch.allclose(out[1, 1:, :, 2], torch.tensor([[0.3, -0.1 + 0.13 * k] for k in range(1, 5)]),
                          atol=1e-6)
    assert torch.equal(out[0, 3:, :, :2], t[0, 2:3, :, :2].expand(2, 2, 2))


def test_crop_length_losses_teach_no_digit_past_the_end(photos: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    torch.manual_seed(0)
    model = build_model({**SMALL, "arch": "number", "crop_length": True})
    assert isinstance(model, NumberSTN)
    x8, digits, thetas = photos
    x = torch.from_numpy(x8[:4]).float()[:, None] / 255.0
    d = torch.from_numpy(digits[:4])
    assert (d == NO_DIGIT).any()  # lengths 1-4: positions past the end
    loss, parts, logits = number_losses(model, x, d, torch.from_numpy(thetas[:4]), OPTS, 0.5)
    assert set(parts) >= {"end_ce", "length_ce", "digit_ce", "corner", "ce_gt"} and parts["end_ce"] > 0
    assert logits.shape == (int((d != NO_DIGIT).sum()), NO_DIGIT + 1)
    loss.backward()
    for name in ("strip_loc.fc.weight", "reader.head.4.weight", "length.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_jitter_misses_the_crop_by_its_spread_in_the_crops_own_units() -> None:
    """A turned crop, jittered: zero is no change; at j the centre moves N(0, j) half-sides, in the crop's own
    frame (so its turn and size do not change the spread), the side scales by exp N(0, 0.8 j) and the turn
    changes by N(0, j) radians."""
    torch.manual_seed(0)
    a, turn = 0.1, 0.4
    theta = torch.tensor([[a * math.cos(turn), -a * math.sin(turn), 0.2],
                          [a * math.sin(turn), a * math.cos(turn), -0.3]]).expand(20_000, 2, 3)
    assert torch.equal(jitter(theta, 0.0), theta)
    j = 0.12
    out = jitter(theta, j)
    inv = torch.linalg.inv(theta[:, :, :2])
    shift = (inv @ (out[:, :, 2:] - theta[:, :, 2:]))[..., 0]  # in the crop's half-sides
    assert shift.mean(0).abs().max() < 0.005 and (shift.std(0) - j).abs().max() < 0.005
    rel = inv @ out[:, :, :2]  # the jitter's own linear part: a turn times a scale
    log_s = 0.5 * torch.log(torch.linalg.det(rel))
    assert abs(float(log_s.std()) - 0.8 * j) < 0.004
    assert abs(float(torch.atan2(rel[:, 1, 0], rel[:, 0, 0]).std()) - j) < 0.004
    assert torch.allclose(rel[:, 0, 0], rel[:, 1, 1], atol=1e-5)
    assert torch.allclose(rel[:, 0, 1], -rel[:, 1, 0], atol=1e-5)


def test_errors_count_misread_missed_and_added_digits() -> None:
    t = NO_DIGIT
    truth = np.array([[1, 2, 3, t, t], [4, 5, t, t, t]])
    pred = np.array([[1, 2, 3, t, t], [4, 5, 6, t, t]])  # the second has a digit too many
    assert errors(pred, truth) == {"number_error": 0.5, "digit_error": 1 / 5}
    pred = np.array([[1, 2, t, t, t], [4, 6, t, t, t]])  # missed one, misread one
    assert errors(pred, truth) == {"number_error": 1.0, "digit_error": 2 / 5}


def test_fixed_set_is_reproducible_and_pads(mnist: dict[str, Any]) -> None:
    fonts = font_files(TRAIN_FONT_DIRS)
    if not fonts:
        pytest.skip("no training fonts (tests/setup_system.sh installs them)")
    gen_args = (mnist["train_images"][:500], mnist["train_labels"][:500], fonts)
    a = fixed_set(*gen_args, 3, 5, 128)
    b = fixed_set(*gen_args, 3, 5, 128)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    lengths = (a[1] != NO_DIGIT).sum(1)
    assert lengths.tolist() == [1, 2, 3, 4, 5]
    assert not a[2][0, 1:].any()  # zero thetas past the end


@pytest.mark.parametrize("refine", [False, True])
def test_export_has_a_grid_sample_per_transformer_and_matches_torch(refine: bool) -> None:
    """Six native GridSample nodes (the strip and five digits; eleven with the five refining views), every
    transformer's parameters and samples among the outputs, and the graph computes what PyTorch does."""
    import onnxruntime as ort

    from export.onnx_export import check_graph, expected_io, export_graph
    from model.nets import full_config

    cfg = full_config({**SMALL, "arch": "number", "crop_length": True, "refine": refine})  # the evidence too
    torch.manual_seed(2)
    model = build_model(cfg).eval()
    with torch.no_grad():  # transforms that depend on the input
        torch.nn.init.normal_(model.strip_loc.fc.weight, std=0.01)
        torch.nn.init.normal_(model.line_loc.head.weight, std=0.05)
        if model.refine_loc is not None:
            torch.nn.init.normal_(model.refine_loc.head[-1].weight, std=0.01)
    proto = export_graph(model, cfg)
    io = expected_io(cfg, model.output_names)
    assert io["theta"] == [5, 2, 3] and io["rectified"] == [5, 1, 32, 32]
    assert io["line_theta"] == [2, 3] and io["line"] == [1, *STRIP_SIZE]
    if refine:
        assert io["coarse_theta"] == [5, 2, 3] and io["context"] == [5, 1, 32, 32]
    ops = check_graph(proto, io)
    assert ops["GridSample"] == (11 if refine else 6) and "AffineGrid" not in ops
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1, 256, 256)
    with torch.no_grad():
        want = model(x)
    for got, w in zip(sess.run(None, {"image": x.numpy()}), want, strict=True):
        np.testing.assert_allclose(got, w.numpy(), atol=2e-3, rtol=0)


@pytest.mark.parametrize(("arch", "crop_length", "refine"),
                         [("number", False, False), ("number", True, True), ("numbercnn", False, False)])
def test_a_short_training_run_from_a_pool(tmp_path: Path, mnist: dict[str, Any], arch: str,
                                          crop_length: bool, refine: bool) -> None:
    from model.checkpoint import load_checkpoint
    from model.number_train import OPTS, train

    if not font_files(TRAIN_FONT_DIRS):
        pytest.skip("no training fonts (tests/setup_system.sh installs them)")
    opts = {**OPTS, "arch": arch, "loc_hidden": 16, "cls_channels": [8, 8, 8], "cls_hidden": 16,
            "output_size": [32, 32], "steps": 6, "batch_size": 4, "val_every": 3, "val_size": 10, "test_size": 10,
            "pool": str(tmp_path / "pool"), "pool_size": 500, "pool_workers": 1, "out": str(tmp_path / "run"),
            # the crop-length run also refines its crops, averages its weights and takes bfloat16 steps
            "crop_length": crop_length, "refine": refine, "ema": 0.99 if refine else 0.0, "bf16": crop_length}
    summary = train(opts, "test")
    assert [h["step"] for h in summary["history"]] == [3, 6]
    m = summary["metrics"]
    assert 0 <= m["test_number_error"] <= 1 and 0 <= m["test_digit_error"] and m["test_size"] == 10
    model, ckpt = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert ckpt["data"]["dataset"] == "number-photo" and ckpt["data"]["resize"] == "letterbox"
    assert isinstance(model, NumberSTN if arch == "number" else NumberCNN)
    assert model.config.crop_length is crop_length and model.config.refine is refine
    assert summary["pool"]["request"]["n"] == 500


def test_a_polarity_tie_is_left_out_of_the_parity_check_and_counted() -> None:
    """The strip and each crop are flipped by the sign of their skewness: the export's check asks the model
    for those skewnesses and leaves out a sample at which one is within rounding of zero, saying so."""
    from export.verify import POLARITY_TIE, Tolerances, compare, polarity_ties

    model = build_model({**SMALL, "arch": "number"}).eval()
    x = torch.rand(3, 1, 256, 256)
    skew = model.polarity_skew(x)
    assert skew.shape == (3, 6)
    tied = polarity_ties(model, x)
    assert tied is not None and tied.tolist() == (skew.abs() < POLARITY_TIE).any(1).tolist()
    wide = polarity_ties(model, x, 10 * float(skew.abs().max()))  # a model with wider bounds has wider ties
    assert wide is not None and wide.all()
    names = ["logits"]
    ref = [np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])]
    got = [np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])]  # sample 1 flipped
    assert compare("x", names, ref, got, Tolerances()).failures(names, Tolerances())
    p = compare("x", names, ref, got, Tolerances(), exclude=np.array([False, True, False]))
    assert p.failures(names, Tolerances()) == [] and p.polarity_ties == 1 and p.n == 2
    assert polarity_ties(build_model({**SMALL, "arch": "numbercnn"}), x) is None


def test_a_new_number_card_carries_the_previous_cards_runs_and_says_its_recipe() -> None:
    """``--carry``: the bundled card's model and other runs become carried rows with their own test figures; the
    reproduce line names the card instead of run folders that are gone; the loss sentence follows the run's
    true-crop options."""
    from model.number_card import carried_runs, loss_sentence, markdown, recipe

    previous = json.loads(Path("service/model_repository/stn_number/card.json").read_text())
    rows = carried_runs(previous)
    assert len(rows) == 1 + len(previous["other_runs"]) and all(r["carried"] for r in rows)
    assert rows[0]["number_error"] == previous["test_number_error"] and rows[0]["command"] == previous["command"]
    assert rows[0]["number_interval"] == previous["test_number_interval"]
    card = {**previous, "other_runs": rows, "carried_from": "old/card.json", "context": "alone on both cores",
            "baseline": {**previous["baseline"], "carried": True},
            "training": {**previous["training"], "gt_floor": 0.3, "gt_jitter": 0.12}}
    text = markdown(card)
    assert text.count("| another run of this model (carried):") == len(rows)
    reproduce = text.split("```")[-2].splitlines()[-1]
    assert "--carry old/card.json" in reproduce and "--baseline" not in reproduce and "--other" not in reproduce
    assert "falling from 1 to 0.3" in text and "shift N(0, 0.12)" in text and "alone on both cores." in text
    assert "fading from 1 to 0" in loss_sentence({}) and "jitter" not in loss_sentence({})
    assert "weight 3" in loss_sentence({"loc_weight": 3.0}) and "weight" not in loss_sentence({"loc_weight": 1.0})
    assert recipe({"lr": 0.002}) == "learning rate 0.002, localisation weight 1, true crops fading to 0"
    assert recipe({"lr": 0.001, "loc_weight": 3, "gt_floor": 0.3, "gt_jitter": 0.12}) == \
        "learning rate 0.001, localisation weight 3, true crops fading to 0.3, jittered 0.12"
    assert recipe({"lr": 0.001, "refine": True, "ema": 0.998}).endswith(
        "; crops refined by a second transformer; weights averaged (EMA 0.998)")
    assert "first and refined" in loss_sentence({"refine": True}) and "decay 0.998" in loss_sentence({"ema": 0.998})
    for refine in (True, False):
        described = markdown({**card, "model_config": {**card["model_config"], "refine": refine}})
        assert ("RefineLoc" in described) is refine and ("`coarse_theta`, `context`" in described) is refine
    assert "moving average" not in loss_sentence({}) and "first and refined" not in loss_sentence({})


def test_init_reader_takes_a_ten_class_readers_weights_and_keeps_no_digit() -> None:
    """``init_reader``: the pre-trained reader (``model.photo_reader``, the same ``Classifier`` with ten classes)
    fills every layer of the number reader and its ten digit rows; the "no digit" row keeps its initialisation;
    a reader of another shape is refused."""
    from model.nets import Classifier, full_config
    from model.number_train import init_reader

    cfg = full_config({**SMALL, "arch": "number"})
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, NumberSTN)
    no_digit = model.reader.state_dict()["head.4.weight"][NO_DIGIT].clone()
    ten = Classifier(1, tuple(cfg.output_size), cfg.cls_channels, cfg.cls_hidden, 10, cfg.dropout)
    init_reader(model.reader, ten.state_dict())
    got, want = model.reader.state_dict(), ten.state_dict()
    for k, v in want.items():
        if k.startswith("head.4."):
            assert torch.equal(got[k][:NO_DIGIT], v)
        else:
            assert torch.equal(got[k], v), k
    assert torch.equal(got["head.4.weight"][NO_DIGIT], no_digit)
    wider = Classifier(1, tuple(cfg.output_size), [16, 8, 8], cfg.cls_hidden, 10, cfg.dropout)
    with pytest.raises(ValueError, match="does not fit"):
        init_reader(model.reader, wider.state_dict())


def test_the_number_trainer_asks_for_its_device_first(tmp_path: Path) -> None:
    """``device: cuda`` on a machine without CUDA stops before the pool is rendered, saying why (the CUDA path
    of stn-train-number has not run on a GPU here: docs/model.md)."""
    from model.number_train import OPTS, train

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: this checks the refusal without one")
    opts = {**OPTS, "device": "cuda", "pool": str(tmp_path / "pool"), "out": str(tmp_path / "run")}
    with pytest.raises(SystemExit, match="no CUDA device"):
        train(opts, "test")
    assert not (tmp_path / "pool").exists()
