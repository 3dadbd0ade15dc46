"""What a model costs in onnxruntime (CPU), against another exported model on the same inputs and machine.

Each model's session (its own intra-op threads, as the service runs it) is timed at each batch size on the
same random inputs of its declared shape, the models' runs interleaved round by round so that drift on a
shared machine falls on both alike; the table gives the median milliseconds per run and each model's ratio
to the first. For a change that adds nodes (e.g. ``stn_number``'s refining transformers), the ratio is
what a deployment pays.

    git show 8f63682:service/model_repository/stn_number/1/model.onnx > /tmp/number_e.onnx
    python -m bench.onnx_latency /tmp/number_e.onnx service/model_repository/stn_number/1/model.onnx
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench import _load

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx", type=Path, nargs="+", help="models; the first is the reference")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    sessions = [session(m, args.threads) for m in args.onnx]
    shapes = [s.get_inputs()[0].shape[1:] for s in sessions]
    if any(list(s) != list(shapes[0]) for s in shapes):
        p.error(f"the models take different inputs: {shapes}")
    rng = np.random.default_rng(0)
    times: dict[int, list[list[float]]] = {}
    for b in args.batch:
        x = rng.random((b, *shapes[0]), dtype=np.float32)
        feeds = [{s.get_inputs()[0].name: x} for s in sessions]
        for s, f in zip(sessions, feeds, strict=True):  # warm-up
            s.run(None, f)
        times[b] = [[] for _ in sessions]
        for _ in range(args.rounds):
            for i, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
                t0 = time.perf_counter()
                s.run(None, f)
                times[b][i].append(time.perf_counter() - t0)
    lines = ["# Inference cost in onnxruntime (CPU)", "", f"Command: `{_load.command_line()}`", "",
             f"Machine: {cpu_name()}, {args.threads} intra-op threads, onnxruntime "
             f"{ort.__version__}; median of {args.rounds} interleaved runs per model and batch, random inputs of "
             f"shape {list(shapes[0])}.", "", "| model | " + " | ".join(f"batch {b}: ms (ratio)" for b in args.batch)
             + " |", "|---|" + "---|" * len(args.batch)]
    result: dict[str, object] = {"command": _load.command_line(), "threads": args.threads, "rounds": args.rounds,
                                 "machine": f"{cpu_name()}, {platform.platform()}",
                                 "models": [str(m) for m in args.onnx], "ms": {}}
    for i, m in enumerate(args.onnx):
        cells = []
        for b in args.batch:
            med = 1e3 * float(np.median(times[b][i]))
            ref = 1e3 * float(np.median(times[b][0]))
            cells.append(f"{med:.2f} ({med / ref:.2f})")
            result["ms"].setdefault(str(m), {})[b] = med  # type: ignore[union-attr]
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.no_write:
        print(f"wrote {_load.write_results(RESULTS, 'onnx_latency', md, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
