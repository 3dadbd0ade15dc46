"""Transformers on feature maps and side by side (model.multi): shapes, gradcheck, independence, attending to
different places, and an export with one GridSample per transformer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.multi import FeatureTransformer, ParallelTransformers, start_offsets, start_params


@pytest.mark.parametrize(("channels", "size", "out_size"),
                         [(32, (14, 14), None), (8, (7, 9), (5, 5)), (3, (20, 16), (10, 8))])
def test_feature_transformer_keeps_the_channels(channels: int, size: tuple[int, int],
                                                out_size: tuple[int, int] | None) -> None:
    t = FeatureTransformer(channels, size, out_size)
    out, theta = t(torch.randn(4, channels, *size))
    assert out.shape == (4, channels, *(out_size or size)) and theta.shape == (4, 2, 3)
    with pytest.raises(ValueError, match=rf"feature maps must be \(B, {channels}, {size[0]}, {size[1]}\)"):
        t(torch.randn(4, channels + 1, *size))


def test_feature_transformer_starts_at_the_identity_on_every_channel() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 12, 12)
    out, theta = FeatureTransformer(6, (12, 12))(x)
    torch.testing.assert_close(theta, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).expand(2, 2, 3))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("transform", ["affine", "scale_translation"])
def test_gradcheck_through_a_feature_transformer(transform: str) -> None:
    """Gradients reach the feature maps (through the sampler and the localisation net) and the parameters."""
    torch.manual_seed(1)
    t = FeatureTransformer(3, (6, 6), (4, 4), transform, conv=4, hidden=5).double()
    nn.init.normal_(t.loc.fc.weight, std=0.05)  # off the zero start, so the loc net's path counts too
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: t(v)[0], (x,), eps=1e-6, atol=1e-5)
    t(x)[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in t.loc.parameters())


def test_parallel_transformers_have_their_own_parameters() -> None:
    par = ParallelTransformers(4, 2, (16, 16), (8, 8))
    storages = [p.data_ptr() for t in par.transformers for p in t.parameters()]
    assert len(storages) == len(set(storages)), "no parameter is shared between the transformers"
    x = torch.rand(1, 2, 16, 16)
    crops, params, each = par(x)
    assert crops.shape == (1, 8, 8, 8) and params.shape == (1, 4, 2, 3) and len(each) == 4
    # Transformer 2's crop depends on transformer 2's localisation net only.
    each[2].sum().backward()
    grads = [sum(float(p.grad.abs().sum()) for p in t.parameters() if p.grad is not None) for t in par.transformers]
    assert grads[2] > 0 and grads[0] == grads[1] == grads[3] == 0


def test_parallel_transformers_start_at_different_places_and_read_them() -> None:
    """Each starts zoomed in on its own point, so each crop is a different part of the input."""
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, :, :8] = 1.0  # left half bright
    par = ParallelTransformers(2, 1, (16, 16), (8, 8), "scale_translation", start_scale=0.5)
    assert start_offsets(2) == [(-0.5, 0.0), (0.5, 0.0)]
    crops, params, _ = par(x)
    torch.testing.assert_close(params[0, 0], torch.tensor([[0.5, 0, -0.5], [0, 0.5, 0]]))
    torch.testing.assert_close(params[0, 1], torch.tensor([[0.5, 0, 0.5], [0, 0.5, 0]]))
    torch.testing.assert_close(crops[0, 0], torch.ones(8, 8))  # the left quarter-area window: all bright
    torch.testing.assert_close(crops[0, 1], torch.zeros(8, 8))  # the right one: all dark
    assert len(set(start_offsets(4))) == 4
    torch.testing.assert_close(start_params("attention", 0.5, (0.1, -0.2)), torch.tensor([0.5, 0.1, -0.2]))
    with pytest.raises(ValueError, match="affine-type family"):
        start_params("tps", 0.5, (0.0, 0.0))


class _TwoStage(nn.Module):
    """A transformer on the input, a convolution, two parallel transformers on its feature maps."""

    def __init__(self) -> None:
        super().__init__()
        self.first = FeatureTransformer(1, (16, 16), (16, 16))
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.par = ParallelTransformers(2, 4, (16, 16), (8, 8))
        self.output_names = ["features", "theta0", "thetas"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, theta0 = self.first(x)
        crops, thetas, _ = self.par(F.relu(self.conv(y)))
        return crops, theta0, thetas


def test_exports_with_one_grid_sample_per_transformer(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    torch.manual_seed(2)
    model = _TwoStage().eval()
    for t in [model.first, *model.par.transformers]:
        nn.init.normal_(t.loc.fc.weight, std=0.02)  # transforms that depend on the input
    path = tmp_path / "m.onnx"
    x = torch.rand(2, 1, 16, 16)
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=model.output_names,
                      dynamic_axes={"image": {0: "N"}}, opset_version=17, dynamo=False)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("GridSample") == 3 and "AffineGrid" not in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = torch.rand(5, 1, 16, 16)
    got = sess.run(None, {"image": xs.numpy()})
    with torch.no_grad():
        want = model(xs)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=0)


def test_sequence_head_shapes_targets_loss_and_decoding() -> None:
    from model.multi import NO_DIGIT, SequenceHead, decode_sequence, sequence_loss, sequence_targets

    head = SequenceHead(12, max_len=5, hidden=16)
    length_logits, digit_logits = head(torch.randn(3, 12))
    assert length_logits.shape == (3, 6) and digit_logits.shape == (3, 5, 11)
    lengths, digits = sequence_targets([[2, 0, 2, 6], [7], []])
    assert lengths.tolist() == [4, 1, 0]
    assert digits.tolist() == [[2, 0, 2, 6, NO_DIGIT], [7] + [NO_DIGIT] * 4, [NO_DIGIT] * 5]
    with pytest.raises(ValueError, match="more than 5 digits"):
        sequence_targets([[1, 2, 3, 4, 5, 6]])
    # A head that has learned the answer: its loss is small, and decoding gives the numbers back.
    big = 20.0
    length_logits = torch.nn.functional.one_hot(lengths, 6).float() * big
    digit_logits = torch.nn.functional.one_hot(digits, 11).float() * big
    assert float(sequence_loss(length_logits, digit_logits, lengths, digits)) < 1e-6
    decoded = decode_sequence(length_logits, digit_logits)
    assert [d for d, _ in decoded] == [[2, 0, 2, 6], [7], []]
    assert all(p > 0.999 for _, p in decoded)
    assert float(sequence_loss(*head(torch.randn(3, 12)), lengths, digits)) > 1.0  # untrained: clearly not


def test_st_cnn_multi_places_transformers_on_the_classifiers_feature_maps(tmp_path: Path) -> None:
    """``feature_transformers`` = 2: besides the input transformer, one before conv stages 2 and 3, each on
    that stage's feature maps. They start at the identity, so at initialisation the model computes exactly
    what the same weights compute without them; the export has one GridSample per transformer and their
    thetas as an output."""
    import onnx

    from export.onnx_export import check_graph, expected_io, export_graph
    from model.nets import build_model, full_config

    cfg = full_config({"feature_transformers": 2})
    torch.manual_seed(3)
    multi = build_model(cfg).eval()
    ts = multi.classifier.transformers
    assert [(t.channels, t.size) for t in ts] == [(32, (14, 14)), (64, (7, 7))]
    assert multi.output_names == ["logits", "theta", "rectified", "feature_theta"]
    plain = build_model(full_config({})).eval()
    x = torch.randn(3, 1, 42, 42)
    with torch.no_grad():
        logits, theta, rectified, feature_theta = multi(x)
    assert feature_theta.shape == (3, 2, 2, 3)
    torch.testing.assert_close(feature_theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 2, 3))
    # Conv stages 2 and 3 of the multi model read the identity-sampled maps: the same logits as the plain one.
    # The multi model's layers are the plain one's with a placeholder before stages 2 and 3 (indices 4, 9).
    shift = {0: 0, 1: 1, 5: 4, 6: 5, 10: 8, 11: 9}
    plain_sd = {}
    for k, v in multi.state_dict().items():
        if k.startswith("classifier.features."):
            i = int(k.split(".")[2])
            k = k.replace(f"features.{i}.", f"features.{shift[i]}.", 1)
        if "classifier.transformers." not in k:
            plain_sd[k] = v
    plain.load_state_dict(plain_sd)
    with torch.no_grad():
        torch.testing.assert_close(plain(x)[0], logits, atol=1e-5, rtol=0)
    # Off the identity, gradients reach every feature-map transformer's localisation net.
    for t in ts:
        nn.init.normal_(t.loc.fc.weight, std=0.01)
    multi.train()
    multi(x)[0].sum().backward()
    assert all(t.loc.fc.weight.grad is not None and t.loc.fc.weight.grad.abs().sum() > 0 for t in ts)
    multi.eval()
    proto = export_graph(multi, cfg)
    ops = check_graph(proto, expected_io(cfg, multi.output_names))
    assert ops["GridSample"] == 3
    path = tmp_path / "multi.onnx"
    onnx.save(proto, str(path))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = multi(x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=0)
