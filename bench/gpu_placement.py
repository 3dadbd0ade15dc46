"""Placement check and timings on onnxruntime's CUDA execution provider (needs a CUDA GPU; skips elsewhere).

For every model in a Triton-layout model repository (``<repo>/<name>/1/model.onnx``):

1. Placement. A session with ``CUDAExecutionProvider`` first and the CPU as fallback runs one batch with
   onnxruntime's profiler on; every node event in the profile names the provider that ran it. Any node that
   computes a float tensor on ``CPUExecutionProvider`` fails the check. Nodes whose outputs are all int64
   are shape arithmetic, which onnxruntime deliberately keeps on the CPU (cheap, and their consumers read
   shapes from host memory); they are listed separately and do not fail. ``Memcpy*`` nodes (host<->device
   copies inside the graph, a sign of a CPU island) are listed too. The verbose session log
   (``log_severity_level=0``) is captured as a second witness of the node assignment.
2. Timings at batch 1, 64, 256: onnxruntime CUDA (float32 and, where ``<name>_fp16`` exists, float16)
   against PyTorch eager on the same GPU, each from host memory to host memory (what a server does) and,
   with I/O binding / CUDA tensors, device to device. PyTorch needs ``torch`` and the checkpoint: from
   ``--checkpoint NAME=PATH``, else the path in the card's ``export.command`` (e.g. ``runs/.../best.ckpt``);
   without them that column is skipped with a note.
3. FP16 parity against float32 on the GPU (the export measured it on the CPU).

Exit codes: 0 all placed on the GPU (or skipped: no GPU / no CUDA provider, with a message saying so;
``--require-gpu`` turns a skip into exit 3), 1 a float node ran on the CPU, 2 bad arguments / no models.

    python -m bench.gpu_placement --model-repo service/model_repository --out bench/results/gpu_placement
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 64, 256)
EXIT_OK, EXIT_CPU_NODES, EXIT_USAGE, EXIT_NO_GPU = 0, 1, 2, 3
SHAPE_TYPES = ("int64", "int32", "bool")
PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]  # CUDA first, the CPU as fallback


def gpu_name() -> str | None:
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture file descriptor 2 (onnxruntime's C++ logger writes there, not to Python's sys.stderr)."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def cuda_session(ort: Any, path: Path, profile_dir: Path | None = None, verbose: bool = False) -> Any:
    opts = ort.SessionOptions()
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_dir / path.parents[1].name)
    if verbose:
        opts.log_severity_level = 0
        opts.log_verbosity_level = 1
    return ort.InferenceSession(str(path), opts, providers=PROVIDERS)


def input_batch(meta: dict[str, str], n: int, seed: int = 0) -> np.ndarray:
    h, w = (int(v) for v in meta["stn.input_size"].split(","))
    mean, std = float(meta["stn.mean"]), float(meta["stn.std"])
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 1, h, w)).astype(np.float32) / 255.0
    return ((pixels - mean) / std).astype(np.float32)


def placement(ort: Any, path: Path, work: Path) -> dict[str, Any]:
    """Per-node providers from the profiler, plus the verbose log's assignment lines."""
    with captured_stderr() as log_lines:
        sess = cuda_session(ort, path, profile_dir=work, verbose=True)
        meta = sess.get_modelmeta().custom_metadata_map
        sess.run(None, {sess.get_inputs()[0].name: input_batch(meta, 8)})
        profile = json.loads(Path(sess.end_profiling()).read_text())
    nodes: dict[str, dict[str, Any]] = {}
    for ev in profile:
        args = ev.get("args") or {}
        if ev.get("cat") != "Node" or "provider" not in args:
            continue
        name = ev["name"].removesuffix("_kernel_time")
        nodes[name] = {"op": args.get("op_name", "?"), "provider": args["provider"],
                       "output_types": sorted(set(_types(args.get("output_type_shape", []))))}
    cpu_float, cpu_shape, memcpy = [], [], []
    for name, n in nodes.items():
        if n["op"].startswith("Memcpy"):
            memcpy.append(name)
        elif n["provider"] == "CPUExecutionProvider":
            if n["output_types"] and all(any(s in t for s in SHAPE_TYPES) for t in n["output_types"]):
                cpu_shape.append(f"{name} ({n['op']})")
            else:
                cpu_float.append(f"{name} ({n['op']}, outputs {n['output_types']})")
    assignment = [ln for ln in log_lines if "placed on [" in ln or "Node placements" in ln
                  or "All nodes placed" in ln or "CUDA kernel not found" in ln]
    return {"providers": sess.get_providers(), "nodes": len(nodes),
            "by_provider": _count(n["provider"] for n in nodes.values()),
            "cpu_float_nodes": cpu_float, "cpu_shape_nodes": cpu_shape, "memcpy_nodes": memcpy,
            "log": assignment[:40]}


