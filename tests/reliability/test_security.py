"""Security: the bearer token on every inference and model route (compared in constant time), request size
limits, and no path from a request reaching the filesystem or a shell.

Every operation the OpenAPI schema marks with the bearer scheme is checked (a route added without a case
here fails ``test_every_protected_route_is_covered``): 401 JSON with ``WWW-Authenticate: Bearer`` without the
token or with a wrong one, 200 with it. The filesystem and shell checks watch the process's audit events
(``sys.addaudithook``: ``open``, ``subprocess.Popen``, ``os.system``, ``os.exec``, ``os.posix_spawn``...)
while hostile names, paths and filenames are sent.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import service
from service.app import create_app

from .rel_cases import digit, encode
from .rel_support import SMALL_LIMITS, make_settings, wait_ready
from .rel_tally import record

TOKEN = "s3cret-token-0123456789"
GOOD = encode(Image.fromarray(digit(42)), "PNG")
PNG = {"content-type": "image/png"}
TENSOR = {
    "inputs": [{"name": "image", "shape": [1, 1, 42, 42], "datatype": "FP32", "data": [0.0] * 1764}],
}
SERVICE_DIR = Path(service.__file__).resolve().parent


@pytest.fixture(scope="module")
def secured(rel_repo: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(rel_repo, default_model="toy_affine", api_token=TOKEN, **SMALL_LIMITS))
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def _image(url: str) -> Callable[[TestClient, dict[str, str]], Any]:
    return lambda c, h: c.post(url, content=GOOD, headers={**PNG, **h})


def _batch(url: str) -> Callable[[TestClient, dict[str, str]], Any]:
    return lambda c, h: c.post(url, files=[("image", ("a.png", GOOD, "image/png"))] * 2, headers=h)


def _get(url: str, method: str = "GET") -> Callable[[TestClient, dict[str, str]], Any]:
    return lambda c, h: c.request(method, url, headers=h)


def _infer(url: str) -> Callable[[TestClient, dict[str, str]], Any]:
    return lambda c, h: c.post(url, json=TENSOR, headers=h)


# (method, OpenAPI path) -> a request that succeeds (200) with the token.
PROTECTED: dict[tuple[str, str], Callable[[TestClient, dict[str, str]], Any]] = {
    ("POST", "/v1/predict"): _image("/v1/predict"),
    ("POST", "/v1/models/{name}/predict"): _image("/v1/models/toy_affine/predict"),
    ("POST", "/v1/predict/batch"): _batch("/v1/predict/batch"),
    ("POST", "/v1/models/{name}/predict/batch"): _batch("/v1/models/toy_affine/predict/batch"),
    ("POST", "/v1/rectify"): _image("/v1/rectify?size=32x32"),
    ("POST", "/v1/models/{name}/rectify"): _image("/v1/models/toy_affine/rectify?overlay=true"),
    ("GET", "/v1/models"): _get("/v1/models"),
    ("GET", "/v2/models/{name}"): _get("/v2/models/toy_affine"),
    ("GET", "/v2/models/{name}/versions/{version}"): _get("/v2/models/toy_affine/versions/1"),
    ("GET", "/v2/models/{name}/ready"): _get("/v2/models/toy_affine/ready"),
    ("GET", "/v2/models/{name}/versions/{version}/ready"): _get("/v2/models/toy_affine/versions/1/ready"),
    ("GET", "/v2/models/{name}/config"): _get("/v2/models/toy_affine/config"),
    ("POST", "/v2/repository/index"): _get("/v2/repository/index", "POST"),
    ("POST", "/v2/models/{name}/infer"): _infer("/v2/models/toy_affine/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"): _infer("/v2/models/toy_affine/versions/1/infer"),
}
OPEN = ["/v2", "/v2/health/live", "/v2/health/ready", "/metrics", "/", "/docs", "/openapi.json"]
WRONG = {
    "no header": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "token prefix": {"Authorization": "Bearer " + TOKEN[:-1]},
    "token plus a character": {"Authorization": "Bearer " + TOKEN + "x"},
    "empty bearer": {"Authorization": "Bearer "},
    "basic scheme": {"Authorization": "Basic " + TOKEN},
    "token without scheme": {"Authorization": TOKEN},
    "token in a query-style header": {"X-Api-Token": TOKEN},
}


def test_every_protected_route_is_covered(secured: TestClient) -> None:
    spec = secured.get("/openapi.json").json()
    protected = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if op.get("security")
    }
    assert protected == set(PROTECTED), protected ^ set(PROTECTED)
    open_paths = {path for path, item in spec["paths"].items() if not any(op.get("security") for op in item.values())}
    assert open_paths <= set(OPEN), open_paths - set(OPEN)


@pytest.mark.parametrize("route", list(PROTECTED), ids=lambda r: f"{r[0]} {r[1]}")
def test_token_required(secured: TestClient, route: tuple[str, str]) -> None:
    send = PROTECTED[route]
    for why, headers in WRONG.items():
        r = send(secured, headers)
        record("token checks", r.status_code, why)
        assert r.status_code == 401, f"{route} {why}: {r.status_code} {r.text[:200]}"
        assert r.headers.get("www-authenticate") == "Bearer"
        assert r.json() == {"error": "missing or wrong bearer token"}
    r = send(secured, {"Authorization": f"Bearer {TOKEN}"})
    record("token checks", r.status_code, "right token")
    assert r.status_code == 200, f"{route} with the token: {r.status_code} {r.text[:200]}"


def test_open_routes_need_no_token(secured: TestClient) -> None:
    for url in OPEN:
        r = secured.get(url)
        record("token checks", r.status_code, url)
        assert r.status_code == 200, (url, r.status_code)


def test_token_is_compared_in_constant_time(secured: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is ``hmac.compare_digest`` on bytes (no early exit on the first differing byte)."""
    import service.auth as auth

    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert secured.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert secured.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert secured.get("/v1/models").status_code == 401
    assert calls == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode()), (b"", TOKEN.encode())]
    # And nothing else in the service compares the token with ==.
    tree = ast.parse((SERVICE_DIR / "auth.py").read_text())
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare) and "token" in ast.unparse(n)]
    assert all("is None" in ast.unparse(n) for n in compares), [ast.unparse(n) for n in compares]


