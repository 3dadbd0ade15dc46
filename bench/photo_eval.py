"""Held-out photo evaluation through HTTP: ``stn_photo`` against the classical anchor and ``stn_rts``.

Every number here comes from a real ``stn-serve`` (a separate process, the bundled model repository)
answering ``POST /v1/predict`` requests, as a user's phone would send them.

Photo sets (MNIST-TEST digits only; nothing here trains or selects a model):

- ``A``: ``model.photo.PhotoGenerator`` (the training generator's code) with its own seed (``SEED_A``),
  MNIST-test digits and the held-out fonts (fonts-urw-base35; training used DejaVu, Liberation, FreeFont),
  drawn with the legible pen (``--pen earlier``: the rule of the results before 2026-12-07, whose
  max-filter of 5 closes about 9 % of the handwritten digits into blobs; ``model.photo.stroke``);
- ``B``: ``bench/photo_render.py``, a second renderer written independently of ``model/photo.py`` (its own
  paper, light, ink and camera models, frames of 480-800 px), its own seed: the robustness check.

Conditions (digit height as a share of the photo's shorter side): large 45-80 %, medium 25-45 %, small
12-25 %, exif (large, stored rotated/mirrored with an EXIF orientation tag 2-8), printed (a font digit,
medium), ruled (medium, ruled paper with pen marks and part of a neighbouring digit), dark (chalk on a
board, medium). Plus the MNIST-style inputs the photo model must still read: ``rts42`` (the 42x42 RTS
test digits of ``model.distort``, PNG) and ``demo`` (MNIST-test digits drawn white on a black 280x280
canvas as the demo page sends them, PNG).

Systems:

- ``stn_photo``: the photo bytes to ``/v1/predict`` with no model name (the service's default model);
- ``classical``: ``bench/classical.py``'s pipeline (nothing learned) -> 42x42 PNG -> ``stn_rts``;
- ``stn_rts``: the photo bytes to ``/v1/models/stn_rts/predict``.

For ``stn_photo`` also the answer's ``region`` (the quadrilateral in the photo's pixels) against the digit's
ink box: the share of the ink box it covers, and its area over the square on the box's longer side.
Goal: coverage >= 90 % and area <= 6 squares for >= 95 % of medium, small and ruled photos.

    python -m bench.photo_eval                    # 1,000 photos per condition and set; writes bench/results/
    python -m bench.photo_eval --n 50 --no-write  # a quick look
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import _load, classical, photo_render
from model import data as mnist
from model.card import wilson
from model.photo import TEST_FONT_DIRS, PhotoGenerator, font_files
from tests.utils.server import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]


SEED_A = 20_261_202
CONDITIONS = photo_render.CONDITIONS  # the same seven in both sets (model.photo adds "canvas", not scored here)
MNIST_STYLE = ("rts42", "demo")
SYSTEMS = ("stn_photo", "classical", "stn_rts")
REGION_GOAL_CONDITIONS = ("medium", "small", "ruled")
RESULTS = ROOT / "bench" / "results"


def polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip_to_box(poly: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Sutherland-Hodgman: the part of polygon ``poly`` (K, 2) inside the axis-aligned ``box``."""
    x0, y0, x1, y1 = box
    pts = [tuple(p) for p in poly]
    for axis, bound, keep_less in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        out: list[tuple[float, float]] = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cin = cur[axis] <= bound if keep_less else cur[axis] >= bound
            pin = prev[axis] <= bound if keep_less else prev[axis] >= bound
            if cin != pin:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cin:
                out.append(cur)
        pts = out
        if not pts:
            return np.zeros((0, 2))
    return np.array(pts)


def region_scores(region: list[list[float]], ink_box: list[float]) -> tuple[float, float]:
    """(share of the ink box covered by the region, region area / square on the box's longer side)."""
    poly = np.asarray(region, dtype=np.float64)
    x0, y0, x1, y1 = ink_box
    box_area = max(1e-9, (x1 - x0) * (y1 - y0))
    inside = clip_to_box(poly, (x0, y0, x1, y1))
    covered = polygon_area(inside) / box_area if len(inside) >= 3 else 0.0
    return covered, polygon_area(poly) / max(1e-9, max(x1 - x0, y1 - y0) ** 2)


# --- the photo sets ----------------------------------------------------------------------------------


def set_a(condition: str, n: int, images: np.ndarray, labels: np.ndarray,
          legible_pen: bool = True) -> list[tuple[bytes, dict[str, Any]]]:
    gen = PhotoGenerator(images, labels, font_files(TEST_FONT_DIRS), legible_pen=legible_pen)
    rng = np.random.default_rng([SEED_A, CONDITIONS.index(condition)])
    out = []
    for _ in range(n):
        p = gen.render(rng, condition)
        out.append((p.data, {"label": p.label, "ink_box": list(p.ink_box), "size": list(p.size)}))
    return out


