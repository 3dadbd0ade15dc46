"""A/B benchmark: this tree's ``stn-serve`` against another commit's, in one run, on the same payload.

The other commit is checked out in a temporary git worktree and served from there (``python -m service.cli``
with that tree first on ``PYTHONPATH``; the same interpreter, the same model repository). The two servers
never run at once: each level (``/v1/predict``, one PNG digit per request, ``wrk`` closed loop at each
concurrency) is measured on A, then B, then A, then B... (``--rounds``), each with its own warm-up, so
that drift of this shared machine falls on both alike. Reported per variant and level: req/s (the mean
over rounds and each round's), latency p50 and p99 (wrk's, the median over rounds), and B/A.

Goals of issue #13 (the route restructure): req/s at concurrency 64 within 5 % of the old code's, and
p99 <= 3 x p50 there.

    python -m bench.ab_service --ref 854b081              # writes bench/results/ab_service_<date>.md/json
    python -m bench.ab_service --ref HEAD~1 --duration 3 --rounds 1 --no-write    # a quick look
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import _load
from bench.bench_service import background_load, machine_info, make_payload
from tests.utils.server import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True, help="the commit to compare against (A); B is this tree")
    p.add_argument("--model", default="stn_rts", help="the model posted to (the servers' default model)")
    p.add_argument("--model-repository", type=Path, default=ROOT / "service" / "model_repository")
    p.add_argument("--concurrency", default="1,64", help="comma-separated wrk connection counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per level and round")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load before each")
    p.add_argument("--rounds", type=int, default=3, help="A, B alternations per level")
    p.add_argument("--images", type=int, default=64, help="distinct digits in the payload")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p.parse_args(argv)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def start(tree: Path, args: argparse.Namespace, scratch: Path, name: str) -> tuple[ServerProcess, str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "STN_MODEL_REPOSITORY": str(args.model_repository),
        "STN_DEFAULT_MODEL": args.model,
        "STN_HOST": "127.0.0.1",
        "STN_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }
    # cwd: ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH.
    base = f"http://127.0.0.1:{port}"
    server = ServerProcess([sys.executable, "-m", "service.cli"], scratch / f"{name}.log", env, cwd=tree, url=base)
    server.wait_http()
    return server, base


def measure(base: str, pngs: list[Path], c: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    url = base + "/v1/predict"
    _load.run_wrk(url, pngs, "image/png", c, args.warmup, 1, scratch)
    time.sleep(0.5)
    r = _load.run_wrk(url, pngs, "image/png", c, args.duration, 1, scratch)
    bad = sum(r.errors.values())
    if bad:
        raise RuntimeError(f"{url}: {bad} failed requests at -c{c}: {r.errors}")
    return {"rps": r.rps, "p50_ms": r.latency_us["p50"] / 1000, "p99_ms": r.latency_us["p99"] / 1000,
            "requests": r.requests, "wrk_command": shlex.join(r.command)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from service.repository import scan_repository

    scratch = Path(tempfile.mkdtemp(prefix="stn-ab-"))
    sha_a = git("rev-parse", args.ref)
    sha_b = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--", "service"))
    tree_a = scratch / "a"
    git("worktree", "add", "--detach", str(tree_a), sha_a)
    try:
        from service.runtime import ModelRuntime

        rt = ModelRuntime(scan_repository(args.model_repository)[args.model], "cpu")
        rt.load()
        payload = make_payload(rt.spec, args.images, scratch, 1)
        started = datetime.now(timezone.utc)
        background = background_load(2.0)
        levels = [int(c) for c in args.concurrency.split(",")]
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {"A": {c: [] for c in levels}, "B": {c: [] for c in levels}}
        for c in levels:
            for rnd in range(args.rounds):
                for variant, tree in (("A", tree_a), ("B", ROOT)):
                    server, base = start(tree, args, scratch, f"{variant}-{c}-{rnd}")
                    try:
                        m = measure(base, payload["pngs"], c, args, scratch)
                    finally:
                        server.stop()
                    runs[variant][c].append(m)
                    print(f"  {variant} -c{c:<3d} round {rnd + 1}: {m['rps']:7.1f} req/s  p50 {m['p50_ms']:6.2f} ms"
                          f"  p99 {m['p99_ms']:6.2f} ms", flush=True)
        background_after = background_load(2.0)
    finally:
        git("worktree", "remove", "--force", str(tree_a))
    summary = {}
    for c in levels:
        row = {}
        for v in ("A", "B"):
            rs = runs[v][c]
            row[v] = {"rps": statistics.fmean(r["rps"] for r in rs), "rps_rounds": [r["rps"] for r in rs],
                      "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                      "p99_ms": statistics.median(r["p99_ms"] for r in rs)}
        row["ratio"] = row["B"]["rps"] / row["A"]["rps"]
        summary[c] = row
    hi = max(levels)
    goals = {"rps_within_5pct": summary[hi]["ratio"] >= 0.95,
             "p99_le_3p50": summary[hi]["B"]["p99_ms"] <= 3 * summary[hi]["B"]["p50_ms"]}
    return {"started": started.isoformat(timespec="seconds"), "command": _load.command_line(),
            "machine": machine_info(), "A": {"ref": args.ref, "sha": sha_a}, "B": {"sha": sha_b, "dirty": dirty},
            "model": args.model, "background_before": background, "background_after": background_after,
            "duration_s": args.duration, "rounds": args.rounds, "summary": summary, "runs": runs, "goals": goals}


def report_md(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"# A/B service benchmark, {r['started']}",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('platform', '')}. Background CPU before / after: "
        f"{100 * r['background_before']['cpu_busy_before']:.0f} % / "
        f"{100 * r['background_after']['cpu_busy_before']:.0f} %.",
        "",
        f"A: `{r['A']['ref']}` ({r['A']['sha'][:10]}); B: this tree ({r['B']['sha'][:10]}"
        f"{', with uncommitted changes to service/' if r['B']['dirty'] else ''}). Model `{r['model']}`, "
        f"`POST /v1/predict` one PNG digit per request, wrk closed loop; {r['rounds']} rounds of "
        f"{r['duration_s']:g} s per variant and level, A and B alternating, each on a fresh server.",
        "",
        "| concurrency | A req/s | B req/s | B / A | A p50 / p99 ms | B p50 / p99 ms | A rounds | B rounds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c, row in r["summary"].items():
        a, b = row["A"], row["B"]
        lines.append(
            f"| {c} | {a['rps']:.1f} | {b['rps']:.1f} | {row['ratio']:.3f} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} "
            f"| {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | {', '.join(f'{x:.0f}' for x in a['rps_rounds'])} "
            f"| {', '.join(f'{x:.0f}' for x in b['rps_rounds'])} |"
        )
    g = r["goals"]
    hi = max(r["summary"])
    lines += ["", f"Goals at concurrency {hi}: B req/s within 5 % of A's: "
              f"{'met' if g['rps_within_5pct'] else 'NOT met'}; B p99 <= 3 x p50: "
              f"{'met' if g['p99_le_3p50'] else 'NOT met'}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    md = report_md(result)
    print(md)
    if not args.no_write:
        print(f"wrote {_load.write_results(RESULTS, 'ab_service', md, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
