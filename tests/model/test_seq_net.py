"""The sequence models (model.seq_net) and their trainer (model.seq_train): shapes, where the transformers
start, independence of their heads, the export (one GridSample per transformer), and a short training run
end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.multi import NO_DIGIT
from model.nets import build_model, full_config
from model.seq_net import SequenceCNN, SequenceSTN

SMALL = {"input_size": [100, 100], "output_size": [28, 28], "loc_channels": [4, 8, 8], "loc_hidden": 16,
         "cls_channels": [8, 8, 8], "cls_hidden": 16, "transform": "scale_translation"}


def test_sequence_stn_outputs_one_crop_and_theta_per_position() -> None:
    torch.manual_seed(0)
    model = build_model({**SMALL, "arch": "seq", "max_len": 4}).eval()
    assert isinstance(model, SequenceSTN)
    length, digits, theta, crops = model(torch.randn(2, 1, 100, 100))
    assert length.shape == (2, 5) and digits.shape == (2, 4, NO_DIGIT + 1)
    assert theta.shape == (2, 4, 2, 3) and crops.shape == (2, 4, 1, 28, 28)
    assert model.output_names == ["length_logits", "digit_logits", "theta", "rectified"]
    with pytest.raises(ValueError, match=r"input must be \(B, 1, 100, 100\)"):
        model(torch.randn(2, 1, 64, 64))


def test_transformers_start_in_a_row_and_read_their_own_place() -> None:
    """Transformer i starts over the i-th of a row of places (x = -0.5, 0, 0.5 for three), a window of
    half-sizes start_scale; so crop i shows what lies there."""
    model = build_model({**SMALL, "arch": "seq", "max_len": 3, "start_scale": [0.25, 0.5]}).eval()
    x = torch.full((1, 1, 100, 100), -0.1307 / 0.3081)  # normalised black
    x[0, 0, 40:60, 70:80] = 2.0  # a bright patch at the right-hand place only
    _, _, theta, crops = model(x)
    want = torch.tensor([[[0.25, 0, x0], [0, 0.5, 0]] for x0 in (-0.5, 0.0, 0.5)])
    torch.testing.assert_close(theta[0], want)
    assert float(crops[0, 2].max()) > 1.5 and float(crops[0, 0].max()) < 0 and float(crops[0, 1].max()) < 0


def test_each_transformer_has_its_own_head() -> None:
    model = build_model({**SMALL, "arch": "seq", "max_len": 3})
    for head in model.heads:
        torch.nn.init.normal_(head.weight, std=0.05)
    _, _, theta, _ = model(torch.randn(2, 1, 100, 100))
    theta[:, 1].sum().backward()  # transformer 1's window depends on its head, not on the others'
    grads = [float(h.weight.grad.abs().sum()) if h.weight.grad is not None else 0.0 for h in model.heads]
    assert grads[1] > 0 and grads[0] == grads[2] == 0
    assert len({h.weight.data_ptr() for h in model.heads}) == 3


def test_the_baseline_has_the_same_outputs_without_transformers() -> None:
    model = build_model({**SMALL, "arch": "seqcnn", "output_size": [64, 64], "max_len": 3}).eval()
    assert isinstance(model, SequenceCNN)
    length, digits, theta, resized = model(torch.randn(3, 1, 100, 100))
    assert length.shape == (3, 4) and digits.shape == (3, 3, NO_DIGIT + 1)
    torch.testing.assert_close(theta, torch.tensor([[[[1.0, 0, 0], [0, 1.0, 0]]]]).expand(3, 1, 2, 3))
    assert resized.shape == (3, 1, 1, 64, 64)


def test_export_has_one_grid_sample_per_transformer_and_matches_torch() -> None:
    import onnxruntime as ort

    from export.onnx_export import check_graph, expected_io, export_graph

    cfg = full_config({**SMALL, "arch": "seq", "max_len": 3})
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    for head in model.heads:
        torch.nn.init.normal_(head.weight, std=0.02)  # windows that depend on the input
    proto = export_graph(model, cfg)
    io = expected_io(cfg, model.output_names)
    assert io["theta"] == [3, 2, 3] and io["rectified"] == [3, 1, 28, 28]
    ops = check_graph(proto, io)
    assert ops["GridSample"] == 3 and "AffineGrid" not in ops
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 100, 100)
    with torch.no_grad():
        want = model(x)
    for got, w in zip(sess.run(None, {"image": x.numpy()}), want, strict=True):
        np.testing.assert_allclose(got, w.numpy(), atol=1e-4, rtol=0)


def test_a_short_training_run_writes_its_checkpoint_history_and_test_errors(tmp_path: Path, mnist) -> None:  # type: ignore[no-untyped-def]
    from model.checkpoint import load_checkpoint
    from model.seq_train import OPTS, train

    opts = {**OPTS, "loc_channels": [4, 8, 8], "loc_hidden": 16, "cls_channels": [8, 8, 8], "cls_hidden": 16,
            "steps": 12, "batch_size": 8, "val_every": 6, "val_size": 40, "test_size": 40, "out": str(tmp_path)}
    summary = train(opts, "test")
    assert [h["step"] for h in summary["history"]] == [6, 12]
    m = summary["metrics"]
    assert 0 <= m["test_digit_error"] <= 1 and m["test_size"] == 40
    model, ckpt = load_checkpoint(tmp_path / "best.ckpt")
    assert isinstance(model, SequenceSTN) and ckpt["data"]["dataset"] == "mnist-sequence-seq3"
    assert ckpt["data"]["resize"] == "letterbox"
    assert json.loads((tmp_path / "train.json").read_text())["command"] == "test"


def test_centre_in_window_is_measured_on_the_windows_own_edges() -> None:
    from model.seq_card import centres_inside, corners_px

    theta = np.array([[[[0.2, 0.0, -0.5], [0.0, 0.4, 0.0]], [[0.3, 0.1, 0.5], [-0.1, 0.3, 0.2]]]])  # (1, 2, 2, 3)
    c = corners_px(theta, 100)
    np.testing.assert_allclose(c[0, 0], [[15, 30], [35, 30], [35, 70], [15, 70]])
    boxes = np.array([[[11, 36, 39, 64], [61, 46, 89, 74]]])  # centres (25, 50) and (75, 60): both inside
    assert centres_inside(theta, boxes, 100).tolist() == [[True, True]]
    boxes = np.array([[[30, 36, 58, 64], [61, 0, 89, 28]]])  # centres (44, 50) and (75, 14): both outside
    assert centres_inside(theta, boxes, 100).tolist() == [[False, False]]


def test_predicting_and_the_card_leave_the_weights_and_batch_norms_alone(tmp_path: Path) -> None:
    """``predict`` runs in eval mode and hands the model back in the mode it came in; a card's figures read
    the model in eval mode, so the checkpoint it saves holds the same state it loaded."""
    from model.seq_card import plot_boxes
    from model.seq_train import predict

    torch.manual_seed(0)
    model = build_model({**SMALL, "arch": "seq", "max_len": 3})
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xs = np.random.default_rng(0).integers(0, 256, (12, 100, 100), dtype=np.uint8)
    _, pred, theta = predict(model, xs, 5)
    assert not model.training
    plot_boxes(tmp_path / "boxes.png", model, xs, np.zeros((12, 3), np.int64), pred, theta)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    predict(model, xs, 5)
    assert model.training


def test_the_trainer_passes_view_pool_to_the_model() -> None:
    """``view_pool`` (how far the localisation view is pooled) is a trainer option: 2 by default, as bundled."""
    from model.seq_train import OPTS, model_config

    assert model_config(OPTS).view_pool == 2
    cfg = model_config({**OPTS, "view_pool": 1})
    assert cfg.view_pool == 1 and SequenceSTN(cfg).view_pool == 1


def test_a_window_that_shows_the_box_exactly_has_zero_window_loss() -> None:
    """``box_weight``'s targets: the window over a digit's 28x28 frame, in the input's normalised units; a
    theta on that window costs nothing, one moved by 5 px costs 5 / 50 in its centre's x (a quarter of it in
    the mean over four numbers)."""
    from model.seq_train import window_loss, window_targets

    boxes = torch.tensor([[[0.0, 36.0, 28.0, 64.0], [50.0, 0.0, 78.0, 28.0]]])  # (1, 2, 4) on a 100 px canvas
    t = window_targets(boxes, 100)
    torch.testing.assert_close(t, torch.tensor([[[0.28, 0.28, -0.72, 0.0], [0.28, 0.28, 0.28, -0.72]]]))
    theta = torch.zeros(1, 2, 2, 3)
    theta[..., 0, 0], theta[..., 1, 1] = t[..., 0], t[..., 1]
    theta[..., 0, 2], theta[..., 1, 2] = t[..., 2], t[..., 3]
    assert float(window_loss(theta, boxes, 100)) < 1e-7
    # The sampler agrees: this theta's crop of a canvas is the box's pixels.
    from model.transforms import affine_grid

    canvas = torch.rand(1, 1, 100, 100)
    crop = torch.nn.functional.grid_sample(canvas, affine_grid(theta[:, 0], (28, 28)), align_corners=False)
    torch.testing.assert_close(crop, canvas[:, :, 36:64, 0:28], atol=1e-5, rtol=0)
    theta[0, 1, 0, 2] += 5 / 50
    assert float(window_loss(theta, boxes, 100)) == pytest.approx(5 / 50 / 8, abs=1e-6)


def test_box_weight_trains_the_windows_toward_the_digits(tmp_path: Path, mnist) -> None:  # type: ignore[no-untyped-def]
    """With ``box_weight`` the windows move toward the digits' frames within a few dozen steps; a
    labels-only run of the same length leaves them about where they started."""
    from model.seq_train import OPTS, batches, window_loss

    small = {"loc_channels": [4, 8, 8], "loc_hidden": 16, "cls_channels": [8, 8, 8], "cls_hidden": 16,
             "steps": 120, "batch_size": 16, "val_every": 120, "val_size": 30, "test_size": 30, "lr": 5e-3,
             "loc_lr_scale": 1.0, "transform": "attention", "start_scale": [0.45, 0.45]}
    x, _, _, boxes = next(batches(mnist, 99, 64))

    def loss_after(box_weight: float, out: Path) -> float:
        from model.checkpoint import load_checkpoint
        from model.seq_train import train

        train({**OPTS, **small, "box_weight": box_weight, "out": str(out)}, "test")
        model, _ = load_checkpoint(out / "last.ckpt")
        model.eval()
        with torch.no_grad():
            return float(window_loss(model((x - 0.1307) / 0.3081)[2], boxes, 100))

    supervised, labels_only = loss_after(1.0, tmp_path / "box"), loss_after(0.0, tmp_path / "labels")
    assert supervised < 0.6 * labels_only


def test_a_new_card_carries_the_previous_cards_runs_and_baseline() -> None:
    """``--carry``: the previous card's model and other runs become carried rows with their own test figures,
    and the reproduce line names the card instead of run folders that are gone."""
    from model.seq_card import carried_runs, markdown, supervision

    previous = json.loads(Path("service/model_repository/stn_seq3/card.json").read_text())
    rows = carried_runs(previous)
    assert len(rows) == 1 + len(previous["other_runs"]) and all(r["carried"] for r in rows)
    assert rows[0]["digit_error"] == previous["test_error"] and rows[0]["command"] == previous["command"]
    card = {**previous, "other_runs": rows, "carried_from": "old/card.json",
            "baseline": {**previous["baseline"], "carried": True},
            "training": {**previous["training"], "box_weight": 1.0}}
    text = markdown(card)
    assert text.count("| another run (carried):") == len(rows)
    assert "--carry old/card.json" in text and "--baseline" not in text.split("```")[-2].splitlines()[-1]
    assert "generator's boxes" in text and "labels only" not in text
    assert "labels only" in supervision({}) and "`box_weight` 0.3" in supervision({"box_weight": 0.3})
