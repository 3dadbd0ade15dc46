"""The photo model (model/photo_net.py) through stn-export: two native GridSample nodes, parity, FP16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.onnx_export import export_checkpoint
from export.verify import Tolerances
from model.checkpoint import save_checkpoint
from model.nets import build_model

TINY = {"arch": "photo", "input_size": [128, 128], "output_size": [16, 16], "view_size": 32, "glimpse_size": 16,
        "cls_channels": [4, 8], "cls_hidden": 16, "mean": 0.0, "std": 1.0}
DATA = {"dataset": "photo", "labels": [str(i) for i in range(10)], "mean": 0.0, "std": 1.0, "polarity": "any",
        "input_size": [128, 128], "resize": "letterbox", "checksums": {}}


def test_photo_model_exports_with_two_grid_samples(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with torch.no_grad():  # move off the identity start, so the samplers' arithmetic is exercised
        model.fine.fc.weight.normal_(0.0, 0.05)
        model.coarse.head.weight.normal_(0.0, 0.5)
    ckpt = tmp_path / "run" / "best.ckpt"
    save_checkpoint(ckpt, model, TINY, DATA, {"test_error": None, "val_error": None})
    res = export_checkpoint(ckpt, tmp_path / "repo", name="stn_photo", use_data=False,
                            tol=Tolerances(rectified=5e-4))
    proto = onnx.load(str(res.entry / "1" / "model.onnx"))
    assert res.ops["GridSample"] == 2 and "AffineGrid" not in res.ops
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["stn.resize"] == "letterbox" and meta["stn.padding"] == "border" and meta["stn.polarity"] == "any"
    x = np.random.default_rng(0).random((3, 1, 128, 128), dtype=np.float32)
    sess = ort.InferenceSession(str(res.entry / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, theta, rectified = sess.run(None, {"image": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    np.testing.assert_allclose(logits, ref[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(theta, ref[1].numpy(), atol=1e-5)
    assert not np.allclose(theta[:, :, :2], np.eye(2) * theta[0, 0, 0]), "theta must not be a plain scale"
    assert res.fp16_entry is not None
    s16 = ort.InferenceSession(str(res.fp16_entry / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    l16 = s16.run(None, {"image": x})[0]
    assert (l16.argmax(1) == logits.argmax(1)).all()
