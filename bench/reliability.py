"""Reliability benchmark: soak, overload and the hostile-input suite, against a real ``stn-serve`` process.

Three parts, each against its own ``stn-serve`` (a separate process on a free loopback port, the bundled
repository, the default settings but ``--provider cpu``), driven by a load generator in this process (asyncio
over raw loopback sockets, HTTP/1.1 keep-alive, pre-built requests; every answer is read and classified):

1. ``soak``: a closed loop of ``--concurrency`` clients sending ``--requests`` requests (tens of thousands), a
   mix of routes (v1 predict of real digit PNGs, batch, rectify, v2 binary infer, and a share of bad requests
   that must get their 4xx). Resident memory (``VmRSS`` from ``/proc/<pid>/status``) is sampled every second;
   growth is measured from the end of a warm-up to the end of the run and must stay under 5 %. Every request
   must get an answer; no 5xx.
2. ``overload``: the capacity C (req/s of a closed loop at concurrency 64) is measured first; then an OPEN loop
   (arrivals on a clock, each on an idle keep-alive connection or a new one) offers 0.5 C, then
   each of ``--factors`` x C for ``--overload-s`` seconds, then 0.5 C again. Per second: offered, answered 200 / 503 /
   other, the 503s' ``Retry-After``, latency percentiles of the 200s, RSS, the server's in-flight gauge.
   Reported: goodput under overload, RSS during and after, recovery time (from the drop back to 0.5 C until
   the first whole second without a 503 whose p99 is back within 2x the baseline's), and requests lost =
   sent - (200 + 503 + other 4xx answers), which must be 0.
3. ``suite``: ``pytest tests/reliability`` (schemathesis, hypothesis, named hostile cases, faults, security),
   whose tally of cases tried and 5xx seen is copied into the results.

    python -m bench.reliability                         # all three, writes bench/results/reliability_<date>.md/json
    python -m bench.reliability soak --requests 2000    # one part, a quick look
    python -m bench.reliability overload --factors 2,4 --overload-s 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._load import proc_cpu_s
from bench._reliability_load import (
    Kind,
    Outcome,
    Sampler,
    closed_loop,
    digit_pngs,
    fetch,
    gauge,
    open_loop,
    percentiles,
    proc_counts,
    request_mix,
    rss_kib,
    start_server,
    status_counts,
    tally,
)
from service.settings import Settings
from tests.utils.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

DEFAULTS = Settings()
SOAK_GROWTH_LIMIT = 0.05

# ---- soak -------------------------------------------------------------------------------------------------


async def _soak(
    server: ServerProcess, kinds: list[Kind], requests: int, concurrency: int, warmup: int
) -> dict[str, Any]:
    await closed_loop(server.port, kinds, concurrency, total=warmup, seed=1)
    await asyncio.sleep(1.0)
    start = {"rss_kib": rss_kib(server.pid), **proc_counts(server.pid)}
    sampler = Sampler(server.pid, server.port, every_s=2.0)
    stop = asyncio.Event()
    t0 = time.monotonic()
    sampling = asyncio.create_task(sampler.run(t0, stop))
    cpu0, gen0 = proc_cpu_s(server.pid), time.process_time()
    outcomes, wall = await closed_loop(server.port, kinds, concurrency, total=requests, seed=2)
    cpu1, gen1 = proc_cpu_s(server.pid), time.process_time()
    stop.set()
    await sampling
    await asyncio.sleep(1.0)
    end = {"rss_kib": rss_kib(server.pid), **proc_counts(server.pid)}
    _, _, body = fetch(server.port, "GET", "/metrics")
    metrics = body.decode()
    ok = [o.latency for o in outcomes if o.status == 200]
    rss = [s["rss_kib"] for s in sampler.samples]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "warmup_requests": warmup,
        "wall_s": round(wall, 1),
        "req_per_s": round(len(outcomes) / wall, 1),
        "server_cpu_s": round(cpu1 - cpu0, 1),
        "load_generator_cpu_s": round(gen1 - gen0, 1),
        "latency_ms_200": percentiles(ok),
        "tally": tally(outcomes, kinds),
        "start": start,
        "end": end,
        "rss_max_kib": max(rss) if rss else None,
        "rss_growth": (end["rss_kib"] - start["rss_kib"]) / start["rss_kib"],
        "server_status_counts": dict(status_counts(metrics)),
        "in_flight_after": gauge(metrics, "stn_requests_in_flight"),
        "queue_depth_after": gauge(metrics, "stn_queue_depth"),
        "samples": sampler.samples,
    }


# ---- overload ---------------------------------------------------------------------------------------------


def windows(outcomes: list[Outcome], width: float = 1.0) -> list[dict[str, Any]]:
    """Per ``width`` seconds of arrival time: offered, 200 / 503 / other answers, lost, latency of the 200s."""
    if not outcomes:
        return []
    end = max(o.scheduled for o in outcomes)
    rows = []
    for i in range(int(end / width) + 1):
        lo, hi = i * width, (i + 1) * width
        w = [o for o in outcomes if lo <= o.scheduled < hi]
        ok = [o.latency for o in w if o.status == 200]
        rows.append(
            {
                "t": lo,
                "offered": len(w),
                "ok": len(ok),
                "shed": sum(1 for o in w if o.status == 503),
                "other": sum(1 for o in w if o.status not in (0, 200, 503)),
                "lost": sum(1 for o in w if o.status == 0),
                **{f"{k}_ms": round(v, 1) for k, v in percentiles(ok).items()},
            }
        )
    return rows


async def _overload(
    server: ServerProcess, kinds: list[Kind], factor: float, overload_s: float, max_connections: int
) -> dict[str, Any]:
    # Capacity: what a closed loop of 64 gets, 200s per second.
    await closed_loop(server.port, kinds, 64, seconds=3, seed=3)
    outcomes, wall = await closed_loop(server.port, kinds, 64, seconds=10, seed=4)
    capacity = sum(1 for o in outcomes if o.status == 200) / wall
    base_rate = 0.5 * capacity
    phases = [("baseline", base_rate, 10.0), ("overload", factor * capacity, overload_s), ("recovery", base_rate, 15.0)]
    await asyncio.sleep(2.0)
    sampler = Sampler(server.pid, server.port, every_s=1.0)
    stop = asyncio.Event()
    t0 = time.monotonic()
    sampling = asyncio.create_task(sampler.run(t0, stop))
    cpu0, gen0 = proc_cpu_s(server.pid), time.process_time()
    outcomes, spans, not_sent = await open_loop(server.port, kinds, phases, max_connections=max_connections, seed=5)
    cpu1, gen1 = proc_cpu_s(server.pid), time.process_time()
    await asyncio.sleep(2.0)
    stop.set()
    await sampling
    rows = windows(outcomes)

    def in_phase(name: str) -> list[Outcome]:
        lo, hi = spans[name]
        return [o for o in outcomes if lo <= o.scheduled < hi]

    per_phase = {}
    for name, rate, seconds in phases:
        os_ = in_phase(name)
        ok = [o.latency for o in os_ if o.status == 200]
        per_phase[name] = {
            "offered_rps": round(rate, 1),
            "seconds": seconds,
            "goodput_rps": round(len(ok) / seconds, 1),
            "latency_ms_200": percentiles(ok),
            "tally": tally(os_, kinds),
        }
    base_p99 = per_phase["baseline"]["latency_ms_200"]["p99"]
    recovery_start = spans["recovery"][0]
    recovered_at = None
    for r in rows:
        if r["t"] < recovery_start or r["offered"] == 0:
            continue
        if r["shed"] == 0 and r["lost"] == 0 and r["p99_ms"] <= max(2 * base_p99, base_p99 + 20):
            recovered_at = r["t"]
            break

    def rss_in(lo: float, hi: float) -> list[int]:
        return [s["rss_kib"] for s in sampler.samples if lo <= s["t"] < hi]

    ov_lo, ov_hi = spans["overload"]
    return {
        "capacity_rps": round(capacity, 1),
        "factor": factor,
        "max_connections": max_connections,
        "phases": per_phase,
        "not_sent_client_cap": not_sent,
        "server_cpu_s": round(cpu1 - cpu0, 1),
        "load_generator_cpu_s": round(gen1 - gen0, 1),
        "recovery_s": None if recovered_at is None else round(recovered_at - recovery_start + 1.0, 1),
        "rss_kib": {
            "baseline_max": max(rss_in(*spans["baseline"]), default=None),
            "overload_first_half_max": max(rss_in(ov_lo, (ov_lo + ov_hi) / 2), default=None),
            "overload_max": max(rss_in(ov_lo, ov_hi), default=None),
            "recovery_end": sampler.samples[-1]["rss_kib"] if sampler.samples else None,
        },
        "in_flight_max": max((s["in_flight"] or 0 for s in sampler.samples), default=None),
        "tally": tally(outcomes, kinds),
        "windows": rows,
        "samples": sampler.samples,
    }


# ---- the CI suite -----------------------------------------------------------------------------------------


def run_suite() -> dict[str, Any]:
    t0 = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/reliability"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    out = proc.stdout + proc.stderr
    section = out.split("reliability: hostile cases tried", 1)[-1]
    kinds = {}
    for m in re.finditer(r"^(\S.*?)\s{2,}(\d+)$", section, re.M):
        kinds[m.group(1).strip()] = int(m.group(2))
    summary = next((ln for ln in reversed(out.splitlines()) if " passed" in ln or " failed" in ln), "")
    return {
        "command": "OMP_NUM_THREADS=1 " + " ".join(cmd[2:]).replace("pytest", "pytest", 1),
        "returncode": proc.returncode,
        "summary": summary.strip("= "),
        "seconds": round(time.monotonic() - t0, 1),
        "cases": kinds,
    }


# ---- report -----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import onnxruntime

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "loadavg_at_start": os.getloadavg(),
        "busy_processes_at_start": cpu_busy_processes(),
    }


def cpu_busy_processes(min_cpu: float = 10.0) -> list[str]:
    """Other processes using the CPU (``ps``): what shares the cores with the measurement."""
    out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    mine = {os.getpid(), os.getppid()}
    rows = []
    for line in out.splitlines()[1:]:
        pid, cpu, args = line.strip().split(None, 2)
        if float(cpu) >= min_cpu and int(pid) not in mine:
            rows.append(f"{cpu}% {args[:100]}")
    return rows


def mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Reliability: {r['date']}", ""]
    m = r["machine"]
    lines += [
        f"Machine: {m['cores']} cores, Python {m['python']}, onnxruntime {m['onnxruntime']}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}. Server: `{' '.join(r['server_args'])}`, uvicorn "
        f"with {r['http_parser']} "
        f"(the default settings otherwise: {DEFAULTS.max_concurrent_requests} requests in flight, "
        f"{DEFAULTS.max_queue_size} queued per model, batches of {DEFAULTS.max_batch_size}, "
        f"{DEFAULTS.max_queue_delay_us} µs delay). "
        "Other processes busy at the start: "
        + ("; ".join(f"`{p}`" for p in m["busy_processes_at_start"]) or "none")
        + (
            "; during the runs: " + "; ".join(f"`{p}`" for p in r["busy_processes_during"])
            if r.get("busy_processes_during")
            else ""
        )
        + ".",
        "",
        "| what | tried | 5xx seen | load held | memory growth | requests lost | held? |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    verdicts = []
    if "suite" in r:
        s = r["suite"]
        c = s["cases"]
        fuzz = sum(v for k, v in c.items() if k not in ("total",) and not k.startswith("5xx"))
        held = s["returncode"] == 0 and c.get("5xx answers seen (503 shedding aside)", 1) == 0
        verdicts.append(held)
        lines.append(
            f"| hostile input, faults, security (CI suite: {s['summary']}) | {c.get('total', fuzz)} cases "
            f"(schemathesis {c.get('schemathesis (OpenAPI)', 0) + c.get('schemathesis (OpenAPI), served model', 0)}, "
            f"hypothesis {sum(v for k, v in c.items() if k.startswith('hypothesis'))}) | "
            f"{c.get('5xx answers seen (503 shedding aside)', '?')} | - | - | 0 (SIGTERM, disconnects) | "
            f"{'yes' if held else 'NO'} |"
        )
    for o in r.get("overload", []):
        ov = o["phases"]["overload"]
        t = o["tally"]
        rss = o["rss_kib"]
        growth = (rss["overload_max"] - rss["baseline_max"]) / rss["baseline_max"] if rss["baseline_max"] else 0.0
        held = (
            t["server_errors_5xx"] == 0
            and t["lost"] == 0
            and t["shed_503_without_retry_after"] == 0
            and o["recovery_s"] is not None
        )
        verdicts.append(held)
        lines.append(
            f"| overload: {o['factor']:g}x capacity ({ov['offered_rps']:.0f} req/s offered for {ov['seconds']:.0f} s, "
            f"capacity {o['capacity_rps']:.0f} req/s) | {t['sent']} requests | {t['server_errors_5xx']} | "
            f"{ov['goodput_rps']:.0f} req/s served ({ov['goodput_rps'] / o['capacity_rps']:.0%} of capacity), "
            f"{ov['tally']['shed_503']} shed with 503 + Retry-After; recovered in {o['recovery_s']} s | "
            f"{growth:+.1%} (peak {mib(rss['overload_max'])}) | {t['lost']} | {'yes' if held else 'NO'} |"
        )
    if "soak" in r:
        s = r["soak"]
        t = s["tally"]
        held = (
            t["server_errors_5xx"] == 0
            and t["lost"] == 0
            and not t["wrong_status"]
            and s["rss_growth"] < SOAK_GROWTH_LIMIT
        )
        verdicts.append(held)
        lines.append(
            f"| soak: {s['requests']} requests at concurrency {s['concurrency']} ({s['wall_s']:.0f} s) | {t['sent']} | "
            f"{t['server_errors_5xx']} | {s['req_per_s']:.0f} req/s, p99 {s['latency_ms_200']['p99']:.1f} ms | "
            f"{s['rss_growth']:+.2%} ({mib(s['start']['rss_kib'])} -> {mib(s['end']['rss_kib'])}; limit 5%) | "
            f"{t['lost']} | "
            f"{'yes' if held else 'NO'} |"
        )
    lines += ["", f"Everything held: {'yes' if verdicts and all(verdicts) else 'NO'}.", ""]
    if "suite" in r:
        s = r["suite"]
        lines += [
            "## Hostile input, faults and security (CI suite)",
            "",
            f"`{s['command']}`: {s['summary']} ({s['seconds']} s).",
            "",
        ]
        lines += ["| cases | count |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in s["cases"].items()]
        lines.append("")
    for o in r.get("overload", []):
        lines += [
            f"## Overload: {o['factor']:g}x capacity",
            "",
            f"Capacity C = {o['capacity_rps']:.0f} req/s (200s per second, closed loop of 64 for 10 s, the request mix "
            f"below). Then an open loop: 0.5 C for 10 s, {o['factor']:g} C for "
            f"{o['phases']['overload']['seconds']:.0f} s, "
            f"0.5 C for 15 s (arrivals on a clock; up to {o['max_connections']} connections; "
            f"{o['not_sent_client_cap']} arrivals found none free).",
            "",
            "| phase | offered req/s | served 200/s | 503 (with Retry-After) | other 4xx | lost | p50 ms | p99 ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, p in o["phases"].items():
            t = p["tally"]
            other = sum(v for k, v in t["by_status"].items() if k not in ("0", "200", "503"))
            lines.append(
                f"| {name} | {p['offered_rps']:.0f} | {p['goodput_rps']:.0f} | {t['shed_503']} "
                f"({t['shed_503'] - t['shed_503_without_retry_after']} with) | {other} | {t['lost']} | "
                f"{p['latency_ms_200']['p50']:.1f} | {p['latency_ms_200']['p99']:.1f} |"
            )
        rss = o["rss_kib"]
        lines += [
            "",
            f"Resident memory: baseline peak {mib(rss['baseline_max'])}, first half of the overload "
            f"{mib(rss['overload_first_half_max'])}, whole overload {mib(rss['overload_max'])}, after recovery "
            f"{mib(rss['recovery_end'])}; the server's in-flight gauge peaked at {o['in_flight_max']:.0f}. "
            f"Recovery: {o['recovery_s']} s from the drop to the first "
            "whole second without a 503 whose p99 is within 2x the baseline's. CPU over the open loop: server "
            f"{o['server_cpu_s']} s, load generator {o['load_generator_cpu_s']} s (same cores).",
            "",
            "Per second (arrival time):",
            "",
            "| t s | offered | 200 | 503 | other | lost | p50 ms | p99 ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {w['t']:.0f} | {w['offered']} | {w['ok']} | {w['shed']} | {w['other']} | {w['lost']} | "
            f"{w['p50_ms']} | {w['p99_ms']} |"
            for w in o["windows"]
        ]
        lines.append("")
    if "soak" in r:
        s = r["soak"]
        t = s["tally"]
        lines += [
            "## Soak",
            "",
            f"{s['requests']} requests (after {s['warmup_requests']} of warm-up) by {s['concurrency']} closed-loop "
            "clients in "
            f"{s['wall_s']} s ({s['req_per_s']} req/s; CPU: server {s['server_cpu_s']} s, load generator "
            f"{s['load_generator_cpu_s']} s). Answers by status: "
            f"{t['by_status']}; by kind: {t['by_kind']}; wrong statuses: {t['wrong_status'] or 'none'}; errors: "
            f"{t['errors'] or 'none'}.",
            "",
            "| | RSS | open fds | threads |",
            "| --- | --- | --- | --- |",
            f"| start (after warm-up) | {mib(s['start']['rss_kib'])} | {s['start']['fds']} | {s['start']['threads']} |",
            f"| end | {mib(s['end']['rss_kib'])} | {s['end']['fds']} | {s['end']['threads']} |",
            f"| peak during | {mib(s['rss_max_kib'])} | | |",
            "",
            f"RSS growth {s['rss_growth']:+.2%} (limit 5%); in flight after: {s['in_flight_after']}, queue after: "
            f"{s['queue_depth_after']}; the server's own count of answers: {s['server_status_counts']}.",
            "",
            "RSS over the run (every 2 s): " + " ".join(f"{x['rss_kib'] / 1024:.1f}" for x in s["samples"]) + " MiB.",
            "",
        ]
    lines += ["## Commands", "", "```sh", *r["commands"], "```", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", nargs="?", default="all", choices=["all", "soak", "overload", "suite"])
    p.add_argument("--requests", type=int, default=60_000, help="soak: requests after the warm-up")
    p.add_argument("--concurrency", type=int, default=16, help="soak: closed-loop clients")
    p.add_argument("--warmup", type=int, default=3_000, help="soak: warm-up requests before RSS is taken")
    p.add_argument(
        "--factors", default="2,4", help="overload: offered loads, times the capacity (one run each, comma-separated)"
    )
    p.add_argument("--overload-s", type=float, default=30.0, help="overload: seconds at the high rate")
    p.add_argument("--max-connections", type=int, default=2000, help="overload: the open loop's connection cap")
    p.add_argument("--repository", type=Path, default=ROOT / "service" / "model_repository")
    p.add_argument("--model", default="stn_rts")
    p.add_argument(
        "--server-pythonpath",
        default="",
        help="PYTHONPATH of the server process (e.g. a folder with httptools, which uvicorn then uses over h11)",
    )
    p.add_argument("--server-args", default="", help="more stn-serve flags, e.g. '--max-concurrent-requests 128'")
    p.add_argument("--tag", default="", help="suffix of the results file name (reliability_<date><tag>.md)")
    p.add_argument("--no-write", action="store_true", help="print, write no results file")
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the open loop and the server need sockets
    server_args = ["--model-repository", str(args.repository), "--default-model", args.model, "--provider", "cpu"]
    server_args += args.server_args.split()
    probe = subprocess.run(
        [sys.executable, "-c", "import httptools"],
        env={**os.environ, "PYTHONPATH": args.server_pythonpath} if args.server_pythonpath else None,
        capture_output=True,
    )
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "http_parser": "httptools" if probe.returncode == 0 else "h11",
        "server_args": ["stn-serve", *[a.replace(f"{ROOT}/", "") for a in server_args]],
        "commands": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="stn-reliability-"))
    try:
        kinds = request_mix(digit_pngs(64, workdir), args.model)
        if args.part in ("all", "suite"):
            print("suite: pytest tests/reliability ...", flush=True)
            result["suite"] = run_suite()
            result["commands"].append(result["suite"]["command"])
            print(json.dumps(result["suite"], indent=1))
            result["busy_processes_during"] = sorted(
                {*result.get("busy_processes_during", []), *(p.split("% ", 1)[1] for p in cpu_busy_processes())}
            )
        if args.part in ("all", "overload"):
            result["overload"] = []
            for factor in [float(f) for f in args.factors.split(",") if f.strip()]:
                print(f"overload: {factor:g}x capacity for {args.overload_s} s ...", flush=True)
                log = workdir / f"overload-{factor:g}.log"
                server = start_server(server_args, log, args.server_pythonpath)
                try:
                    o = asyncio.run(_overload(server, kinds, factor, args.overload_s, args.max_connections))
                finally:
                    code = server.stop()
                o["exit"] = code
                o["log_tracebacks"] = log.read_text(errors="replace").count("Traceback")
                result["overload"].append(o)
                result["busy_processes_during"] = sorted(
                    {*result.get("busy_processes_during", []), *(p.split("% ", 1)[1] for p in cpu_busy_processes())}
                )
                print(json.dumps({k: v for k, v in o.items() if k not in ("windows", "samples")}, indent=1))
            result["commands"].append(
                f"python -m bench.reliability overload --factors {args.factors} --overload-s {args.overload_s:g} "
                f"--max-connections {args.max_connections}"
            )
        if args.part in ("all", "soak"):
            print(f"soak: {args.requests} requests at concurrency {args.concurrency} ...", flush=True)
            server = start_server(server_args, workdir / "soak.log", args.server_pythonpath)
            try:
                result["soak"] = asyncio.run(_soak(server, kinds, args.requests, args.concurrency, args.warmup))
            finally:
                code = server.stop()
            result["soak"]["exit"] = code
            result["soak"]["log_tracebacks"] = (workdir / "soak.log").read_text(errors="replace").count("Traceback")
            result["commands"].append(
                f"python -m bench.reliability soak --requests {args.requests} --concurrency {args.concurrency}"
            )
            s = result["soak"]
            result["busy_processes_during"] = sorted(
                {*result.get("busy_processes_during", []), *(p.split("% ", 1)[1] for p in cpu_busy_processes())}
            )
            print(json.dumps({k: v for k, v in s.items() if k != "samples"}, indent=1))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.part == "all":
        result["commands"] = ["python -m bench.reliability   # all three parts, as below"] + result["commands"]
    text = markdown(result)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = RESULTS / f"reliability_{time.strftime('%Y-%m-%d', time.gmtime())}{args.tag}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