def set_b(condition: str, n: int) -> list[tuple[bytes, dict[str, Any]]]:
    return [photo_render.render(condition, i) for i in range(n)]


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    return buf.getvalue()


def mnist_style(kind: str, n: int, data: dict[str, Any]) -> list[tuple[bytes, dict[str, Any]]]:
    if kind == "rts42":
        from model.distort import test_set

        x, y = test_set("rts", data)
        arr = np.clip(np.round(x[:n, 0].numpy() * 255), 0, 255).astype(np.uint8)
        return [(png(a), {"label": int(v)}) for a, v in zip(arr, y[:n].tolist(), strict=True)]
    images, labels = data["test_images"][:n], data["test_labels"][:n]
    out = []
    for img, label in zip(images, labels, strict=True):
        big = Image.fromarray(img, "L").resize((280, 280), Image.Resampling.BICUBIC)
        out.append((png(np.asarray(big)), {"label": int(label)}))
    return out


# --- HTTP --------------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection per thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: bytes, ctype: str) -> dict[str, Any]:
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": ctype})
                r = self.conn.getresponse()
                data = r.read()
                if r.status != 200:
                    raise RuntimeError(f"{path}: HTTP {r.status}: {data[:200]!r}")
                return json.loads(data)
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def ctype_of(data: bytes) -> str:
    return "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"


def score(port: int, items: list[tuple[bytes, dict[str, Any]]], systems: tuple[str, ...],
          threads: int) -> dict[str, Any]:
    """Errors per system, and region scores for stn_photo, over ``items``."""
    clients: dict[int, Client] = {}

    def one(item: tuple[bytes, dict[str, Any]]) -> dict[str, Any]:
        import threading

        tid = threading.get_ident()
        c = clients.setdefault(tid, Client(port))
        data, rec = item
        res: dict[str, Any] = {}
        if "stn_photo" in systems:
            a = c.post("/v1/predict", data, ctype_of(data))
            res["stn_photo"] = int(a["label"]) != rec["label"]
            res["model"] = a["model"]
            if "ink_box" in rec and a.get("region"):
                res["region"] = region_scores(a["region"], rec["ink_box"])
        if "classical" in systems:
            a = c.post("/v1/models/stn_rts/predict?invert=false", classical.canvas_png(data), "image/png")
            res["classical"] = int(a["label"]) != rec["label"]
        if "stn_rts" in systems:
            a = c.post("/v1/models/stn_rts/predict", data, ctype_of(data))
            res["stn_rts"] = int(a["label"]) != rec["label"]
        return res

    with ThreadPoolExecutor(threads) as pool:
        rows = list(pool.map(one, items))
    n = len(rows)
    out: dict[str, Any] = {"n": n}
    for s in systems:
        k = sum(r[s] for r in rows)
        lo, hi = wilson(k, n)
        out[s] = {"errors": k, "error": k / n, "ci95": [lo, hi]}
    regions = [r["region"] for r in rows if "region" in r]
    if regions:
        cov = np.array([c for c, _ in regions])
        area = np.array([a for _, a in regions])
        ok = (cov >= 0.9) & (area <= 6.0)
        out["region"] = {"n": len(regions), "coverage_median": float(np.median(cov)),
                         "coverage_ge_90": float((cov >= 0.9).mean()), "area_median": float(np.median(area)),
                         "area_le_6": float((area <= 6.0).mean()), "both": float(ok.mean())}
    models = {r.get("model") for r in rows if "model" in r}
    if models:
        out["default_model"] = sorted(m for m in models if m)
    return out


