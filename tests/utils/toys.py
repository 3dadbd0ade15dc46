"""Models for the tests: the bundled trained ones (``BUNDLED``, or ``$STN_TEST_MODEL_REPOSITORY``), and small toy
models exported with torch (tests only; the service never imports torch): untrained classifiers behind a
transformer whose localisation net is frozen to a KNOWN transform (zero weights, the transform in the
bias), so the geometry can be checked against numbers worked out by hand."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

import service

# STN_TEST_MODEL_REPOSITORY points the "bundled" tests at another repository with trained models.
BUNDLED = Path(
    os.environ.get("STN_TEST_MODEL_REPOSITORY")
    or Path(service.__file__).resolve().parent / "model_repository"
)
TRAINED = ("stn_rts", "stn_tc", "stn_seq3", "stn_r", "stn_p", "stn_e")

# Toy transforms (output grid -> input sample point, normalised coordinates).
ANGLE = math.radians(30.0)
TOY_THETA = np.array(
    [
        [0.7 * math.cos(ANGLE), -0.7 * math.sin(ANGLE), 0.1],
        [0.7 * math.sin(ANGLE), 0.7 * math.cos(ANGLE), -0.05],
    ]
)
TOY_HOMOGRAPHY = np.array([[0.8, 0.1, 0.05], [-0.05, 0.75, 0.0], [0.1, -0.15, 1.0]])


def bundled_has(name: str) -> bool:
    return (BUNDLED / name / "1" / "model.onnx").is_file()


def default_test_model() -> str:
    """The model the tests post to by default: the trained RTS model when it is bundled, else the toy."""
    return "stn_rts" if bundled_has("stn_rts") else "toy_affine"


def export_toy(path: Path, transform: str, params: np.ndarray | None, seed: int = 0) -> None:
    """A toy ST-CNN exported to ``path`` with the contract's metadata (torch + onnx: tests only)."""
    import onnx
    import torch

    from model.nets import build_model

    torch.manual_seed(seed)
    model = build_model({"transform": transform}).eval()
    if params is not None:
        with torch.no_grad():
            model.stn.loc.fc.weight.zero_()
            model.stn.loc.fc.bias.copy_(torch.as_tensor(params, dtype=torch.float32))
    names = list(model.output_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, 1, 42, 42)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["image"],
        output_names=names,
        dynamic_axes={"image": {0: "N"}, **{n: {0: "N"} for n in names}},
        opset_version=17,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    meta = {
        "stn.labels": json.dumps([str(i) for i in range(10)]),
        "stn.input_size": "42,42",
        "stn.output_size": "28,28",
        "stn.mean": "0.1307",
        "stn.std": "0.3081",
        "stn.polarity": "white_on_black",
        "stn.transform": transform,
        "stn.param_output": names[1],
        "stn.dataset": "toy",
        "stn.test_error": "",
        "stn.version": f"toy:{transform}",
    }
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(path))


# The toy sequence model's windows: transformer i reads [[0.3, 0, x_i], [0, 1.0, 0]] (a third of the width,
# the full height), x_i = -0.6, 0, 0.6: the three digit places of an MNIST-sequence canvas (model.sequence).
TOY_SEQ_WINDOWS = np.array([[[0.3, 0.0, x], [0.0, 1.0, 0.0]] for x in (-0.6, 0.0, 0.6)])


def export_toy_sequence(path: Path, seed: int = 0) -> None:
    """A toy sequence model (``model.seq_net.SequenceSTN``, 3 positions, a small untrained reader) on a
    100x100 input, its transformers frozen to ``TOY_SEQ_WINDOWS``, with a sequence model's metadata."""
    import onnx
    import torch

    from export.onnx_export import export_graph
    from model.nets import build_model, full_config

    torch.manual_seed(seed)
    cfg = full_config({"arch": "seq", "transform": "scale_translation", "input_size": [100, 100],
                       "output_size": [28, 28], "loc_channels": [4, 8, 8], "loc_hidden": 16,
                       "cls_channels": [8, 8, 8], "cls_hidden": 16, "max_len": 3})
    model = build_model(cfg).eval()
    with torch.no_grad():
        for head, w in zip(model.heads, TOY_SEQ_WINDOWS, strict=True):
            head.weight.zero_()
            head.bias.copy_(torch.tensor([w[0, 0], w[1, 1], w[0, 2], w[1, 2]], dtype=torch.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = export_graph(model, cfg)  # the dynamo exporter: every dimension but the batch concrete
    onnx.helper.set_model_props(proto, {
        "stn.labels": json.dumps([str(i) for i in range(10)]), "stn.input_size": "100,100",
        "stn.output_size": "28,28", "stn.mean": "0.1307", "stn.std": "0.3081", "stn.polarity": "white_on_black",
        "stn.transform": "scale_translation", "stn.param_output": "theta", "stn.dataset": "toy",
        "stn.test_error": "", "stn.version": "toy:sequence", "stn.resize": "letterbox", "stn.kind": "sequence",
        "stn.max_len": "3",
    })
    onnx.save(proto, str(path))
