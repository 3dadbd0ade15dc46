"""The ST-CNN and baseline: identity start, output shapes, parameter counts, bad configs."""

from __future__ import annotations

import pytest
import torch

from model.nets import DEFAULTS, ModelConfig, build_model, count_params, full_config
from model.transforms import FAMILIES


def _conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def expected_params(arch: str, size: int, num_params: int = 6) -> int:
    """The parameter count written out layer by layer from the architecture in model/nets.py."""
    c1, c2, c3 = DEFAULTS["cls_channels"]
    cls = (_conv(1, c1, 3, False) + 2 * c1 + _conv(c1, c2, 3, False) + 2 * c2 + _conv(c2, c3, 3, False) + 2 * c3
           + _linear(c3 * 3 * 3, DEFAULTS["cls_hidden"]) + _linear(DEFAULTS["cls_hidden"], 10))
    if arch == "cnn":
        return cls
    l1, l2 = DEFAULTS["loc_channels"]
    side = size // 2 // 2 // 2
    loc = (_conv(1, l1, 5) + _conv(l1, l2, 5) + _linear(l2 * side * side, DEFAULTS["loc_hidden"])
           + _linear(DEFAULTS["loc_hidden"], num_params))
    return cls + loc


@pytest.mark.parametrize(("arch", "size"), [("stcnn", 42), ("stcnn", 60), ("cnn", 42), ("cnn", 60)])
def test_parameter_count_of_default_models(arch: str, size: int) -> None:
    model = build_model({"arch": arch, "input_size": [size, size]})
    assert count_params(model) == expected_params(arch, size)


def test_default_rts_model_size_is_what_the_card_says() -> None:
    # 475,648 for the RTS ST-CNN (42x42 in, 28x28 rectified): the number in its model card.
    assert count_params(build_model({"input_size": [42, 42]})) == 475_648


@pytest.mark.parametrize("name", FAMILIES)
def test_fresh_stcnn_starts_at_identity_and_has_contract_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = build_model({"transform": name, "input_size": [42, 42], "output_size": [28, 28]}).eval()
    x = torch.randn(5, 1, 42, 42)
    logits, params, rectified = model(x)
    assert logits.shape == (5, 10)
    assert rectified.shape == (5, 1, 28, 28)
    ident = model.stn.family.params_out(model.stn.family.identity()[None]).expand_as(params)
    torch.testing.assert_close(params, ident)
    assert model.output_names[0] == "logits" and model.output_names[2] == "rectified"


def test_param_output_names() -> None:
    assert build_model({"transform": "affine"}).output_names[1] == "theta"
    assert build_model({"transform": "projective"}).output_names[1] == "homography"
    assert build_model({"transform": "tps"}).output_names[1] == "control_points"


def test_sampler_pads_with_normalised_black() -> None:
    model = build_model({"input_size": [8, 8], "output_size": [8, 8]}).eval()
    with torch.no_grad():
        model.stn.loc.fc.bias.copy_(torch.tensor([1.0, 0.0, 1.5, 0.0, 1.0, 0.0]))  # look far right
    black = -DEFAULTS["mean"] / DEFAULTS["std"]
    x = torch.full((1, 1, 8, 8), 2.0)
    _, _, rectified = model(x)
    assert torch.allclose(rectified[..., -1], torch.full((1, 1, 8), black), atol=1e-5)


def test_baseline_is_the_classifier_on_the_resized_input() -> None:
    model = build_model({"arch": "cnn", "input_size": [28, 28], "output_size": [28, 28]}).eval()
    x = torch.randn(2, 1, 28, 28)
    logits, theta, rectified = model(x)
    torch.testing.assert_close(rectified, x, atol=1e-4, rtol=0)  # (x - fill) + fill rounds in float32
    torch.testing.assert_close(logits, model.classifier(rectified))
    assert theta.shape == (2, 2, 3)


def test_unknown_config_key() -> None:
    with pytest.raises(ValueError, match=r"unknown model config keys: \['colour'\]"):
        full_config({"colour": "red"})


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown arch 'resnet'"):
        build_model({"arch": "resnet"})


@pytest.mark.parametrize("arch", ["stcnn", "cnn"])
def test_models_check_their_input(arch: str) -> None:
    """A wrong input says what arrived, at the boundary, each check on its own fresh input."""
    model = build_model({"arch": arch, "input_size": [42, 42]}).eval()
    with pytest.raises(ValueError, match=r"input must be \(B, 1, 42, 42\), got \(2, 1, 60, 60\)"):
        model(torch.zeros(2, 1, 60, 60))
    with pytest.raises(ValueError, match=r"got \(2, 3, 42, 42\)"):
        model(torch.zeros(2, 3, 42, 42))
    with pytest.raises(ValueError, match=r"got \(1, 42, 42\)"):
        model(torch.zeros(1, 42, 42))


def test_typed_config_round_trips_and_refuses_nonsense() -> None:
    cfg = full_config({"transform": "tps", "input_size": [60, 60], "loc_channels": [8, 16]})
    assert isinstance(cfg, ModelConfig) and cfg.input_size == (60, 60) and cfg.loc_channels == (8, 16)
    assert cfg.output_size == (28, 28) and cfg.tps_grid == 4  # the defaults filled in
    assert full_config(cfg.to_dict()) == cfg and full_config(cfg) is cfg
    assert cfg.to_dict()["input_size"] == [60, 60]  # plain JSON values, as checkpoints store them
    for bad, msg in (({"arch": "rnn"}, "unknown arch"), ({"transform": "shear"}, "unknown transform"),
                     ({"input_size": [42]}, "two positive integers")):
        with pytest.raises(ValueError, match=msg):
            full_config(bad)
