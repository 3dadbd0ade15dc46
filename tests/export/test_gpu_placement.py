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
