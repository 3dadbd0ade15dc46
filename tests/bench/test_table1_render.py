"""The second R / P / E generator (``bench/table1_render.py``): parameter ranges, determinism, known answers, the
Gaussian kernel, that its sets are not the repository's; and ``bench/second_generator.py``'s plumbing on tiny
ONNX models (the distortion from ``stn.dataset``, the skips, ``own_inside``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import table1_render
from bench.table1_render import (
    ELASTIC_ALPHA,
    FRAME,
    HALF,
    SEEDS,
    elastic,
    gaussian_kernel,
    moved_corners,
    perspective_coefficients,
    project,
    render,
    rotate,
    smooth,
)

N = 300


@pytest.fixture(scope="module")
def digits(mnist: dict[str, Any]) -> np.ndarray:
    return np.asarray(mnist["test_images"][:N])


@pytest.fixture(scope="module")
def rendered(digits: np.ndarray) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    return {name: render(name, digits) for name in table1_render.NAMES}


def test_shapes(rendered: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> None:
    for name, (images, _) in rendered.items():
        assert images.shape == (N, FRAME, FRAME) and images.dtype == np.uint8, name
        assert images.max() > 200, name  # white on black: the digits' ink survives


def test_r_parameters(digits: np.ndarray, rendered: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> None:
    images, p = rendered["r"]
    assert set(p) == {"angle_deg"} and p["angle_deg"].shape == (N,)
    assert np.all(np.abs(p["angle_deg"]) <= 90.0)
    assert p["angle_deg"].min() < -80 and p["angle_deg"].max() > 80  # 300 uniform draws fill the range
    for i in range(5):
        assert np.array_equal(images[i], rotate(digits[i], p["angle_deg"][i]))


def test_p_parameters(digits: np.ndarray, rendered: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> None:
    images, p = rendered["p"]
    assert set(p) == {"scale", "offsets", "corners"}
    assert p["scale"].shape == (N,) and p["offsets"].shape == p["corners"].shape == (N, 4, 2)
    assert np.all((p["scale"] >= 0.75) & (p["scale"] <= 1.0))
    assert p["scale"].min() < 0.77 and p["scale"].max() > 0.98
    limit = 0.25 * HALF  # 3.5 px
    assert np.all(np.abs(p["offsets"]) <= limit)
    assert np.any(np.isclose(np.abs(p["offsets"]), limit))  # about 1.2 % of the Gaussian offsets are clipped
    assert 1.2 < p["offsets"].std() < 1.6  # sigma = 0.1 half-widths = 1.4 px
    for i in range(5):
        assert np.allclose(p["corners"][i], moved_corners(p["scale"][i], p["offsets"][i]))
        assert np.array_equal(images[i], project(digits[i], p["corners"][i]))


def test_e_parameters(rendered: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> None:
    _, p = rendered["e"]
    assert set(p) == {"dx", "dy", "field_max"}
    assert p["dx"].shape == p["dy"].shape == (N, FRAME, FRAME)
    # The first image's field, drawn again: U(-1, 1) per pixel (x first), smoothed, times alpha.
    raw = np.random.default_rng(SEEDS["e"]).uniform(-1.0, 1.0, size=(2, FRAME, FRAME))
    smoothed = smooth(raw)
    assert np.allclose(p["dx"][0], ELASTIC_ALPHA * smoothed[0], atol=1e-4)
    assert np.allclose(p["dy"][0], ELASTIC_ALPHA * smoothed[1], atol=1e-4)
    assert p["field_max"][0] <= ELASTIC_ALPHA * np.abs(smoothed).max() + 1e-9
    assert np.abs(smoothed).max() < 0.5  # smoothing shrinks a +-1 field a lot
    both = np.maximum(np.abs(p["dx"]).max(axis=(1, 2)), np.abs(p["dy"]).max(axis=(1, 2)))
    assert np.allclose(p["field_max"], both, atol=1e-4)
    assert np.all(p["field_max"] <= ELASTIC_ALPHA)
    assert 0.5 < np.std(p["dx"]) < 4.0  # a few px of displacement, not a whole-image smear


def test_deterministic(digits: np.ndarray, rendered: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> None:
    for name, (images, params) in rendered.items():
        again, again_params = render(name, digits[:50], SEEDS[name])  # the first 50 do not depend on what follows
        assert again.tobytes() == images[:50].tobytes(), name
        assert all(np.array_equal(again_params[k], params[k][:50]) for k in params), name
        other, _ = render(name, digits[:50], SEEDS[name] + 1)
        assert not np.array_equal(other, again), name
    assert len(set(SEEDS.values())) == 3


def test_r_known_answers(digits: np.ndarray) -> None:
    digit = digits[1]
    assert np.abs(rotate(digit, 0.0).astype(np.int64) - digit).max() <= 1
    turned = rotate(digit, 90.0).astype(np.int64)
    assert np.abs(turned - np.rot90(digit))[1:-1, 1:-1].max() <= 2  # counter-clockwise, as seen
    assert np.abs(turned - np.rot90(digit, -1))[1:-1, 1:-1].max() > 2


def test_p_known_answers(digits: np.ndarray) -> None:
    digit = digits[2]
    assert np.array_equal(moved_corners(1.0, np.zeros((4, 2))), table1_render.CORNERS)
    assert np.abs(project(digit, moved_corners(1.0, np.zeros((4, 2)))).astype(np.int64) - digit).max() <= 1
    # A pure scale s about the centre: the output point x samples the digit at 14 + (x - 14) / s.
    a, b, c, d, e, f, g, h = perspective_coefficients(moved_corners(0.8, np.zeros((4, 2))), table1_render.CORNERS)
    assert np.allclose([a, b, c, d, e, f, g, h], [1 / 0.8, 0, HALF - HALF / 0.8, 0, 1 / 0.8, HALF - HALF / 0.8, 0, 0])
    # A general homography takes each moved corner back to the digit's corner.
    dst = moved_corners(0.9, np.random.default_rng(0).uniform(-3.5, 3.5, size=(4, 2)))
    a, b, c, d, e, f, g, h = perspective_coefficients(dst, table1_render.CORNERS)
    w = g * dst[:, 0] + h * dst[:, 1] + 1
    back = np.stack([(a * dst[:, 0] + b * dst[:, 1] + c) / w, (d * dst[:, 0] + e * dst[:, 1] + f) / w], 1)
    assert np.allclose(back, table1_render.CORNERS)


def test_e_known_answers(digits: np.ndarray) -> None:
    digit = digits[3]
    zero = np.zeros((FRAME, FRAME))
    assert np.array_equal(elastic(digit, zero, zero), digit)  # alpha = 0
    shifted = elastic(digit, zero + 1.0, zero)  # every pixel samples its right-hand neighbour
    assert np.array_equal(shifted[:, :-1], digit[:, 1:]) and not shifted[:, -1].any()
    half = elastic(digit, zero, zero + 0.5).astype(np.int64)  # halfway down: the mean of two rows
    expected = (digit[:-1].astype(np.int64) + digit[1:]) / 2
    assert np.abs(half[:-1] - expected).max() <= 0.5
    far = elastic(digit, zero + 40.0, zero)  # outside the digit: zeros
    assert not far.any()


def test_gaussian_kernel() -> None:
    k = gaussian_kernel(4.0)
    assert len(k) == 33 and k.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(k, k[::-1]) and k.argmax() == 16
    assert gaussian_kernel(1.5).sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(smooth(np.full((FRAME, FRAME), 0.3)), 0.3)  # a constant field stays (border reflected)
    impulse = np.zeros((41, 41))
    impulse[20, 20] = 1.0
    out = smooth(impulse)
    assert out.sum() == pytest.approx(1.0) and np.allclose(out[20, 4:37], k * k[16])


def test_not_the_repositorys_images(mnist: dict[str, Any]) -> None:
    from model.distort import test_set

    digits = np.asarray(mnist["test_images"][:50])
    for name in table1_render.NAMES:
        theirs = test_set(name, mnist)[0][:50].numpy()[:, 0]
        ours = render(name, digits)[0] / 255.0
        assert theirs.shape == ours.shape, name
        assert not np.allclose(theirs, ours, atol=0.05), name
        assert np.abs(theirs - ours).mean() > 0.01, name


@pytest.mark.parametrize(
    ("name", "images", "match"),
    [
        ("x", np.zeros((2, FRAME, FRAME), np.uint8), "unknown distortion"),
        ("r", np.zeros((2, FRAME, FRAME), np.float32), "uint8"),
        ("p", np.zeros((2, FRAME, FRAME + 1), np.uint8), r"\(N, 28, 28\)"),
        ("e", np.zeros((FRAME, FRAME), np.uint8), r"\(N, 28, 28\)"),
    ],
)
def test_bad_input(name: str, images: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render(name, images, 0)


# --- second_generator's plumbing ----------------------------------------------------------------------------


def _model(path: Path, side: int, label: int, meta: dict[str, str], output: str = "logits") -> Path:
    """A (B, 1, side, side) -> ``output`` model that always answers ``label``, with the metadata ``meta``."""
    import onnx
    from onnx import TensorProto, helper

    bias = helper.make_tensor("bias", TensorProto.FLOAT, [10], [1.0 if k == label else 0.0 for k in range(10)])
    nodes = [helper.make_node("Flatten", ["image"], ["flat"]),
             helper.make_node("ReduceSum", ["flat", "axis"], ["s"]),
             helper.make_node("Mul", ["s", "zero"], ["z"]),
             helper.make_node("Add", ["z", "bias"], [output])]
    graph = helper.make_graph(
        nodes, "constant",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 10])],
        [bias, helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
         helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path


def test_second_generator_plumbing(tmp_path: Path) -> None:
    from bench import second_generator

    norm = {"stn.mean": "0.1", "stn.std": "0.3"}

    def labels(wrong: int) -> np.ndarray:
        return np.array([3] * (1000 - wrong) + [4] * wrong, np.int64)

    x = np.zeros((1000, 1, FRAME, FRAME), np.float32)
    sets = {"p": {"distort": {"x": x, "y": labels(5), "own": True, "about": "own"},
                  "render-1": {"x": x, "y": labels(50), "own": False, "about": "far"},
                  "render-2": {"x": x, "y": labels(6), "own": False, "about": "near"}}}
    models = {
        "p": _model(tmp_path / "p.onnx", FRAME, 3, {**norm, "stn.dataset": "mnist-p"}),
        "p42": _model(tmp_path / "p42.onnx", 42, 3, {**norm, "stn.dataset": "mnist-p"}),
        "tc": _model(tmp_path / "tc.onnx", 60, 3, {**norm, "stn.dataset": "mnist-tc"}),
        "seq": _model(tmp_path / "seq.onnx", 100, 3, {**norm, "stn.dataset": "mnist-sequence-seq3",
                                                      "stn.kind": "sequence"}, output="digit_logits"),
        "photo": _model(tmp_path / "photo.onnx", 64, 3, {**norm, "stn.dataset": "photo"}),
        "anon": _model(tmp_path / "anon.onnx", FRAME, 3, norm),
    }
    res = second_generator.evaluate(models, sets)
    rows = res["p"]["sets"]
    assert res["p"]["distortion"] == "p" and list(rows) == ["distort", "render-1", "render-2"]
    assert [rows[k]["errors"] for k in rows] == [5, 50, 6]
    assert "own_inside" not in rows["distort"]
    assert rows["render-1"]["own_inside"] is False and rows["render-2"]["own_inside"] is True
    assert "not (B, 1, 28, 28)" in res["p42"]["skipped"]
    assert "'mnist-tc' has no second generator" in res["tc"]["skipped"]
    assert "sequence model" in res["seq"]["skipped"]
    assert "photo model" in res["photo"]["skipped"]
    assert "no stn.dataset" in res["anon"]["skipped"]
    assert all(res[k]["sets"] == {} for k in ("p42", "tc", "seq", "photo", "anon"))
    md = second_generator.report_md({"date": "d", "command": "c", "sets": {"p": {"distort": "own"}}, "models": res,
                                     "machine": {"cpu": "x", "cpu_count": 1, "platform": "p", "python": "3",
                                                 "onnxruntime": "1"}})
    assert "| p | p | render-1 | 1,000 | 50 |" in md and "| **no** |" in md and "| yes |" in md
    assert "- `tc`: skipped" in md


def test_default_models_skip_fp16() -> None:
    from bench import second_generator

    names = second_generator.model_paths(None, [])
    assert names and not any(n.endswith("_fp16") for n in names)
    assert {"stn_rts", "stn_p", "stn_e"} <= set(names)