def _types(entries: list[Any]) -> Iterator[str]:
    # Profile entries look like [{"float": [8, 10]}, ...]; the key is the element type.
    for e in entries:
        if isinstance(e, dict):
            yield from e.keys()


def _count(items: Iterator[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def timed(fn: Any, iters: int, warmup: int = 5) -> float:
    """Median wall time of ``fn`` in milliseconds (``fn`` returns after the GPU has finished)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def ort_timings(ort: Any, path: Path, batches: tuple[int, ...], iters: int) -> dict[str, dict[int, float]]:
    sess = cuda_session(ort, path)
    meta = sess.get_modelmeta().custom_metadata_map
    name = sess.get_inputs()[0].name
    host: dict[int, float] = {}
    device: dict[int, float] = {}
    for n in batches:
        x = input_batch(meta, n)
        host[n] = timed(lambda x=x: sess.run(None, {name: x}), iters)
        binding = sess.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda", 0)

        def run_bound(b: Any = binding) -> None:
            sess.run_with_iobinding(b)
            b.synchronize_outputs()

        device[n] = timed(run_bound, iters)
    return {"host": host, "device": device}


def checkpoint_for(entry: Path, given: dict[str, str]) -> Path | None:
    if entry.name in given:
        return Path(given[entry.name])
    base = entry.name.removesuffix("_fp16")
    if base in given:
        return Path(given[base])
    card = entry / "card.json"
    if card.is_file():
        command = (json.loads(card.read_text()).get("export") or {}).get("command") or ""
        args = shlex.split(command)[1:]
        for a in args:
            if a.endswith((".ckpt", ".pt")):
                p = Path(a)
                return p if p.is_absolute() else ROOT / p
    return None


def torch_timings(ckpt: Path, batches: tuple[int, ...], iters: int, meta: dict[str, str]) -> dict[str, Any]:
    import torch

    from model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    dev = torch.device("cuda")
    model = model.to(dev).eval()
    host: dict[int, float] = {}
    device: dict[int, float] = {}
    with torch.inference_mode():
        for n in batches:
            x_host = torch.from_numpy(input_batch(meta, n))
            x_dev = x_host.to(dev)

            def from_host(x: Any = x_host) -> None:
                [t.cpu() for t in model(x.to(dev))]

            def on_device(x: Any = x_dev) -> None:
                model(x)
                torch.cuda.synchronize()

            host[n] = timed(from_host, iters)
            device[n] = timed(on_device, iters)
    return {"host": host, "device": device, "torch": torch.__version__}


def fp16_parity(ort: Any, path32: Path, path16: Path) -> dict[str, Any]:
    s32, s16 = cuda_session(ort, path32), cuda_session(ort, path16)
    meta = s32.get_modelmeta().custom_metadata_map
    x = input_batch(meta, 256, seed=1)
    a = s32.run(None, {"image": x})
    b = s16.run(None, {"image": x})
    names = [o.name for o in s32.get_outputs()]
    return {"max_abs": {k: float(np.abs(p - q).max()) for k, p, q in zip(names, a, b, strict=True)},
            "argmax_agreement": float((a[0].argmax(1) == b[0].argmax(1)).mean()),
            "inputs": "256 random images"}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# GPU placement and timings — {result['gpu']}", "",
             f"Command: `{result['command']}`  ",
             f"onnxruntime {result['onnxruntime']}, host {result['host']}, {result['created']}", ""]
    for m in result["models"]:
        p = m["placement"]
        verdict = "PASS: every float node on CUDAExecutionProvider" if not p["cpu_float_nodes"] else \
            f"FAIL: {len(p['cpu_float_nodes'])} float nodes on the CPU: {p['cpu_float_nodes']}"
        lines += [f"## {m['name']}", "", f"- Placement ({p['nodes']} nodes, {p['by_provider']}): {verdict}"]
        if p["cpu_shape_nodes"]:
            lines.append(f"- Shape arithmetic on the CPU (int64, by design): {p['cpu_shape_nodes']}")
        if p["memcpy_nodes"]:
            lines.append(f"- Memcpy nodes: {p['memcpy_nodes']}")
        if m.get("fp16_parity"):
            f = m["fp16_parity"]
            lines.append(f"- FP16 vs FP32 on the GPU ({f['inputs']}): "
                         + ", ".join(f"max |Δ{k}| {v:.3g}" for k, v in f["max_abs"].items())
                         + f", argmax agreement {100 * f['argmax_agreement']:.2f}%")
        lines += ["", "| batch | path | " + " | ".join(m["timings"]) + " |",
                  "|---|---|" + "---|" * len(m["timings"])]
        for mode in ("host", "device"):
            for n in result["batches"]:
                cells = []
                for col in m["timings"].values():
                    v = (col.get(mode) or {}).get(n) if isinstance(col, dict) else None
                    cells.append(f"{v:.3f} ms ({n / v * 1e3:,.0f}/s)" if v else "—")
                lines.append(f"| {n} | {mode} | " + " | ".join(cells) + " |")
        for note in m.get("notes", []):
            lines.append(f"\nNote: {note}")
        lines.append("")
    lines += ["Median of the timed runs after warm-up. host: numpy in, numpy out (copies included); device: "
              "inputs and outputs already on the GPU (ORT I/O binding, CUDA tensors for PyTorch).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-repo", default=str(ROOT / "service" / "model_repository"))
    p.add_argument("--models", nargs="*", help="entry names (default: every entry without the _fp16 suffix)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="checkpoint for the PyTorch column (default: from the card's export command)")
    p.add_argument("--batches", type=int, nargs="*", default=list(BATCHES))
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_placement"),
                   help="output path without suffix: writes .md and .json")
    p.add_argument("--require-gpu", action="store_true", help="exit 3 instead of 0 when there is no GPU")
    args = p.parse_args(argv)
    command = "python -m bench.gpu_placement " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    def skip(why: str) -> int:
        print(f"SKIP: {why}")
        return EXIT_NO_GPU if args.require_gpu else EXIT_OK

    try:
        import onnxruntime as ort
    except ImportError:
        return skip("onnxruntime is not installed")
    gpu = gpu_name()
    if gpu is None:
        return skip("no NVIDIA GPU here (nvidia-smi found none); run this on a machine with a CUDA GPU")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider; install onnxruntime-gpu")
    # CUDA and cuDNN for the provider: torch's own copies where torch is installed (it needs them anyway for
    # its column), else the nvidia-* pip packages that onnxruntime.preload_dlls() looks for.
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401
    if hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):
            ort.preload_dlls()

    repo = Path(args.model_repo)
    entries = sorted(e.parent.parent for e in repo.glob("*/1/model.onnx"))
    wanted = args.models or [e.name for e in entries if not e.name.endswith("_fp16")]
    models = [e for e in entries if e.name in wanted]
    if not models:
        print(f"no models {wanted or ''} under {repo}", file=sys.stderr)
        return EXIT_USAGE
    given = dict(c.split("=", 1) for c in args.checkpoint)
    batches = tuple(args.batches)
    result: dict[str, Any] = {"gpu": gpu, "onnxruntime": ort.__version__, "host": platform.node(),
                              "command": command, "batches": list(batches), "models": [],
                              "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    failed = False
    with tempfile.TemporaryDirectory() as work:
        for entry in models:
            path = entry / "1" / "model.onnx"
            m: dict[str, Any] = {"name": entry.name, "notes": []}
            m["placement"] = placement(ort, path, Path(work))
            if "CUDAExecutionProvider" not in m["placement"]["providers"]:
                return skip(f"the CUDA provider did not start ({m['placement']['log'][-3:]})")
            failed |= bool(m["placement"]["cpu_float_nodes"])
            timings: dict[str, Any] = {"ORT CUDA fp32": ort_timings(ort, path, batches, args.iters)}
            f16 = entry.parent / f"{entry.name}_fp16" / "1" / "model.onnx"
            if f16.is_file():
                m["fp16_placement"] = placement(ort, f16, Path(work))
                failed |= bool(m["fp16_placement"]["cpu_float_nodes"])
                timings["ORT CUDA fp16"] = ort_timings(ort, f16, batches, args.iters)
                m["fp16_parity"] = fp16_parity(ort, path, f16)
            ckpt = checkpoint_for(entry, given)
            meta = cuda_session(ort, path).get_modelmeta().custom_metadata_map
            try:
                if ckpt is None or not ckpt.is_file():
                    raise FileNotFoundError(f"checkpoint {ckpt} not found (--checkpoint {entry.name}=PATH)")
                timings["PyTorch eager"] = torch_timings(ckpt, batches, args.iters, meta)
            except (ImportError, FileNotFoundError, RuntimeError) as exc:
                m["notes"].append(f"PyTorch column skipped: {exc}")
            m["timings"] = timings
            result["models"].append(m)
            print(f"{entry.name}: placement {m['placement']['by_provider']}, CPU float nodes "
                  f"{m['placement']['cpu_float_nodes'] or 'none'}, CPU shape nodes "
                  f"{m['placement']['cpu_shape_nodes'] or 'none'}")
    text = markdown(result)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return EXIT_CPU_NODES if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