# --- the run -----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = mnist.load_mnist(None)
    port = free_port()
    env = {**os.environ, "STN_PORT": str(port), "STN_HOST": "127.0.0.1", "STN_LOG_LEVEL": "warning"}
    if args.model_repository:
        env["STN_MODEL_REPOSITORY"] = str(args.model_repository)
    log_dir = Path(args.scratch)
    log_dir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess([sys.executable, "-m", "service.cli", "--host", "127.0.0.1", "--port", str(port)],
                           log_dir / "photo_eval_server.log", env, url=f"http://127.0.0.1:{port}")
    result: dict[str, Any] = {"command": _load.command_line(),
                              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "machine": machine(), "n_per_condition": args.n, "pen_a": args.pen, "sets": {}}
    try:
        server.wait_http(timeout_s=180)
        systems = tuple(args.systems)
        for set_name in args.sets:
            result["sets"][set_name] = {}
            for cond in CONDITIONS:
                t0 = time.perf_counter()
                if set_name == "A":
                    items = set_a(cond, args.n, data["test_images"], data["test_labels"], args.pen == "legible")
                else:
                    items = set_b(cond, args.n)
                t1 = time.perf_counter()
                res = score(port, items, systems, args.threads)
                res["render_s"], res["score_s"] = round(t1 - t0, 1), round(time.perf_counter() - t1, 1)
                result["sets"][set_name][cond] = res
                log(f"{set_name} {cond}: " + ", ".join(f"{s} {100 * res[s]['error']:.1f}%" for s in systems)
                    + (f", region ok {100 * res['region']['both']:.1f}%" if "region" in res else ""))
        result["mnist_style"] = {}
        for kind in MNIST_STYLE if "stn_rts" in systems else ():
            n = args.n_rts if kind == "rts42" else args.n
            res = score(port, mnist_style(kind, n, data), ("stn_photo", "stn_rts"), args.threads)
            result["mnist_style"][kind] = res
            log(f"{kind}: stn_photo {100 * res['stn_photo']['error']:.2f}%, "
                f"stn_rts {100 * res['stn_rts']['error']:.2f}%")
    finally:
        server.stop()
    return result


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def report_md(r: dict[str, Any]) -> str:
    lines = [f"# Photo evaluation, {r['date']}", "", f"Command: `{r['command']}`", "",
             f"Machine: {r['machine']['cpu']} ({r['machine']['cpu_count']} cores), {r['machine']['platform']}.", "",
             "Error (%) and 95 % Wilson interval through HTTP, "
             f"{r['n_per_condition']:,} photos per condition. Set A: the training generator's code, its own "
             "seed, MNIST-test digits, held-out fonts, the "
             f"{r.get('pen_a', 'earlier')} pen rule. Set B: the independent renderer `bench/photo_render.py`.",
             ""]
    for set_name, conds in r["sets"].items():
        lines += [f"## Set {set_name}", "",
                  "| condition | stn_photo | classical → stn_rts | stn_rts | region ok (cover ≥ 90 %, area ≤ 6) |",
                  "| --- | --- | --- | --- | --- |"]
        for cond, res in conds.items():
            cells = []
            for s in SYSTEMS:
                if s not in res:
                    cells.append("not run")
                    continue
                e = res[s]
                cells.append(f"{pct(e['error'])} ({pct(e['ci95'][0])}–{pct(e['ci95'][1])})")
            reg = res.get("region")
            cells.append(f"{pct(reg['both'])} (cover {pct(reg['coverage_ge_90'])}, area {pct(reg['area_le_6'])})"
                         if reg else "")
            lines.append(f"| {cond} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## MNIST-style inputs", "", "| input | n | stn_photo | stn_rts |", "| --- | --- | --- | --- |"]
    for kind, res in r.get("mnist_style", {}).items():
        cells = [f"{pct(res[s]['error'])} ({pct(res[s]['ci95'][0])}–{pct(res[s]['ci95'][1])})"
                 for s in ("stn_photo", "stn_rts")]
        lines.append(f"| {kind} | {res['n']:,} | " + " | ".join(cells) + " |")
    models = {m for conds in r["sets"].values() for res in conds.values() for m in res.get("default_model", [])}
    lines += ["", f"`/v1/predict` without a model name answered with: {', '.join(sorted(models)) or 'n/a'}.", ""]
    return "\n".join(lines)


def log(msg: str) -> None:
    print(f"[photo_eval {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="photos per condition and set")
    p.add_argument("--n-rts", type=int, default=10_000, help="42x42 RTS test digits")
    p.add_argument("--sets", nargs="+", default=["A", "B"], choices=["A", "B"])
    p.add_argument("--pen", default="legible", choices=["legible", "earlier"],
                   help="set A's pen rule (model.photo.stroke): legible since 2026-12-07; earlier: the rule the "
                        "cards before it were measured with, whose max-filter of 5 closes 28-px digits into blobs")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS),
                   help="what to score (the MNIST-style inputs need stn_rts)")
    p.add_argument("--threads", type=int, default=2, help="client threads")
    p.add_argument("--model-repository", type=Path, help="default: the bundled one")
    p.add_argument("--scratch", default="/tmp/stn_photo_eval")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    result = run(args)
    md = report_md(result)
    print(md)
    if not args.no_write:
        log(f"wrote {_load.write_results(RESULTS, 'photo_eval', md, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
