"""Service benchmark: ``stn-serve`` on the bundled model under Debian's ``wrk``, against two references.

What one run measures, on this machine, with the same payload (real PNG digits: the first 64 digits of the
fixed distorted MNIST test set of the model's dataset):

1. R_empty: an empty FastAPI endpoint (``bench/_empty_app.py``: reads the body, answers a small JSON),
   served by uvicorn with the settings ``stn-serve`` uses, under the same wrk command: what HTTP alone costs.
2. The service: ``stn-serve`` (a separate process) driven by wrk (another process) posting one PNG per
   request to ``/v1/predict`` at each concurrency (closed loop: ``-c N`` connections, each sending its next
   request when answered). Per level: req/s, latency p50/p95/p99 (wrk's), the batch sizes the dynamic
   batcher formed (``/metrics`` scraped before and after), and the server's CPU time per request (user +
   system time of the server process tree from ``/proc``, divided by the requests answered).
   Then the batch route: multipart bodies of ``--batch-files`` PNGs to ``/v1/predict/batch``, images/s.
   Then phone photos (unless ``--no-photos``): a second ``stn-serve`` (default model ``--photo-model``,
   ``STN_INTRA_OP_THREADS=1``) gets JPEG photos of ``--photo-sizes`` (1600x1200 and 4000x3000, 8 files each,
   ``bench/_photos.py``) on ``/v1/predict`` at concurrency 1 and 64: req/s, p50/p99, and the server's CPU
   per request split into decode, preprocess, inference and answer (``stn_stage_cpu_seconds_total``,
   thread CPU in the thread that ran each stage) and the rest (the /proc total minus the four: HTTP, body
   reads, JSON, the event loop, scrapes). One intra-op thread, because the stage counters read the calling
   thread's CPU and onnxruntime's own pool threads would escape them (docs/benchmarks.md).
3. R_ort: onnxruntime in this process (``ModelRuntime``, the service's session options) on the same
   preprocessed images, at batch 1 and at the batch sizes the service formed, with the service's intra-op
   threads and with the other choice (1 or all cores). The goals take the faster of the two at each batch
   size: the machine's raw inference rate, so that no setting of the service can lower its own ceiling.

The ceiling for any service on these cores, where inference and HTTP share the CPU, is
``C = 1 / (1/R_ort + 1/R_empty)`` (R_ort at the mean batch size formed at concurrency 64, R_empty at
concurrency 64). Goals: req/s at concurrency 64 >= 0.80 C; p99 <= 3 p50 there; p50 at concurrency 1 within
1 ms of onnxruntime's batch-1 time; the batch route >= 0.85 R_ort images/s. wrk runs on the same cores
(``-t1`` by default): its CPU time is reported too, it is part of what is measured.

    python -m bench.bench_service                       # everything, writes bench/results/service_<date>.md/json
    python -m bench.bench_service --quick --no-write    # a few seconds per level, to check the setup
    python -m bench.bench_service --set max_queue_delay_us=0 --set intra_op_threads=1
    python -m bench.bench_service --quick --no-write --photos-only --photo-model-repository /tmp/repo_smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench import _load
from bench._load import WrkResult
from tests.utils.server import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]


GOAL_RPS_VS_C = 0.80
GOAL_TAIL = 3.0
GOAL_C1_MS = 1.0
GOAL_BATCH_VS_ORT = 0.85
SETTLE_S = 0.5
BUSY_WARN = 0.15  # background CPU share above which a run is flagged as disturbed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "service" / "model_repository")
    p.add_argument("--model", default="stn_rts", help="the model to drive (the default model of the server)")
    p.add_argument("--concurrency", default="1,8,64,256", help="comma-separated wrk connection counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per level")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load before each level")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (they share the same cores)")
    p.add_argument("--batch-files", type=int, default=32, help="PNG files per /v1/predict/batch request")
    p.add_argument("--batch-concurrency", type=int, default=2, help="connections for the batch route")
    p.add_argument("--ort-seconds", type=float, default=4.0, help="seconds of onnxruntime per batch size")
    p.add_argument("--images", type=int, default=64, help="distinct digits in the payload")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting (STN_NAME for stn-serve and for R_ort), e.g. max_queue_delay_us=0",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where results are written")
    p.add_argument("--tag", default="", help="suffix of the result file names")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--quick", action="store_true", help="2 s per level: a smoke run of the setup")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    p.add_argument("--photo-model", default="stn_photo", help="the model the photo levels post to")
    p.add_argument(
        "--photo-model-repository", type=Path, default=None, help="for the photo server (default: --model-repository)"
    )
    p.add_argument("--photo-sizes", default="1600x1200,4000x3000", help="comma-separated WxH of the photo JPEGs")
    p.add_argument("--photo-files", type=int, default=8, help="distinct photos per size, cycled")
    p.add_argument("--photo-concurrency", default="1,64", help="comma-separated wrk connection counts for photos")
    p.add_argument(
        "--photo-intra-op-threads",
        type=int,
        default=1,
        help="the photo server's STN_INTRA_OP_THREADS; the inference stage is exact only at 1",
    )
    p.add_argument("--no-photos", action="store_true", help="skip the photo levels")
    p.add_argument("--photos-only", action="store_true", help="only the photo levels (no goals): a setup check")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.ort_seconds = 2.0, 1.0, 1.0
    if args.no_photos and args.photos_only:
        p.error("--no-photos and --photos-only exclude each other")
    args.photo_model_repository = args.photo_model_repository or args.model_repository
    args.photo_levels = [int(c) for c in args.photo_concurrency.split(",") if c.strip()]
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if 64 not in args.levels:
        p.error("--concurrency must include 64 (the goals are stated there)")
    return args


# ---- setup ------------------------------------------------------------------------------------------


def service_settings(args: argparse.Namespace, port: int) -> tuple[dict[str, str], Any]:
    """``STN_*`` variables for the server, and the same settings object in this process (for R_ort)."""
    from service.settings import Settings

    env = {
        "STN_MODEL_REPOSITORY": str(args.model_repository),
        "STN_DEFAULT_MODEL": args.model,
        "STN_HOST": "127.0.0.1",
        "STN_PORT": str(port),
    }
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants NAME=VALUE, got {item!r}")
        env[f"STN_{name.strip().upper()}"] = value.strip()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = Settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return env, settings


def load_runtime(settings: Any, model: str) -> Any:
    from service.repository import scan_repository
    from service.runtime import ModelRuntime

    entries = scan_repository(Path(settings.model_repository))
    if model not in entries:
        raise SystemExit(f"model {model!r} not in {settings.model_repository} (has: {', '.join(entries)})")
    rt = ModelRuntime(entries[model], settings.provider, settings.intra_op_threads, settings.cuda_device_id)
    rt.load()
    return rt


def distortion_of(spec: Any) -> str:
    ds = spec.dataset or ""
    if ds.startswith("mnist-"):
        return ds.split("-", 1)[1]
    return {42: "rts", 60: "tc"}.get(spec.input_size[0], "rts")


def make_payload(spec: Any, n: int, folder: Path, batch_files: int) -> dict[str, Any]:
    """PNG digits (one file per request) and multipart bodies of ``batch_files`` of them."""
    digits = folder / "digits"
    subprocess.run(
        [sys.executable, "-m", "bench._digits", "--distortion", distortion_of(spec),
         "--n", str(n), "--out", str(digits)],
        check=True,
        cwd=ROOT,
    )
    pngs = sorted(digits.glob("digit_*.png"))
    labels = json.loads((digits / "labels.json").read_text())
    boundary = "stnbenchboundary7MA4YWxkTrZu0gW"
    bodies = []
    for start in range(0, len(pngs), batch_files):
        chunk = [pngs[(start + k) % len(pngs)] for k in range(batch_files)]
        parts = []
        for path in chunk:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                "Content-Type: image/png\r\n\r\n".encode()
                + path.read_bytes()
                + b"\r\n"
            )
        body = folder / f"batch_{start:03d}.bin"
        body.write_bytes(b"".join(parts) + f"--{boundary}--\r\n".encode())
        bodies.append(body)
    return {
        "pngs": pngs,
        "labels": labels,
        "multipart": bodies,
        "multipart_type": f"multipart/form-data; boundary={boundary}",
        "png_bytes_mean": statistics.fmean(p.stat().st_size for p in pngs),
    }


def preprocessed(spec: Any, pngs: list[Path]) -> np.ndarray:
    """The service's own preprocessing of the payload: float32 ``(n, 1, H, W)``."""
    from service.preprocess import decode, prepare

    return np.stack([prepare(decode(p.read_bytes(), 10**8), spec).x for p in pngs])


