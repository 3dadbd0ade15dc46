"""The models committed in service/model_repository: they load in onnxruntime, carry the full metadata, and
their metadata test error is the one on their card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.onnx_export import METADATA_KEYS, read_metadata
from export.triton import validate_entry
from export.verify import cpu_session, error_count, onnx_outputs

REPO = Path(__file__).resolve().parents[2] / "service" / "model_repository"
MODELS = sorted(REPO.glob("*/1/model.onnx")) if REPO.is_dir() else []


@pytest.mark.parametrize("path", MODELS or [None], ids=[p.parts[-3] for p in MODELS] or ["none"])
def test_bundled_model(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"no exported models in {REPO} yet (`make export` once the trained checkpoints exist)")
    entry = path.parents[1]
    validate_entry(entry)
    meta = read_metadata(onnx.load(str(path)))
    assert set(METADATA_KEYS) <= set(meta)
    assert meta.get("stn.resize", "stretch") in ("stretch", "letterbox")
    assert meta.get("stn.padding", "zeros") in ("zeros", "border")
    labels = json.loads(meta["stn.labels"])
    h, w = (int(v) for v in meta["stn.input_size"].split(","))
    assert meta["stn.version"].endswith(f":{entry.name}")

    card = json.loads((entry / "card.json").read_text())
    if card.get("test_error") is None:
        assert meta["stn.test_error"] == ""
    else:
        assert meta["stn.test_error"] != ""
        assert float(meta["stn.test_error"]) == pytest.approx(card["test_error"], abs=1e-9)

    session = cpu_session(path)
    x = np.zeros((2, 1, h, w), dtype=np.float32)
    outputs = session.run(None, {"image": x})
    if meta.get("stn.kind") == "sequence":  # a length over 0..L, and L positions over the labels + "no digit"
        n = int(meta["stn.max_len"])
        assert outputs[0].shape == (2, n + 1) and outputs[1].shape == (2, n, len(labels) + 1)
        assert meta["stn.dataset"].startswith("mnist-sequence-") or meta["stn.dataset"] == "number-photo"
    else:
        assert outputs[0].shape == (2, len(labels))


DISTORTED = [p for p in MODELS if not p.parts[-3].endswith("_fp16")
             and json.loads((p.parents[1] / "card.json").read_text()).get("dataset", "").removeprefix("mnist-")
             in ("r", "rts", "p", "e", "tc")]


@pytest.mark.parametrize("path", DISTORTED or [None], ids=[p.parts[-3] for p in DISTORTED] or ["none"])
def test_bundled_family_round_trip(path: Path | None) -> None:
    """Every bundled distorted-MNIST model, whatever its transform family (affine, projective, TPS): the parity
    its export measured is within the export's bounds, and the committed ONNX file, run again here on the fixed
    test set, makes exactly the errors its card counted for PyTorch and ONNX at export time."""
    if path is None:
        pytest.skip(f"no distorted-MNIST models in {REPO}")
    from model.data import load_mnist
    from model.distort import test_set

    card = json.loads((path.parents[1] / "card.json").read_text())
    parity = card["export"]["parity"]
    tol = parity["tolerances"]
    family = card["transform"]
    params = {"tps": "control_points", "projective": "homography"}.get(family, "theta")
    assert parity["max_abs"]["logits"] <= tol["logits"]
    assert parity["max_abs"][params] <= tol["params"]
    assert parity["max_abs"]["rectified"] <= tol["rectified"]
    assert parity["argmax_agreement"] >= 0.99

    meta = read_metadata(onnx.load(str(path)))
    assert meta["stn.transform"] == family
    x, y = test_set(card["dataset"].removeprefix("mnist-"), load_mnist())
    mean, std = float(meta["stn.mean"]), float(meta["stn.std"])
    wrong = error_count(onnx_outputs(cpu_session(path), ((x.numpy() - mean) / std).astype(np.float32)), y)
    assert wrong == parity["test"]["onnx_errors"] == parity["test"]["torch_errors"]
    assert wrong == round(card["test_error"] * x.shape[0])
