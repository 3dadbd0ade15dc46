"""bench/gpu_placement.py where there is no GPU: a clear skip, exit 0 (3 with --require-gpu)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("nvidia-smi") is not None,
                                reason="a GPU is present: run python -m bench.gpu_placement itself")


@pytest.mark.parametrize(("flags", "code"), [([], 0), (["--require-gpu"], 3)])
def test_skips_without_gpu(tmp_path: Path, flags: list[str], code: int) -> None:
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_placement", "--out", str(out), *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.startswith("SKIP: ") and "GPU" in proc.stdout
    assert not out.with_suffix(".md").exists()


def test_placement_check_catches_cpu_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a session that runs on the CPU provider is reported node by node, as FAIL.

    On the GPU every node of the bundled models ran on CUDAExecutionProvider
    (bench/results/gpu_placement_20261204-0204.md); here the same parsing of onnxruntime's profile must
    find the float nodes that a CPU fallback would run.
    """
    ort = pytest.importorskip("onnxruntime")
    from bench import gpu_placement as gp

    monkeypatch.setattr(gp, "PROVIDERS", ["CPUExecutionProvider"])  # what a node without a CUDA kernel gets
    model = ROOT / "service" / "model_repository" / "stn_rts" / "1" / "model.onnx"
    p = gp.placement(ort, model, tmp_path)
    assert p["by_provider"] == {"CPUExecutionProvider": p["nodes"]} and p["nodes"] >= 20
    assert any("GridSample" in n for n in p["cpu_float_nodes"])  # the transformer's sampler, named
    assert all(s not in n for n in p["cpu_float_nodes"] for s in ("int64", "bool"))
    result = {"gpu": "test", "command": "test", "onnxruntime": ort.__version__, "host": "test",
              "created": "now", "batches": [1], "models": [{"name": "stn_rts", "placement": p, "timings": {}}]}
    assert "FAIL: " in gp.markdown(result) and "PASS" not in gp.markdown(result)
