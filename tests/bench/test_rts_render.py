"""The second RTS-MNIST generator (``bench/rts_render.py``): ranges, unclipped ink, the wide placement,
determinism, known answers and bad input; and the evaluation's plumbing on a tiny ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import rts_render
from bench.rts_render import CANVAS, FRAME, frame_inside, ink_centre, render, warp

N = 500
PAD = 40  # the large canvas of the clipping check: CANVAS + 2 * PAD on a side


@pytest.fixture(scope="module")
def digits(mnist: dict[str, Any]) -> np.ndarray:
    return np.asarray(mnist["test_images"][:N])


@pytest.fixture(scope="module")
def rendered(digits: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return render(digits, rts_render.SEED)


def test_shapes_and_parameter_ranges(rendered: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    images, params = rendered
    assert images.shape == (N, CANVAS, CANVAS) and images.dtype == np.uint8
    assert set(params) == {"angle_deg", "scale", "centre_x", "centre_y", "ink_x", "ink_y"}
    assert all(v.shape == (N,) for v in params.values())
    assert np.all(np.abs(params["angle_deg"]) <= 45.0)
    assert np.all((params["scale"] >= 0.7) & (params["scale"] <= 1.2))
    assert np.all((params["centre_x"] >= 0) & (params["centre_x"] < CANVAS))
    assert np.all((params["centre_y"] >= 0) & (params["centre_y"] < CANVAS))
    # The draws fill their ranges (500 uniform draws: the extremes lie within ~1 % of each end).
    assert params["angle_deg"].min() < -40 and params["angle_deg"].max() > 40
    assert params["scale"].min() < 0.75 and params["scale"].max() > 1.15


def test_ink_never_clipped(digits: np.ndarray, rendered: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    images, p = rendered
    for i in range(N):
        big = warp(digits[i], p["angle_deg"][i], p["scale"][i], (p["centre_x"][i] + PAD, p["centre_y"][i] + PAD),
                   CANVAS + 2 * PAD)
        inside = big[PAD : PAD + CANVAS, PAD : PAD + CANVAS].astype(np.int64)
        assert images[i].sum() == pytest.approx(big.sum(), rel=0.01), i
        assert inside.sum() == big.sum(), i  # nothing of the large rendering lies outside the canvas
        assert np.abs(inside - images[i]).max() <= 1, i


def test_placement_wider_than_the_frame(rendered: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    """Some ink centres lie closer to a border than keeping the whole warped 28x28 frame inside would allow."""
    images, p = rendered
    t, s = np.radians(p["angle_deg"]), p["scale"]
    corners = np.array([[0, 0], [FRAME, 0], [0, FRAME], [FRAME, FRAME]], np.float64)
    dx = corners[:, 0][None] - p["ink_x"][:, None]  # (N, 4) corner - ink centre, in the frame
    dy = corners[:, 1][None] - p["ink_y"][:, None]
    ox = s[:, None] * (np.cos(t)[:, None] * dx + np.sin(t)[:, None] * dy)  # (N, 4) on the canvas
    oy = s[:, None] * (-np.sin(t)[:, None] * dx + np.cos(t)[:, None] * dy)
    # The frame constraint allows the ink centre only in [-min(o), CANVAS - max(o)] on each axis.
    too_close = ((p["centre_x"] < -ox.min(1)) | (p["centre_x"] > CANVAS - ox.max(1))
                 | (p["centre_y"] < -oy.min(1)) | (p["centre_y"] > CANVAS - oy.max(1)))
    assert too_close.sum() >= N // 4
    assert np.array_equal(~too_close, frame_inside(p))
    # Ink on the outermost rows and columns: never under the frame constraint (MNIST's frame has empty margins).
    edge = (images[:, 0] > 0).any(1) | (images[:, -1] > 0).any(1) | (images[:, :, 0] > 0).any(1) \
        | (images[:, :, -1] > 0).any(1)
    assert edge.any()
    assert not (edge & frame_inside(p)).any()


def test_frame_inside_known_answers() -> None:
    one = {k: np.array([v]) for k, v in
           {"angle_deg": 0.0, "scale": 0.7, "ink_x": 14.0, "ink_y": 14.0, "centre_y": 21.0}.items()}
    assert frame_inside({**one, "centre_x": np.array([21.0])})[0]
    assert not frame_inside({**one, "centre_x": np.array([5.0])})[0]
    # At 45 degrees the frame's diagonal sticks out: 0.7 * 28 * sqrt(2) / 2 = 13.9 from the centre.
    assert not frame_inside({**one, "angle_deg": np.array([45.0]), "centre_x": np.array([13.5])})[0]
    assert frame_inside({**one, "angle_deg": np.array([45.0]), "centre_x": np.array([14.0])})[0]


def test_deterministic(digits: np.ndarray, rendered: tuple[np.ndarray, dict[str, np.ndarray]]) -> None:
    again, params = render(digits[:50], rts_render.SEED)
    assert again.tobytes() == rendered[0][:50].tobytes()  # and the first 50 do not depend on what follows
    assert all(np.array_equal(params[k], rendered[1][k][:50]) for k in params)
    other, other_params = render(digits[:50], rts_render.SEED + 1)
    assert not np.array_equal(other, again)
    assert not np.array_equal(other_params["angle_deg"], params["angle_deg"])


def test_identity_is_a_translation(digits: np.ndarray) -> None:
    digit = digits[0]
    cx, cy = ink_centre(digit)
    out = warp(digit, 0.0, 1.0, (cx + 7, cy + 5))
    expected = np.zeros((CANVAS, CANVAS), np.int64)
    expected[5 : 5 + FRAME, 7 : 7 + FRAME] = digit
    assert np.abs(out.astype(np.int64) - expected).max() <= 1


def test_rotation_is_counter_clockwise(digits: np.ndarray) -> None:
    """90 degrees about the canvas centre: the unrotated rendering turned by ``np.rot90`` (anticlockwise)."""
    digit = digits[1]
    upright = warp(digit, 0.0, 1.0, (CANVAS / 2, CANVAS / 2))
    turned = warp(digit, 90.0, 1.0, (CANVAS / 2, CANVAS / 2))
    assert np.abs(turned.astype(np.int64) - np.rot90(upright)).max() <= 1
    assert np.abs(turned.astype(np.int64) - np.rot90(upright, -1)).max() > 1


def test_ink_centre_known_answer() -> None:
    digit = np.zeros((FRAME, FRAME), np.uint8)
    digit[3, 10] = 100
    digit[3, 12] = 100
    assert ink_centre(digit) == (11.5, 3.5)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, FRAME, FRAME), np.float32), "uint8"),
        (np.zeros((2, FRAME, FRAME + 1), np.uint8), r"\(N, 28, 28\)"),
        (np.zeros((FRAME, FRAME), np.uint8), r"\(N, 28, 28\)"),
        (np.zeros((1, FRAME, FRAME), np.uint8), "no ink"),
    ],
)
def test_bad_input(images: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render(images, 0)


# --- the evaluation's plumbing ------------------------------------------------------------------------------


def _constant_model(path: Path, side: int, label: int, meta: bool = True) -> Path:
    """A (B, 1, side, side) -> logits model that always answers ``label``."""
    import onnx
    from onnx import TensorProto, helper

    bias = helper.make_tensor("bias", TensorProto.FLOAT, [10], [1.0 if k == label else 0.0 for k in range(10)])
    nodes = [helper.make_node("Flatten", ["image"], ["flat"]),  # (B, side * side)
             helper.make_node("ReduceSum", ["flat", "axis"], ["s"]),  # (B, 1)
             helper.make_node("Mul", ["s", "zero"], ["z"]),
             helper.make_node("Add", ["z", "bias"], ["logits"])]  # (B, 10)
    graph = helper.make_graph(
        nodes, "constant",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [bias, helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
         helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if meta:
        helper.set_model_props(model, {"stn.mean": "0.5", "stn.std": "2.0", "stn.dataset": "mnist-rts"})
    onnx.save(model, str(path))
    return path


def test_eval_plumbing(tmp_path: Path) -> None:
    from bench import second_generator

    x = np.zeros((1200, 1, CANVAS, CANVAS), np.float32)
    y = np.array([3] * 1195 + [4] * 5, np.int64)
    sets = {"s": {"x": x, "y": y, "frame": np.arange(1200) < 200, "about": "fake"}}
    models = {"fake": _constant_model(tmp_path / "fake.onnx", CANVAS, 3),
              "wide": _constant_model(tmp_path / "wide.onnx", 60, 3),
              "bare": _constant_model(tmp_path / "bare.onnx", CANVAS, 3, meta=False)}
    res = second_generator.evaluate(models, {"rts": sets})
    row = res["fake"]["sets"]["s"]
    assert (row["errors"], row["n"], row["error"]) == (5, 1200, 5 / 1200)
    assert row["ci95"] == list(second_generator.wilson(5, 1200))
    assert (row["frame"]["errors"], row["frame"]["n"], row["wide"]["errors"], row["wide"]["n"]) == (0, 200, 5, 1000)
    assert (res["fake"]["mean"], res["fake"]["std"]) == (0.5, 2.0)
    assert "not (B, 1, 42, 42)" in res["wide"]["skipped"] and res["wide"]["sets"] == {}
    assert "normalisation is unknown" in res["bare"]["skipped"] and res["bare"]["sets"] == {}