# ---- size limits ----------------------------------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = SMALL_LIMITS["max_body_bytes"]


def _chunks(total: int, size: int = 50_000) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"\0" * min(size, total - start)


LIMIT_CASES: dict[str, tuple[Callable[[TestClient], Any], int, str]] = {
    "raw body over the limit (Content-Length)": (
        lambda c: c.post("/v1/predict", content=b"\0" * (LIMIT + 1), headers={**PNG, **AUTH}),
        413,
        f"over the limit of {LIMIT}",
    ),
    "raw body over the limit (chunked, no Content-Length)": (
        lambda c: c.post("/v1/predict", content=_chunks(LIMIT + 50_000), headers={**PNG, **AUTH}),
        413,
        "over the limit",
    ),
    "multipart over the limit": (
        lambda c: c.post("/v1/predict", files={"image": ("a", b"\0" * (LIMIT + 1), "image/png")}, headers=AUTH),
        413,
        "over the limit",
    ),
    "v2 body over the limit": (
        lambda c: c.post("/v2/models/toy_affine/infer", content=b"{" * (LIMIT + 1), headers=AUTH),
        413,
        "over the limit",
    ),
    "v2 binary tensor over the limit": (
        lambda c: c.post(
            "/v2/models/toy_affine/infer",
            content=np.zeros((12, 1, 42, 42), np.float32).tobytes() * 10,
            headers={**AUTH, "Inference-Header-Content-Length": "0"},
        ),
        413,
        "over the limit",
    ),
    "too many files": (
        lambda c: c.post("/v1/predict/batch", files=[("image", ("a.png", GOOD, "image/png"))] * 5, headers=AUTH),
        400,
        "too many files",
    ),
    "image over the pixel limit": (
        lambda c: c.post("/v1/predict", content=encode(Image.new("L", (1415, 1415)), "PNG"), headers={**PNG, **AUTH}),
        413,
        "pixels",
    ),
    "rectify size over the side limit": (
        lambda c: c.post("/v1/rectify?size=513x10", content=GOOD, headers={**PNG, **AUTH}),
        400,
        "between 1 and 512",
    ),
    "top_k over its maximum": (
        lambda c: c.post("/v1/predict?top_k=1001", content=GOOD, headers={**PNG, **AUTH}),
        400,
        "top_k",
    ),
    "bad Content-Length": (
        lambda c: c.post("/v1/predict", content=GOOD, headers={**PNG, **AUTH, "content-length": "12abc"}),
        400,
        "content-length",
    ),
}


@pytest.mark.parametrize("name", list(LIMIT_CASES))
def test_size_limits_hold(secured: TestClient, name: str) -> None:
    send, status, fragment = LIMIT_CASES[name]
    r = send(secured)
    record("size limits", r.status_code, name)
    assert r.status_code == status, f"{name}: {r.status_code} {r.text[:200]}"
    assert fragment.lower() in r.json()["error"].lower()
    assert secured.post("/v1/predict", content=GOOD, headers={**PNG, **AUTH}).status_code == 200


def test_token_is_checked_before_the_body_is_read(secured: TestClient) -> None:
    """An unauthenticated client cannot make the server read (or decode) anything: 401 comes first."""
    r = secured.post("/v1/predict", content=b"\0" * (LIMIT + 1), headers=PNG)
    assert r.status_code == 401
    r = secured.post("/v1/predict", content=encode(Image.new("L", (1415, 1415)), "PNG"), headers=PNG)
    assert r.status_code == 401


# ---- no request reaches a file path or a shell ------------------------------------------------------------

HOSTILE_NAMES = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "toy_affine%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "..",
    "%2E%2E",
    "toy_affine%00",
    "$(touch%20%2Ftmp%2Fstn-pwned)",
    "%60touch%20%2Ftmp%2Fstn-pwned%60",
    "%3B%20rm%20-rf%20%2Ftmp%2Fstn-pwned",
    "stn-pwned" * 500,
    "%E2%80%AEdwssap%2Fcte%2F",
]
WATCHED = ("passwd", "stn-pwned", "dwssap")
PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty")

