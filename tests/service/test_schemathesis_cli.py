"""``schemathesis run --checks all`` against a real ``stn-serve``, without a token and with one: 0 failures.

Every check schemathesis has (server errors, status codes, content types, response schemas and headers,
schema-valid requests accepted, schema-violating ones and missing or wrong credentials refused, ...) on
every operation of ``/openapi.json``, with a bounded number of examples per operation. What the schema
cannot express (an image part is an image; a v2 tensor fills its shape) is told to schemathesis by
``tests/utils/st_hooks.py``. The number of cases run is printed.

The served repository is the toy models (affine, projective, TPS) and the bundled ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.server import ROOT, serve_args, stn_serve

MAX_EXAMPLES = 20
TOKEN = "schemathesis-token"


def schemathesis_cli() -> list[str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if exe is None:
        raise AssertionError("the schemathesis CLI is not installed (it is a test dependency in pyproject.toml)")
    return [exe]


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_schemathesis_all_checks(
    token: str | None, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"STN_API_TOKEN": token} if token else {}
    args = serve_args(repo, default_model="toy_affine")
    with stn_serve(tmp_path, *args, env=env) as server:
        cmd = [*schemathesis_cli(), "--no-color", "run", f"{server.url}/openapi.json", "--checks", "all",
               "--max-examples", str(MAX_EXAMPLES), "--seed", "1"]
        if token:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        run_env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.utils.st_hooks", "PYTHONPATH": str(ROOT)}
        # (cwd: schemathesis keeps a cache folder, .schemathesis, where it runs)
        proc = subprocess.run(cmd, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    m = re.search(r"(\d+) generated, (.*)", out)
    assert proc.returncode == 0 and m is not None, out[-6000:]
    assert "fail" not in m.group(2) and "error" not in m.group(2), out[-6000:]
    with capsys.disabled():
        print(f"\nschemathesis --checks all ({'token' if token else 'no token'}): {m.group(0).strip()}")
