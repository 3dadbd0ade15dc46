"""``stn-export`` end to end on a small freshly initialised checkpoint: the repository entries, the card, the
failure modes. The real test set is replaced by its first images so the run stays quick."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from export import cli
from export import onnx_export as ox
from export.onnx_export import ExportError, export_checkpoint, read_metadata
from export.triton import validate_entry
from export.verify import cpu_session


@pytest.fixture
def small_test_set(monkeypatch: pytest.MonkeyPatch, rts_slice):
    monkeypatch.setattr(ox, "_test_data", lambda ckpt, data_dir: rts_slice)
    return rts_slice


def test_cli_writes_verified_entries(tmp_path: Path, make_checkpoint, small_test_set, capsys) -> None:
    ckpt = make_checkpoint("affine")
    out = tmp_path / "repo"
    assert cli.main([str(ckpt), "--out", str(out), "--name", "stn_t", "--real-images", "64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    n = small_test_set[0].shape[0]
    assert summary["test"]["n"] == n and summary["test"]["torch_errors"] == summary["test"]["onnx_errors"]

    assert sorted(p.name for p in out.iterdir()) == ["stn_t", "stn_t_fp16"]  # no staging left behind
    for name in ("stn_t", "stn_t_fp16"):
        entry = out / name
        assert sorted(p.name for p in entry.iterdir()) == ["1", "card.json", "card.md", "config.pbtxt"]
        assert [p.name for p in (entry / "1").iterdir()] == ["model.onnx"]
        validate_entry(entry)
        proto = onnx.load(str(entry / "1" / "model.onnx"))
        meta = read_metadata(proto)
        card = json.loads((entry / "card.json").read_text())
        assert meta["stn.version"] == f"stn-onnx/1:{name}"
        assert meta["stn.test_error"] != ""
        assert float(meta["stn.test_error"]) == card["test_error"]
        cpu_session(entry / "1" / "model.onnx")  # loads

    card = json.loads((out / "stn_t" / "card.json").read_text())
    exp = card["export"]
    assert exp["opset"] == 18 and exp["ops"]["GridSample"] == 1
    assert set(exp["parity"]["max_abs"]) == {"logits", "theta", "rectified"}
    assert exp["parity"]["argmax_agreement"] == 1.0
    assert [s["n"] for s in exp["parity"]["sets"]] == [64, 1, 7, 256]
    assert exp["fp16"]["model"] == "stn_t_fp16" and exp["fp16"]["argmax_agreement"] >= 0.99
    assert "stn-export" in exp["command"]
    assert "## Export (`stn_t`)" in (out / "stn_t" / "card.md").read_text()
    assert json.loads((out / "stn_t_fp16" / "card.json").read_text())["precision"] == "fp16"


def test_reexport_replaces_entry(tmp_path: Path, make_checkpoint) -> None:
    ckpt = make_checkpoint("tps")
    out = tmp_path / "repo"
    for _ in range(2):
        result = export_checkpoint(ckpt, out, name="stn_tps", fp16=False, use_data=False)
    assert result.metadata["stn.param_output"] == "control_points"
    assert result.metadata["stn.test_error"] == ""  # not measured, none recorded
    assert sorted(p.name for p in out.iterdir()) == ["stn_tps"]


def test_default_name_and_folder_card(tmp_path: Path, make_checkpoint) -> None:
    ckpt = make_checkpoint("similarity", metrics={"test_error": 0.0123, "val_error": 0.01})
    (ckpt.parent / "card.json").write_text(json.dumps({"name": "run1", "test_error": 0.0123}))
    (ckpt.parent / "card.md").write_text("# Model card: run1\n\n![curves](curves.png)\n")
    (ckpt.parent / "curves.png").write_bytes(b"\x89PNG fake")
    result = export_checkpoint(ckpt, tmp_path / "repo", fp16=False, use_data=False)
    assert result.name == "mnist_rts_similarity"
    assert result.metadata["stn.test_error"] == "0.0123"  # recorded (not re-measured: use_data=False)
    entry = tmp_path / "repo" / "mnist_rts_similarity"
    assert (entry / "curves.png").is_file()
    assert json.loads((entry / "card.json").read_text())["export"]["test_error_measured"] is False


def test_card_test_error_mismatch_fails_loudly(tmp_path: Path, make_checkpoint, small_test_set) -> None:
    ckpt = make_checkpoint("affine", card={"name": "x", "test_error": 0.0})
    out = tmp_path / "repo"
    with pytest.raises(ExportError, match="differs from the card"):
        export_checkpoint(ckpt, out, name="stn_bad", fp16=False, n_real=16)
    assert not (out / "stn_bad").exists()
    assert list(out.iterdir()) == []  # nothing half-written


def test_cli_reports_errors(tmp_path: Path, make_checkpoint, capsys) -> None:
    ckpt = make_checkpoint("affine")
    assert cli.main([str(ckpt), "--out", str(tmp_path), "--name", "bad name!", "--no-data"]) == 1
    assert "model name" in capsys.readouterr().err


def test_cli_missing_checkpoint(tmp_path: Path, capsys) -> None:
    assert cli.main([str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "repo")]) == 1
    assert "error" in capsys.readouterr().err


def test_no_fp16_removes_stale_variant(tmp_path: Path, make_checkpoint) -> None:
    ckpt = make_checkpoint("attention")
    out = tmp_path / "repo"
    export_checkpoint(ckpt, out, name="stn_a", use_data=False)
    assert (out / "stn_a_fp16").is_dir()
    export_checkpoint(ckpt, out, name="stn_a", fp16=False, use_data=False)
    assert sorted(p.name for p in out.iterdir()) == ["stn_a"]


def test_card_from_gpu_training_may_differ_by_a_near_tie(tmp_path: Path, make_checkpoint,
                                                         small_test_set) -> None:
    x, y = small_test_set
    probe = export_checkpoint(make_checkpoint("affine"), tmp_path / "probe", fp16=False, n_real=16)
    errors = round(float(probe.metadata["stn.test_error"]) * x.shape[0])
    off_by_one = (errors + 1) / x.shape[0]
    gpu_card = {"name": "x", "test_error": off_by_one, "hardware": {"device": "cuda"}}
    result = export_checkpoint(make_checkpoint("affine", card=gpu_card), tmp_path / "repo", fp16=False,
                               n_real=16)
    assert result.metadata["stn.test_error"] == probe.metadata["stn.test_error"]  # the measured one wins
    assert result.export["training_test_error"] == off_by_one
    cpu_card = {**gpu_card, "hardware": {"device": "cpu"}}
    with pytest.raises(ExportError, match="differs from the card"):
        export_checkpoint(make_checkpoint("affine", card=cpu_card), tmp_path / "repo2", fp16=False, n_real=16)