def code_version() -> dict[str, Any]:
    """The commit and the service files changed since (read-only git), so a result names what it measured."""

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [ln[3:] for ln in git("status", "--porcelain", "--", "service").splitlines() if len(ln) > 3]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "service_changed": changed}


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    blocks = [
        {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in para.splitlines() if ":" in ln)}
        for para in cpuinfo.split("\n\n")
    ]
    cores = {(b.get("physical id"), b.get("core id")) for b in blocks if "core id" in b}
    virt = "hypervisor" in (blocks[0].get("flags", "").split() if blocks else [])
    return {
        "cpu": model,
        "physical_cores": len(cores) or None,
        "virtual_machine": virt,
        "logical_cpus": os.cpu_count(),
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers_available": ort.get_available_providers(),
        "wrk": _load.wrk_version(),
        "uvicorn_loop_http": uvicorn_impls(),
    }


def uvicorn_impls() -> str:
    """What uvicorn's ``auto`` picks here: uvloop/asyncio and httptools/h11."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {http}"


# ---- measuring --------------------------------------------------------------------------------------


def level(
    server: ServerProcess,
    url: str,
    bodies: list[Path],
    content_type: str,
    c: int,
    args: argparse.Namespace,
    scratch: Path,
    model: str | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Warm up, then one measured wrk run at ``c`` connections, with the server's CPU time and histograms."""
    base = url.split("/v1/")[0]
    if args.warmup > 0:
        _load.run_wrk(url, bodies, content_type, c, args.warmup, args.wrk_threads, scratch)
    time.sleep(SETTLE_S)
    m0 = _load.scrape(base, model, workers) if model else None
    cpu0 = _load.proc_cpu_s(server.pid)
    r: WrkResult = _load.run_wrk(url, bodies, content_type, c, args.duration, args.wrk_threads, scratch)
    cpu1 = _load.proc_cpu_s(server.pid)
    time.sleep(SETTLE_S)  # requests still in flight when wrk stopped finish before the scrape
    out: dict[str, Any] = {
        "concurrency": c,
        "requests": r.requests,
        "seconds": r.seconds,
        "rps": r.rps,
        "errors": r.errors,
        "latency_ms": {k: v / 1000 for k, v in r.latency_us.items()},
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_ms_per_request": 1000 * (cpu1 - cpu0) / max(1, r.requests),
        "server_cpu_cores": (cpu1 - cpu0) / r.seconds,
        "wrk_cpu_s": r.wrk_cpu_s,
        "wrk_cpu_cores": r.wrk_cpu_s / r.seconds if r.seconds else 0.0,
        "wrk_command": shlex.join(r.command),
    }
    if model and m0 is not None:
        m1 = _load.scrape(base, model, workers)
        d = _load.histogram_delta(m0, m1)
        out["metrics_snapshots"] = [m0["distinct_snapshots"], m1["distinct_snapshots"]]
        bs, inf, qw = d["stn_batch_size"], d["stn_inference_seconds"], d["stn_queue_wait_seconds"]
        out["batches"] = bs["count"]
        out["images"] = bs["sum"]
        out["mean_batch"] = bs["sum"] / bs["count"] if bs["count"] else 0.0
        out["batch_hist"] = {le: n for le, n in bs["buckets"].items() if n}
        out["inference_ms_per_batch"] = 1000 * inf["sum"] / inf["count"] if inf["count"] else 0.0
        out["inference_busy"] = inf["sum"] / r.seconds  # share of the wall time the inference thread ran
        out["queue_wait_ms_mean"] = 1000 * qw["sum"] / qw["count"] if qw["count"] else 0.0
    return out