_events: list[tuple[str, tuple[Any, ...]]] = []
_watching = [False]


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching[0] and (event == "open" or event in PROCESS_EVENTS or event.startswith("shutil.")):
        _events.append((event, args))


@pytest.fixture
def audit() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    if _audit not in _installed:
        sys.addaudithook(_audit)  # cannot be removed: gated by _watching
        _installed.append(_audit)
    _events.clear()
    _watching[0] = True
    try:
        yield _events
    finally:
        _watching[0] = False


_installed: list[Callable[..., None]] = []


def _paths_touched(events: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    return [str(args[0]) for event, args in events if event == "open" and args and args[0] is not None]


def test_hostile_model_names_never_reach_the_filesystem_or_a_shell(
    secured: TestClient, audit: list[tuple[str, tuple[Any, ...]]], rel_repo: Path
) -> None:
    sent = 0
    for name in HOSTILE_NAMES:
        for method, template in PROTECTED:
            if "{name}" not in template:
                continue
            url = template.replace("{name}", name).replace("{version}", name)
            if method == "POST":
                body = json.dumps(TENSOR).encode() if template.endswith("infer") else GOOD
                r = secured.post(url, content=body, headers={**PNG, **AUTH})
            else:
                r = secured.get(url, headers=AUTH)
            sent += 1
            record("path and shell injection", r.status_code, url[:80])
            # A client resolves literal dot segments ("/v1/models/../predict" is "/v1/predict"): a served route.
            assert r.status_code in (200, 400, 404, 405), (url[:120], r.status_code, r.text[:200])
            if r.status_code == 200:
                assert "/../" in url or url.endswith("/.."), url[:120]
            else:
                assert "error" in r.json()
    touched = [p for p in _paths_touched(audit) if any(w in p for w in WATCHED)]
    spawned = [e for e in audit if e[0] in PROCESS_EVENTS]
    assert not touched and not spawned, (touched, spawned)
    control = rel_repo / "toy_affine" / "1" / "model.onnx"
    control.read_bytes()
    assert str(control) in _paths_touched(audit), "the audit hook saw no file opened: it is not watching"
    assert not Path("/tmp/stn-pwned").exists()
    assert sent >= 100


def test_request_cannot_choose_the_repository(
    secured: TestClient, audit: list[tuple[str, tuple[Any, ...]]], rel_repo: Path, tmp_path: Path
) -> None:
    """Query parameters, headers and multipart fields that name a repository or a path are ignored."""
    decoy = tmp_path / "decoy"
    (decoy / "evil" / "1").mkdir(parents=True)
    before = secured.get("/v1/models", headers=AUTH).json()
    query = f"?model_repository={decoy}&repository={decoy}&path=/etc/passwd&file=/etc/passwd"
    headers = {**AUTH, "X-Model-Repository": str(decoy), "X-File": "/etc/passwd"}
    for url in ("/v1/predict", "/v1/rectify", "/v1/models/toy_affine/predict"):
        r = secured.post(url + query, content=GOOD, headers={**PNG, **headers})
        record("path and shell injection", r.status_code, url)
        assert r.status_code == 200, r.text
    files = [("image", ("../../../etc/passwd", GOOD, "image/png")), ("model_repository", (None, str(decoy)))]
    r = secured.post("/v1/predict/batch" + query, files=files, headers=headers)
    assert r.status_code == 200 and r.json()["results"][0]["filename"] == "../../../etc/passwd"
    r = secured.post("/v2/repository/index" + query, headers=headers)
    assert [m["name"] for m in r.json()] == ["toy_affine", "toy_tps"]
    assert secured.get("/v1/models", headers=AUTH).json() == before
    touched = [p for p in _paths_touched(audit) if str(decoy) in p or any(w in p for w in WATCHED)]
    assert not touched and not [e for e in audit if e[0] in PROCESS_EVENTS], touched


def _calls(tree: ast.AST) -> list[str]:
    return [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]


def test_service_code_has_no_shell_and_routes_open_no_files() -> None:
    """Source-level guard: no shell or process calls anywhere in ``service/``; the route handlers open no
    files and never name the repository (only the settings and the start-up code do)."""
    banned = ("os.system", "os.popen", "subprocess", "eval", "exec", "os.exec", "os.spawn", "pickle.load")
    for path in sorted(SERVICE_DIR.rglob("*.py")):
        calls = _calls(ast.parse(path.read_text()))
        bad = [c for c in calls if any(c == b or c.startswith(b + ".") for b in banned)]
        assert not bad, f"{path.name}: {bad}"
        assert "shell=True" not in path.read_text(), path
    for path in sorted((SERVICE_DIR / "routes").glob("*.py")):
        text = path.read_text()
        calls = _calls(ast.parse(text))
        assert not [c for c in calls if c in ("open", "Path", "os.open") or c.endswith((".open", ".read_bytes"))], path
        assert "model_repository" not in text, f"{path.name} names the repository"
