"""Load generation and server-side accounting for ``bench_service.py``.

- ``wrk``: Debian's wrk (a separate C process, epoll) posting pre-built request bodies in turn, through a Lua
  script whose ``done()`` prints one JSON line of counts and latency percentiles (microseconds).
- ``proc_cpu_s``: user + system CPU seconds of a process and all its descendants, from ``/proc``.
- ``scrape``: the service's Prometheus histograms (batch size, inference time, queue wait);
  ``scrape_samples``: every sample of one scrape (the stage CPU counters); both through
  ``tests.utils.metrics`` (prometheus_client's parser).
(Server processes: ``tests.utils.server``.)
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.utils import metrics

# One request per call of request(), cycling over the bodies given as script arguments. done() runs once,
# after the run, in the main thread: it prints the totals and wrk's latency percentiles as one JSON line.
LUA = r"""
local reqs = {}
local i = 0

function init(args)
  local ctype, path = args[1], args[2]
  for k = 3, #args do
    local f = assert(io.open(args[k], "rb"))
    local body = f:read("*a")
    f:close()
    reqs[#reqs + 1] = wrk.format("POST", path, {["Content-Type"] = ctype}, body)
  end
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "mean_us": %.1f, "stdev_us": %.1f, "max_us": %d, "p50_us": %d, ' ..
    '"p90_us": %d, "p95_us": %d, "p99_us": %d, "p999_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency:percentile(99.9)))
end
"""

CLK_TCK = os.sysconf("SC_CLK_TCK")


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk not found: install Debian's wrk (apt-get install -y wrk)")
    return path


def wrk_version() -> str:
    out = subprocess.run([wrk_path(), "-v"], capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "wrk"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]  # socket errors and non-2xx/3xx answers
    latency_us: dict[str, float]  # mean, stdev, max, p50, p90, p95, p99, p999
    wrk_cpu_s: float  # the load generator's own CPU time
    command: list[str]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> int:
        return self.requests - self.errors["status"]


def run_wrk(
    url: str,
    bodies: list[Path],
    content_type: str,
    connections: int,
    seconds: float,
    threads: int,
    script_dir: Path,
) -> WrkResult:
    """``connections`` closed-loop connections for ``seconds``; each sends the next body when answered."""
    script = script_dir / "post.lua"
    if not script.exists():
        script.write_text(LUA)
    path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
    cmd = [
        wrk_path(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "60s",
        "-s",
        str(script),
        url,
        "--",
        content_type,
        path,
        *map(str, bodies),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    d = json.loads(line[len("WRKJSON ") :])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    errors = {k: int(d[k]) for k in ("connect", "read", "write", "status", "timeout")}
    lat = {k[:-3]: float(d[k]) for k in d if k.endswith("_us")}
    return WrkResult(int(d["requests"]), d["duration_us"] / 1e6, errors, lat, cpu, cmd)


# ---- /proc accounting --------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return kids


def proc_cpu_s(pid: int) -> float:
    """utime + stime (seconds) of ``pid`` and every live descendant (uvicorn workers)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)
        todo += _children(p)
    return total


def system_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs busy (any process) over ``seconds``, from /proc/stat: background load."""

    def snap() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + vals[4]  # idle + iowait
        return sum(vals[:8]) - idle, sum(vals[:8])

    b0, t0 = snap()
    time.sleep(seconds)
    b1, t1 = snap()
    return (b1 - b0) / max(1, t1 - t0)


def processes_named(pattern: str) -> list[str]:
    """Command lines of running processes that contain ``pattern`` (e.g. ``stn-train``), this one excluded."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if pattern in cmd:
            found.append(f"{pid} {cmd}")
    return found


# ---- Prometheus --------------------------------------------------------------------------------------

HISTOGRAMS = ("stn_batch_size", "stn_inference_seconds", "stn_queue_wait_seconds")


def _scrape_once(base_url: str, model: str) -> dict[str, Any]:
    text = metrics.fetch(base_url)
    return {w: metrics.histogram(text, w, model=model) for w in HISTOGRAMS}


def scrape_samples(base_url: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of one ``/metrics`` scrape, as (name, labels, value)."""
    return metrics.samples(metrics.fetch(base_url))


def scrape(base_url: str, model: str, workers: int = 1) -> dict[str, Any]:
    """The model's batch-size, inference-time and queue-wait histograms: ``{metric: {"sum", "count",
    "buckets": {le: cumulative count}}}``, summed over the server's worker processes.

    Each uvicorn worker keeps its own registry and a scrape reaches one of them, so with several workers
    the endpoint is scraped (new connection each time) until as many distinct snapshots as workers are
    seen; at rest, one worker's snapshot does not change between scrapes. Two workers with identical
    histograms (both untouched) cannot be told apart: the one snapshot then stands for all of them.
    """
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(1 if workers == 1 else 50 * workers):
        snap = _scrape_once(base_url, model)
        seen.setdefault(json.dumps(snap, sort_keys=True), snap)
        if len(seen) >= workers:
            break
    snaps = list(seen.values())
    if len(snaps) == 1 and workers > 1:
        snaps = snaps * workers
    total: dict[str, Any] = {w: {"sum": 0.0, "count": 0.0, "buckets": {}} for w in HISTOGRAMS}
    for snap in snaps:
        for w in HISTOGRAMS:
            total[w]["sum"] += snap[w]["sum"]
            total[w]["count"] += snap[w]["count"]
            for le, v in snap[w]["buckets"].items():
                total[w]["buckets"][le] = total[w]["buckets"].get(le, 0.0) + v
    total["distinct_snapshots"] = len(seen)
    return total


def histogram_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Sum, count and per-bucket (not cumulative) counts observed between two scrapes."""
    delta: dict[str, Any] = {}
    for name in HISTOGRAMS:
        a, b = after[name], before[name]
        cum = {le: a["buckets"][le] - b["buckets"].get(le, 0.0) for le in a["buckets"]}
        les = sorted(cum, key=lambda s: float("inf") if s == "+Inf" else float(s))
        per, prev = {}, 0.0
        for le in les:
            per[le] = int(round(cum[le] - prev))
            prev = cum[le]
        delta[name] = {"sum": a["sum"] - b["sum"], "count": int(round(a["count"] - b["count"])), "buckets": per}
    return delta


# ---- server processes --------------------------------------------------------------------------------


def command_line() -> str:
    """This run's command as it was typed (``python -m bench.<name> ...``), with the environment variables
    that change what it measures."""
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith("STN_") or k == "PYTHONPATH"]
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    head = ["-m", spec.name] if spec is not None else [os.path.relpath(sys.argv[0], Path.cwd())]
    return " ".join([*env, shlex.join([os.path.relpath(sys.executable, Path.cwd()), *head, *sys.argv[1:]])])


def write_results(folder: Path, stem: str, md: str, result: dict[str, Any]) -> Path:
    """``folder/<stem>_<UTC date-time>.md`` and ``.json`` (the table and everything measured); the .md's path.
    Two results in the same minute do not overwrite each other: the second takes ``-2`` (and so on)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = path = folder / f"{stem}_{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M')}"
    k = 1
    while path.with_suffix(".md").exists() or path.with_suffix(".json").exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    path.with_suffix(".md").write_text(md)
    path.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return path.with_suffix(".md")


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="stn-bench-"))