def ort_rates(rt: Any, x: np.ndarray, sizes: list[int], seconds: float) -> dict[int, dict[str, float]]:
    """onnxruntime alone: images/s (wall, back-to-back runs) and the median run time per batch size."""
    out: dict[int, dict[str, float]] = {}
    for b in sizes:
        xb = np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])))  # cycles through the payload digits
        for _ in range(10):
            rt.predict(xb)
        times = []
        t_start = time.perf_counter()
        while time.perf_counter() - t_start < seconds:
            t0 = time.perf_counter()
            rt.predict(xb)
            times.append(time.perf_counter() - t0)
        wall = time.perf_counter() - t_start
        out[b] = {
            "images_per_s": b * len(times) / wall,
            "run_ms_median": 1000 * statistics.median(times),
            "run_ms_p99": 1000 * float(np.percentile(times, 99)),
            "runs": len(times),
        }
    return out


def check_answers(base: str, pngs: list[Path], labels: list[int]) -> dict[str, int]:
    """Each payload digit once through /v1/predict: how many the service classifies right."""
    right = 0
    for path, label in zip(pngs, labels, strict=True):
        req = urllib.request.Request(
            base + "/v1/predict", data=path.read_bytes(), headers={"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            right += json.loads(r.read())["label"] == str(label)
    return {"right": right, "of": len(pngs)}


def served_providers(base: str, model: str) -> list[str]:
    with urllib.request.urlopen(base + "/v1/models", timeout=10) as r:
        models = json.loads(r.read())["models"]
    return next((m["providers"] for m in models if m["name"] == model), [])


# ---- phone photos -----------------------------------------------------------------------------------

STAGE_NAMES = ("decode", "preprocess", "inference", "answer")
IDLE_POLL_S = 0.25


def make_photos(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """``--photo-files`` JPEG photos per size (``bench/_photos.py``, its own process, like the digits)."""
    out = folder / "photos"
    subprocess.run(
        [sys.executable, "-m", "bench._photos", "--sizes", args.photo_sizes,
         "--n", str(args.photo_files), "--out", str(out)],
        check=True,
        cwd=ROOT,
    )
    return json.loads((out / "manifest.json").read_text())


def stage_snapshot(samples: list[tuple[str, dict[str, str], float]], model: str, route: str) -> dict[str, float]:
    """The photo model's stage counters, its batch-size histogram's sum and count, and the route's requests."""
    snap = {s: 0.0 for s in STAGE_NAMES} | {"images": 0.0, "requests": 0.0, "ok": 0.0, "rows": 0.0, "batches": 0.0}
    for name, labels, value in samples:
        if name == "stn_requests_total" and labels.get("route") == route:
            snap["requests"] += value
            snap["ok"] += value if labels.get("status") == "200" else 0.0
        elif labels.get("model") != model:
            continue
        elif name == "stn_stage_cpu_seconds_total" and labels.get("stage") in snap:
            snap[labels["stage"]] += value
        elif name == "stn_stage_images_total":
            snap["images"] += value
        elif name == "stn_batch_size_sum":
            snap["rows"] += value
        elif name == "stn_batch_size_count":
            snap["batches"] += value
    return snap


def idle_samples(base: str, timeout_s: float = 120.0) -> list[tuple[str, dict[str, str], float]]:
    """Scrape until no request is in flight (the last one still draining after wrk stops); that scrape."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = _load.scrape_samples(base)
        busy = next((v for n, _, v in samples if n == "stn_requests_in_flight"), 0.0)
        if busy == 0 or time.monotonic() > deadline:
            return samples
        time.sleep(IDLE_POLL_S)


def photo_level(
    server: ServerProcess, base: str, files: list[Path], c: int, args: argparse.Namespace, scratch: Path
) -> dict[str, Any]:
    """Like ``level``, but the server's CPU and its stage counters are read with the server idle on both
    sides (a 4000x3000 photo at c=64 takes seconds to drain), and divided by the server's own count of the
    requests it answered in between: every CPU second and every request of the window, no more."""
    url, route = base + "/v1/predict", "/v1/predict"
    if args.warmup > 0:
        _load.run_wrk(url, files, "image/jpeg", c, args.warmup, args.wrk_threads, scratch)
    time.sleep(SETTLE_S)
    s0 = stage_snapshot(idle_samples(base), args.photo_model, route)
    cpu0 = _load.proc_cpu_s(server.pid)
    r: WrkResult = _load.run_wrk(url, files, "image/jpeg", c, args.duration, args.wrk_threads, scratch)
    samples = idle_samples(base)
    cpu1 = _load.proc_cpu_s(server.pid)
    s1 = stage_snapshot(samples, args.photo_model, route)
    d = {k: s1[k] - s0[k] for k in s0}
    n = max(1.0, d["requests"])
    total_ms = 1000 * (cpu1 - cpu0) / n
    stages = {k: 1000 * d[k] / n for k in STAGE_NAMES}
    stages["http_and_rest"] = total_ms - sum(stages.values())
    stages["total"] = total_ms
    return {
        "concurrency": c,
        "requests": r.requests,
        "server_requests": int(round(d["requests"])),
        "server_non_200": int(round(d["requests"] - d["ok"])),
        "images": int(round(d["images"])),
        "seconds": r.seconds,
        "rps": r.rps,
        "errors": r.errors,
        "latency_ms": {k: v / 1000 for k, v in r.latency_us.items()},
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_ms_per_request": total_ms,
        "stage_cpu_ms_per_request": stages,
        "mean_batch": d["rows"] / d["batches"] if d["batches"] else 0.0,
        "wrk_cpu_s": r.wrk_cpu_s,
        "wrk_cpu_cores": r.wrk_cpu_s / r.seconds if r.seconds else 0.0,
        "wrk_command": shlex.join(r.command),
    }


def check_photos(base: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Each photo once through /v1/predict: answered, the upload's size echoed, how many labels right."""
    out: dict[str, Any] = {}
    for size, files in manifest["sizes"].items():
        right = sized = 0
        for path, label in zip(files, manifest["labels"], strict=True):
            req = urllib.request.Request(
                base + "/v1/predict", data=Path(path).read_bytes(), headers={"Content-Type": "image/jpeg"}
            )
            with urllib.request.urlopen(req, timeout=60) as r:
                answer = json.loads(r.read())
            right += answer["label"] == str(label)
            sized += answer["image_size"] == [int(v) for v in size.split("x")]
        out[size] = {"right": right, "size_echoed": sized, "of": len(files)}
    return out


def require_photo_model(args: argparse.Namespace) -> None:
    """Fail before anything runs when the photo model is missing (the server would serve another default)."""
    from service.repository import scan_repository

    entries = scan_repository(Path(args.photo_model_repository).resolve())
    if args.photo_model not in entries:
        raise SystemExit(
            f"photo model {args.photo_model!r} not in {args.photo_model_repository} (has: {', '.join(entries)}); "
            "point --photo-model-repository at one that has it, or pass --no-photos"
        )


def photo_run(args: argparse.Namespace, scratch: Path, env: dict[str, str]) -> dict[str, Any]:
    """The photo levels on their own ``stn-serve`` (one intra-op thread, the photo model as default)."""
    manifest = make_photos(args, scratch)
    port = free_port()
    penv = {
        **env,
        "STN_MODEL_REPOSITORY": str(args.photo_model_repository),
        "STN_DEFAULT_MODEL": args.photo_model,
        "STN_INTRA_OP_THREADS": str(args.photo_intra_op_threads),
        "STN_PORT": str(port),
    }
    out: dict[str, Any] = {
        "model": args.photo_model,
        "model_repository": str(args.photo_model_repository),
        "intra_op_threads": args.photo_intra_op_threads,
        "settings_overrides": penv,
        "payload": {
            size: {"files": len(files), "jpeg_bytes_mean": statistics.fmean(Path(f).stat().st_size for f in files)}
            for size, files in manifest["sizes"].items()
        },
        "conditions": manifest["conditions"],
        "levels": [],
    }
    serve_bin = Path(sys.executable).parent / "stn-serve"
    cmd = [str(serve_bin)] if serve_bin.exists() else [sys.executable, "-m", "service.cli"]
    base = f"http://127.0.0.1:{port}"
    server = ServerProcess(cmd, scratch / "stn-serve-photos.log", {**os.environ, **penv}, url=base)
    try:
        server.wait_http(timeout_s=300.0)
        out["providers"] = served_providers(base, args.photo_model)
        out["answers"] = check_photos(base, manifest)
        log(f"photo answers: {out['answers']}")
        for size, files in manifest["sizes"].items():
            for c in args.photo_levels:
                lv = photo_level(server, base, [Path(f) for f in files], c, args, scratch)
                lv["photo_size"] = size
                out["levels"].append(lv)
                log(fmt_photo(lv))
    finally:
        server.stop()
    out["server_log_tail"] = server.log_tail(15)
    return out


# ---- the run ----------------------------------------------------------------------------------------


def background_load(seconds: float) -> dict[str, Any]:
    """What else the machine was doing before a run: CPU busy share over ``seconds``, stn-train processes."""
    return {"cpu_busy_before": _load.system_busy_fraction(seconds),
            "stn_train_processes": _load.processes_named("stn-train")}


def report_header(started: datetime, background: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The fields every results file starts with: command, start, machine, code, background, settings."""
    return {
        "command": _load.command_line(),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "code": code_version(),
        "background": background,
        "settings": {k: v for k, v in settings.model_dump().items() if k != "api_token"},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.no_photos:
        require_photo_model(args)
    scratch = _load.scratch_dir()
    started = datetime.now(timezone.utc)
    background = {**background_load(2.0), "loadavg_before": os.getloadavg()}
    if background["cpu_busy_before"] > BUSY_WARN or background["stn_train_processes"]:
        log(
            f"warning: the CPUs were {100 * background['cpu_busy_before']:.0f} % busy before the run "
            f"({len(background['stn_train_processes'])} stn-train processes): the numbers will be low and noisy"
        )
    port = free_port()
    env, settings = service_settings(args, port)
    rt = load_runtime(settings, args.model)
    spec = rt.spec
    log(f"model {args.model}: input {spec.input_size}, intra-op threads {rt.intra_op_threads or os.cpu_count()}")
    payload = make_payload(spec, args.images, scratch, args.batch_files)
    x = preprocessed(spec, payload["pngs"])
    result: dict[str, Any] = {
        **report_header(started, background, settings),
        "model": args.model,
        "model_file": str(rt.entry.path),
        "settings_overrides": env,
        "payload": {
            "images": len(payload["pngs"]),
            "png_bytes_mean": payload["png_bytes_mean"],
            "batch_files": args.batch_files,
            "multipart_bytes": payload["multipart"][0].stat().st_size,
        },
        "durations": {"measured_s": args.duration, "warmup_s": args.warmup, "wrk_threads": args.wrk_threads},
    }
    png_type = "image/png"

    # 1. R_empty
    eport = free_port()
    empty = ServerProcess(
        [sys.executable, "-m", "bench._empty_app", "--port", str(eport),
         "--workers", str(settings.workers)],
        scratch / "empty.log",
        {**os.environ},
        url=f"http://127.0.0.1:{eport}",
    )
    try:
        empty.wait_http("/openapi.json")
        result["empty"] = []
        for c in args.levels:
            lv = level(empty, f"http://127.0.0.1:{eport}/v1/predict", payload["pngs"], png_type, c, args, scratch)
            result["empty"].append(lv)
            log(fmt_level("empty", lv))
    finally:
        empty.stop()

    # 2. the service
    serve_bin = Path(sys.executable).parent / "stn-serve"
    cmd = [str(serve_bin)] if serve_bin.exists() else [sys.executable, "-m", "service.cli"]
    base = f"http://127.0.0.1:{port}"
    server = ServerProcess(cmd, scratch / "stn-serve.log", {**os.environ, **env}, url=base)
    try:
        server.wait_http()
        result["providers"] = served_providers(base, args.model)
        result["answers"] = check_answers(base, payload["pngs"], payload["labels"])
        log(f"service answers: {result['answers']['right']}/{result['answers']['of']} digits right")
        result["service"] = []
        for c in args.levels:
            lv = level(
                server, base + "/v1/predict", payload["pngs"], png_type, c, args, scratch, args.model, settings.workers
            )
            result["service"].append(lv)
            log(fmt_level("service", lv))
        lv = level(
            server,
            base + "/v1/predict/batch",
            payload["multipart"],
            payload["multipart_type"],
            args.batch_concurrency,
            args,
            scratch,
            args.model,
            settings.workers,
        )
        lv["images_per_s"] = lv["rps"] * args.batch_files
        lv["files_per_request"] = args.batch_files
        result["batch_route"] = lv
        log(fmt_level("batch", lv) + f"  {lv['images_per_s']:.0f} images/s")
    finally:
        server.stop()
    result["server_log_tail"] = server.log_tail(15)
    if not args.no_photos:  # after the PNG levels, before R_ort (which wants the CPU to itself)
        try:
            result["photos"] = photo_run(args, scratch, env)
        except (subprocess.CalledProcessError, OSError) as exc:  # e.g. no fonts to render photos with
            # The PNG levels are measured already: keep them, and say why the photo levels are missing (the
            # photo renderer's own traceback went to this process's stderr).
            result["photos_error"] = str(exc)
            log(f"photo levels not measured: {result['photos_error']}")

    # 3. R_ort, with the server gone (the CPU is ours)
    b64 = next(lv for lv in result["service"] if lv["concurrency"] == 64)["mean_batch"]
    b_batch = result["batch_route"]["mean_batch"]
    sizes = sorted({1, max(1, round(b64)), max(1, round(b_batch)), settings.max_batch_size})
    result["ort"] = {str(b): v for b, v in ort_rates(rt, x, sizes, args.ort_seconds).items()}
    for b in sizes:
        o = result["ort"][str(b)]
        log(f"R_ort batch {b:3d}: {o['images_per_s']:8.0f} images/s, run {o['run_ms_median']:.3f} ms median")
    # The other intra-op thread count: the goals take the faster of the two at each batch size.
    threads = settings.intra_op_threads or os.cpu_count() or 1
    other = 1 if threads > 1 else (os.cpu_count() or 1)
    if other != threads:
        alt = load_runtime(settings.model_copy(update={"intra_op_threads": other}), args.model)
        result["ort_other_threads"] = {
            "intra_op_threads": other,
            "rates": {str(b): v for b, v in ort_rates(alt, x, sizes, args.ort_seconds).items()},
        }
        for b, o in result["ort_other_threads"]["rates"].items():
            log(f"R_ort batch {int(b):3d}, {other} intra-op threads: {o['images_per_s']:8.0f} images/s")
    result["ort_threads"] = threads
    result["background"]["cpu_busy_after"] = _load.system_busy_fraction(2.0)
    result["background"]["stn_train_processes_after"] = _load.processes_named("stn-train")
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["goals"] = goals(result, b64, b_batch)
    shutil.rmtree(scratch, ignore_errors=True)  # kept when a run fails: the server logs are there
    return result


def run_photos_only(args: argparse.Namespace) -> dict[str, Any]:
    """``--photos-only``: the photo levels alone (a setup check; no PNG levels, references or goals)."""
    require_photo_model(args)
    scratch = _load.scratch_dir()
    started = datetime.now(timezone.utc)
    background = background_load(1.0)
    env, settings = service_settings(args, free_port())
    result: dict[str, Any] = {
        **report_header(started, background, settings),
        "durations": {"measured_s": args.duration, "warmup_s": args.warmup, "wrk_threads": args.wrk_threads},
        "photos": photo_run(args, scratch, env),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def best_ort(result: dict[str, Any], batch: float) -> tuple[float, int]:
    """(images/s, intra-op threads): the faster onnxruntime configuration at ``batch`` (rounded)."""
    b = str(max(1, round(batch)))
    best = (result["ort"][b]["images_per_s"], result["ort_threads"])
    alt = result.get("ort_other_threads")
    if alt is not None and b in alt["rates"] and alt["rates"][b]["images_per_s"] > best[0]:
        best = (alt["rates"][b]["images_per_s"], alt["intra_op_threads"])
    return best


def goals(result: dict[str, Any], b64: float, b_batch: float) -> dict[str, Any]:
    svc = {lv["concurrency"]: lv for lv in result["service"]}
    emp = {lv["concurrency"]: lv for lv in result["empty"]}
    r_ort, r_ort_threads = best_ort(result, b64)
    r_empty = emp[64]["rps"]
    c_max = 1.0 / (1.0 / r_ort + 1.0 / r_empty)
    s64 = svc[64]
    g: dict[str, Any] = {
        "B64": b64,
        "R_ort": r_ort,
        "R_ort_threads": r_ort_threads,
        "R_empty": r_empty,
        "C": c_max,
        "rps_64": s64["rps"],
        "rps_vs_C": s64["rps"] / c_max,
        "rps_vs_C_goal": GOAL_RPS_VS_C,
        "p99_over_p50_64": s64["latency_ms"]["p99"] / s64["latency_ms"]["p50"],
        "p99_over_p50_goal": GOAL_TAIL,
    }
    g["rps_pass"] = g["rps_vs_C"] >= GOAL_RPS_VS_C
    g["tail_pass"] = g["p99_over_p50_64"] <= GOAL_TAIL
    if 1 in svc:
        alt = result.get("ort_other_threads", {}).get("rates", {})
        ort1 = min(o["1"]["run_ms_median"] for o in (result["ort"], alt) if "1" in o)  # the faster
        g["p50_c1_ms"] = svc[1]["latency_ms"]["p50"]
        g["ort_b1_ms"] = ort1
        g["c1_excess_ms"] = g["p50_c1_ms"] - ort1
        g["c1_goal_ms"] = GOAL_C1_MS
        g["c1_pass"] = g["c1_excess_ms"] <= GOAL_C1_MS
    br = result["batch_route"]
    r_ort_b, g["R_ort_batch_threads"] = best_ort(result, b_batch)
    g["batch_images_per_s"] = br["images_per_s"]
    g["batch_mean_batch"] = b_batch
    g["R_ort_batch"] = r_ort_b
    g["batch_vs_ort"] = br["images_per_s"] / r_ort_b
    g["batch_vs_ort_goal"] = GOAL_BATCH_VS_ORT
    g["batch_pass"] = g["batch_vs_ort"] >= GOAL_BATCH_VS_ORT
    return g


# ---- reporting --------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


def fmt_level(what: str, lv: dict[str, Any]) -> str:
    lat = lv["latency_ms"]
    errs = ", ".join(f"{k} {n}" for k, n in lv["errors"].items() if n) or "0"
    batch = f" batch {lv['mean_batch']:5.1f}" if "mean_batch" in lv else ""
    return (
        f"{what:8s} c={lv['concurrency']:<4d} {lv['rps']:8.0f} req/s  p50 {lat['p50']:7.2f}  p95 {lat['p95']:7.2f}  "
        f"p99 {lat['p99']:7.2f} ms{batch}  server CPU {lv['server_cpu_ms_per_request']:.3f} ms/req  "
        f"errors {errs}"
    )


def fmt_photo(lv: dict[str, Any]) -> str:
    lat, st = lv["latency_ms"], lv["stage_cpu_ms_per_request"]
    errs = sum(lv["errors"].values()) + lv["server_non_200"]
    return (
        f"photo {lv['photo_size']:>9s} c={lv['concurrency']:<3d} {lv['rps']:7.1f} req/s  p50 {lat['p50']:8.1f}  "
        f"p99 {lat['p99']:8.1f} ms  batch {lv['mean_batch']:4.1f}  server CPU ms/req: decode {st['decode']:.1f}, "
        f"preprocess {st['preprocess']:.1f}, inference {st['inference']:.1f}, answer {st['answer']:.2f}, "
        f"HTTP and rest {st['http_and_rest']:.1f}, total {st['total']:.1f}  errors {errs}"
    )


def photo_md(p: dict[str, Any]) -> list[str]:
    """The photo levels' section of the report."""
    sizes = ", ".join(
        f"{size} ({pl['files']} files, mean {pl['jpeg_bytes_mean'] / 1e6:.2f} MB)" for size, pl in p["payload"].items()
    )
    answers = "; ".join(
        f"{size}: {a['right']}/{a['of']} labels right, upload size echoed {a['size_echoed']}/{a['of']}"
        for size, a in p.get("answers", {}).items()
    )
    lines = [
        "",
        f"## Phone photos (`/v1/predict` of `{p['model']}`, one JPEG per request)",
        "",
        f"A second `stn-serve` on `{p['model_repository']}`, default model `{p['model']}`, "
        f"`STN_INTRA_OP_THREADS={p['intra_op_threads']}` (onnxruntime then runs on the batcher's thread, where "
        "the inference stage's thread CPU sees it), otherwise the settings above; served on "
        f"{', '.join(p.get('providers', [])) or '?'}. Photos: {sizes}, cycled (`bench/_photos.py`: "
        f"`bench/photo_render.py` frames upscaled, re-noised, JPEG quality 90). Sanity: {answers}.",
        "",
        "Server CPU per request (ms): decode, preprocess, inference and answer from "
        "`stn_stage_cpu_seconds_total` (thread CPU of the thread that ran each stage; answer = building the "
        "answer, not its JSON encoding), total from `/proc` (the server process), HTTP and rest = total "
        "minus the four (HTTP parsing and body reads, routing, JSON, the event loop, metrics); all divided by "
        "the requests the server answered between two idle scrapes.",
        "",
        "| photo | concurrency | req/s | p50 ms | p99 ms | mean batch | decode | preprocess | inference | "
        "answer | HTTP and rest | total | wrk cores | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    if p["intra_op_threads"] != 1:
        lines[5:5] = [
            f"**Inference is undercounted**: {p['intra_op_threads']} intra-op threads, whose pool threads' CPU "
            "the stage counter does not see (it lands in HTTP and rest).",
            "",
        ]
    for lv in p["levels"]:
        lat, st = lv["latency_ms"], lv["stage_cpu_ms_per_request"]
        lines.append(
            f"| {lv['photo_size']} | {lv['concurrency']} | {lv['rps']:.1f} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
            f"{lv['mean_batch']:.1f} | {st['decode']:.2f} | {st['preprocess']:.2f} | {st['inference']:.2f} | "
            f"{st['answer']:.3f} | {st['http_and_rest']:.2f} | {st['total']:.2f} | {lv['wrk_cpu_cores']:.2f} | "
            f"{sum(lv['errors'].values()) + lv['server_non_200']} |"
        )
    return lines


def photos_only_md(r: dict[str, Any]) -> str:
    m, bg = r["machine"], r["background"]
    lines = [
        f"# Service benchmark, photo levels only, {r['started']}",
        "",
        "```sh",
        r["command"],
        "```",
        "",
        f"Machine: {m['cpu']}, `nproc` {m['nproc']}; onnxruntime {m['onnxruntime']}; {m['wrk']}. Background: CPU "
        f"busy {100 * bg['cpu_busy_before']:.0f} % before the run. wrk: `-t{r['durations']['wrk_threads']}`, "
        f"{r['durations']['warmup_s']:g} s warm-up then {r['durations']['measured_s']:g} s measured per level.",
        *photo_md(r["photos"]),
        "",
    ]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_md(r: dict[str, Any]) -> str:
    m, g, s = r["machine"], r["goals"], r["settings"]
    bg = r["background"]
    changed = r["code"]["service_changed"]
    changed = f", service files changed since: {', '.join(changed)}" if changed else ""
    lines = [
        f"# Service benchmark, {r['started']}",
        "",
        "```sh",
        r["command"],
        "```",
        "",
        f"Code: commit `{r['code']['commit']}`" + changed + ".",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}; {m['physical_cores']} cores, {m['logical_cpus']} logical CPUs, `nproc` "
        f"{m['nproc']}{' (a virtual machine)' if m.get('virtual_machine') else ''}",
        f"- Python {m['python']} ({m['platform']}); onnxruntime {m['onnxruntime']}, the model served on "
        f"{', '.join(r.get('providers', [])) or '?'}; uvicorn loop + HTTP: {m['uvicorn_loop_http']}; {m['wrk']}",
        f"- Background: CPU busy {100 * bg['cpu_busy_before']:.0f} % before the run, "
        f"{100 * bg['cpu_busy_after']:.0f} % after (all CPUs, everything but this benchmark); "
        f"`stn-train` processes: {len(bg['stn_train_processes'])} before, "
        f"{len(bg['stn_train_processes_after'])} after",
        "",
        "## Settings",
        "",
        f"- Model `{r['model']}` (`{r['model_file']}`); payload: {r['payload']['images']} distorted MNIST test "
        f"digits as PNG (mean {r['payload']['png_bytes_mean']:.0f} bytes), cycled; one per request to "
        f"`/v1/predict` (raw body, `Content-Type: image/png`).",
        f"- Service: workers {s['workers']}, intra-op threads {s['intra_op_threads']} (0 = all cores), "
        f"max batch {s['max_batch_size']}, max queue delay {s['max_queue_delay_us']} µs, "
        f"queue size {s['max_queue_size']}, provider {s['provider']}.",
        f"- wrk: `-t{r['durations']['wrk_threads']}`, {r['durations']['warmup_s']:g} s warm-up then "
        f"{r['durations']['measured_s']:g} s measured per level, closed loop (`-c` = concurrency). wrk runs on "
        "the same cores as the server; its CPU use is in the tables (`wrk cores`).",
        f"- Sanity: the service classified {r['answers']['right']}/{r['answers']['of']} payload digits right.",
        "",
        "## Service (`/v1/predict`, one PNG per request)",
        "",
        "| concurrency | req/s | p50 ms | p95 ms | p99 ms | mean batch | batch sizes (≤ le: count) | "
        "server CPU ms/req | server cores | inference busy | wrk cores | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lv in r["service"]:
        lines.append(row(lv))
    br = r["batch_route"]
    lines += [
        "",
        f"## Batch route (`/v1/predict/batch`, {br['files_per_request']} PNGs per multipart request)",
        "",
        "| concurrency | req/s | images/s | p50 ms | p99 ms | mean batch | server CPU ms/image | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {br['concurrency']} | {br['rps']:.1f} | {br['images_per_s']:.0f} | {br['latency_ms']['p50']:.2f} | "
        f"{br['latency_ms']['p99']:.2f} | {br['mean_batch']:.1f} | "
        f"{br['server_cpu_ms_per_request'] / br['files_per_request']:.3f} | {sum(br['errors'].values())} |",
        *(photo_md(r["photos"]) if "photos" in r else []),
        *(["", f"Photo levels not measured: {r['photos_error']}"] if "photos_error" in r else []),
        "",
        "## References (same run, same machine, same payload)",
        "",
        "R_empty: the empty FastAPI endpoint (`bench/_empty_app.py`) under the same wrk command.",
        "",
        "| concurrency | req/s | p50 ms | p95 ms | p99 ms | server CPU ms/req | wrk cores | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lv in r["empty"]:
        lat = lv["latency_ms"]
        lines.append(
            f"| {lv['concurrency']} | {lv['rps']:.0f} | {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | "
            f"{lv['server_cpu_ms_per_request']:.3f} | {lv['wrk_cpu_cores']:.2f} | {sum(lv['errors'].values())} |"
        )
    lines += [
        "",
        f"R_ort: onnxruntime in-process (`ModelRuntime.predict`, the service's session options, intra-op threads "
        f"{r['ort_threads']}), the same preprocessed digits, back-to-back runs. The goals take the faster of "
        "this and the other thread count below at each batch size.",
        "",
        "| batch | images/s | run ms (median) | run ms (p99) |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for b, o in sorted(r["ort"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {b} | {o['images_per_s']:.0f} | {o['run_ms_median']:.3f} | {o['run_ms_p99']:.3f} |")
    if "ort_other_threads" in r:
        alt = r["ort_other_threads"]
        rates = ", ".join(
            f"batch {b}: {o['images_per_s']:.0f} images/s ({o['run_ms_median']:.3f} ms)"
            for b, o in alt["rates"].items()
        )
        lines += ["", f"{alt['intra_op_threads']} intra-op threads: {rates}."]
    lines += [
        "",
        "## Goals",
        "",
        f"C = 1 / (1/R_ort + 1/R_empty) = 1 / (1/{g['R_ort']:.0f} + 1/{g['R_empty']:.0f}) = **{g['C']:.0f} req/s** "
        f"(R_ort at batch {max(1, round(g['B64']))}, the mean batch {g['B64']:.1f} formed at concurrency 64, "
        f"{g['R_ort_threads']} intra-op threads; R_empty at concurrency 64).",
        "",
        "| goal | measured | target | |",
        "| --- | ---: | ---: | --- |",
        f"| req/s at c=64 vs C | {g['rps_64']:.0f} / {g['C']:.0f} = {g['rps_vs_C']:.2f} | ≥ {g['rps_vs_C_goal']:.2f} "
        f"| {verdict(g['rps_pass'])} |",
        f"| p99 / p50 at c=64 | {g['p99_over_p50_64']:.2f} | ≤ {g['p99_over_p50_goal']:.0f} | "
        f"{verdict(g['tail_pass'])} |",
    ]
    if "c1_pass" in g:
        lines.append(
            f"| p50 at c=1 − onnxruntime batch-1 run | {g['p50_c1_ms']:.3f} − {g['ort_b1_ms']:.3f} = "
            f"{g['c1_excess_ms']:.3f} ms | ≤ {g['c1_goal_ms']:.1f} ms | {verdict(g['c1_pass'])} |"
        )
    lines += [
        f"| batch route images/s vs R_ort (batch {max(1, round(g['batch_mean_batch']))}) | "
        f"{g['batch_images_per_s']:.0f} / {g['R_ort_batch']:.0f} = {g['batch_vs_ort']:.2f} | "
        f"≥ {g['batch_vs_ort_goal']:.2f} | {verdict(g['batch_pass'])} |",
        "",
    ]
    return "\n".join(lines)


def row(lv: dict[str, Any]) -> str:
    lat = lv["latency_ms"]
    hist = ", ".join(f"≤{le.removesuffix('.0')}: {n}" for le, n in lv.get("batch_hist", {}).items())
    return (
        f"| {lv['concurrency']} | {lv['rps']:.0f} | {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | "
        f"{lv.get('mean_batch', 0):.1f} | {hist} | {lv['server_cpu_ms_per_request']:.3f} | "
        f"{lv['server_cpu_cores']:.2f} | {lv.get('inference_busy', 0):.2f} | {lv['wrk_cpu_cores']:.2f} | "
        f"{sum(lv['errors'].values())} |"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _load.wrk_path()
    result = run_photos_only(args) if args.photos_only else run(args)
    md = photos_only_md(result) if args.photos_only else report_md(result)
    print()
    print(md)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M")
        stem = f"service_{stamp}{'_' + args.tag if args.tag else ''}"
        (args.out / f"{stem}.md").write_text(md)
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.out / stem}.md and .json")
    g = result.get("goals", {})
    met = all(g[k] for k in ("rps_pass", "tail_pass", "c1_pass", "batch_pass") if k in g)
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
