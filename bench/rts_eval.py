"""The bundled 42x42 models on two RTS-MNIST generators: their own fixed test set and an independent one.

Sets (the 10,000 MNIST-test digits each; nothing here trains or selects a model):

- ``distort``: ``model.distort.test_set("rts", ...)``, the fixed test set the model card reports;
- ``render-<seed>``: ``bench/rts_render.py``, a second reading of the paper's recipe written without
  ``model/distort.py`` (ink-centred rotation and scale, placement anywhere the ink stays on the canvas),
  one set per ``--seed``. For these sets also the error on the placements where the whole warped 28x28
  frame would lie on the canvas (``frame``) and on the rest (``wide``): ``rts_render.frame_inside``.

Each model is run from its ONNX file by onnxruntime (CPU, one intra-op thread, batches of 500), its input
normalised by the file's own ``stn.mean`` / ``stn.std``, the answer the arg-max of its ``logits`` output.
Models whose input is not (B, 1, 42, 42) are skipped and the table says so (``stn_tc`` takes 60x60).

    python -m bench.rts_eval                                   # stn_rts (stn_tc skipped); writes bench/results/
    python -m bench.rts_eval --models stn_rts,stn_rts_fp16 --seed 20261204 --seed 1 --n 1000 --no-write
    python -m bench.rts_eval --onnx runs/rts_affine/model.onnx  # a model not bundled yet
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench import _load, rts_render
from bench.photo_eval import machine
from model.card import wilson

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "service" / "model_repository"
RESULTS = ROOT / "bench" / "results"
DEFAULT_MODELS = ("stn_rts", "stn_tc")
BATCH = 500


def session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def describe(sess: Any) -> dict[str, Any]:
    """Input name and shape, normalisation and outputs, from the ONNX file; ``skipped`` says why it cannot run."""
    inp = sess.get_inputs()[0]
    meta = sess.get_modelmeta().custom_metadata_map
    outputs = [o.name for o in sess.get_outputs()]
    spec: dict[str, Any] = {"input": inp.name, "shape": [str(d) for d in inp.shape], "outputs": outputs,
                            "version": meta.get("stn.version", "")}
    if "stn.mean" in meta and "stn.std" in meta:
        spec["mean"], spec["std"] = float(meta["stn.mean"]), float(meta["stn.std"])
    if list(inp.shape[1:]) != [1, rts_render.CANVAS, rts_render.CANVAS]:
        spec["skipped"] = f"input {tuple(inp.shape)} is not (B, 1, 42, 42)"
    elif "logits" not in outputs:
        spec["skipped"] = f"no 'logits' output (outputs: {', '.join(outputs)})"
    elif "mean" not in spec:
        spec["skipped"] = "no stn.mean / stn.std metadata: its normalisation is unknown"
    return spec


def predict(sess: Any, spec: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Labels for float (N, 1, 42, 42) images in [0, 1], in batches of ``BATCH``."""
    out = []
    for start in range(0, len(x), BATCH):
        batch = ((x[start : start + BATCH] - spec["mean"]) / spec["std"]).astype(np.float32)
        out.append(sess.run(["logits"], {spec["input"]: batch})[0].argmax(1))
    return np.concatenate(out)


def rate(wrong: np.ndarray) -> dict[str, Any]:
    """Errors, n, error rate and its 95 % Wilson interval of a bool array of mistakes."""
    k, n = int(wrong.sum()), int(wrong.size)
    lo, hi = wilson(k, n)
    return {"errors": k, "n": n, "error": k / n if n else float("nan"), "ci95": [lo, hi]}


def build_sets(seeds: list[int], n: int | None) -> dict[str, dict[str, Any]]:
    """``{name: {"x": float32 (N, 1, 42, 42) in [0, 1], "y": int64 (N,), "about": str, ["frame": bool (N,)]}}``."""
    from model.data import load_mnist
    from model.distort import test_set

    data = load_mnist()
    x, y = test_set("rts", data)
    sets: dict[str, dict[str, Any]] = {
        "distort": {"x": x[:n].numpy().astype(np.float32), "y": y[:n].numpy().astype(np.int64),
                    "about": "model.distort.test_set('rts'): the model's own fixed test set"}}
    images = np.asarray(data["test_images"])[:n]
    labels = np.asarray(data["test_labels"], dtype=np.int64)[:n]
    for seed in seeds:
        imgs, params = rts_render.render(images, seed)
        sets[f"render-{seed}"] = {"x": (imgs[:, None] / 255.0).astype(np.float32), "y": labels,
                                  "frame": rts_render.frame_inside(params),
                                  "about": f"bench.rts_render.render, seed {seed}"}
    return sets


def evaluate(models: dict[str, Path], sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per model: its spec and, unless skipped, the error on every set (and its frame/wide split)."""
    out: dict[str, Any] = {}
    for name, path in models.items():
        sess = session(path)
        spec = describe(sess)
        res: dict[str, Any] = {"path": str(path), **spec, "sets": {}}
        out[name] = res
        if "skipped" in spec:
            continue
        for set_name, s in sets.items():
            wrong = predict(sess, spec, s["x"]) != s["y"]
            row = rate(wrong)
            if "frame" in s:
                row["frame"], row["wide"] = rate(wrong[s["frame"]]), rate(wrong[~s["frame"]])
            res["sets"][set_name] = row
    return out


def pct(r: dict[str, Any]) -> str:
    return f"{100 * r['error']:.2f} ({100 * r['ci95'][0]:.2f}–{100 * r['ci95'][1]:.2f})"


def report_md(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# RTS MNIST: two generators, {r['date']}", "", f"Command: `{r['command']}`", "",
             f"Machine: {m['cpu']} ({m['cpu_count']} cores), {m['platform']}, Python {m['python']}, "
             f"onnxruntime {m['onnxruntime']} (CPU, 1 thread, batch {BATCH}).", "", "Sets:", ""]
    lines += [f"- `{name}`: {about}" for name, about in r["sets"].items()]
    lines += ["", "Error (%) with its 95 % Wilson interval. `frame` / `wide`: the second generator's placements "
              "where the whole warped 28x28 frame would / would not lie on the canvas.", "",
              "| model | set | n | errors | error % (95 % CI) | frame: errors / n | wide: errors / n |",
              "| --- | --- | ---: | ---: | --- | --- | --- |"]
    skipped = []
    for name, res in r["models"].items():
        if "skipped" in res:
            skipped.append(f"- `{name}`: skipped, {res['skipped']}.")
            continue
        for set_name, row in res["sets"].items():
            split = [f"{row[k]['errors']} / {row[k]['n']:,} ({pct(row[k])})" if k in row else "" for k in
                     ("frame", "wide")]
            lines.append(f"| {name} | {set_name} | {row['n']:,} | {row['errors']} | {pct(row)} | "
                         + " | ".join(split) + " |")
    if skipped:
        lines += ["", *skipped]
    return "\n".join(lines) + "\n"


def model_paths(names: list[str], onnx: list[Path]) -> dict[str, Path]:
    paths = {name: REPOSITORY / name / "1" / "model.onnx" for name in names}
    for name, path in paths.items():
        if not path.exists():
            raise SystemExit(f"no bundled model {name!r}: {path} not found")
    for path in onnx:
        if not path.exists():
            raise SystemExit(f"{path} not found")
        paths[str(path)] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="bundled models (comma-separated names in service/model_repository); '' for none")
    p.add_argument("--onnx", type=Path, action="append", default=[], help="a loose model file (repeatable)")
    p.add_argument("--seed", type=int, action="append", help=f"a second-generator set (repeatable; default "
                   f"{rts_render.SEED})")
    p.add_argument("--n", type=int, help="only the first n digits of each set (a quick look)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    import onnxruntime as ort

    models = model_paths([m for m in args.models.split(",") if m], args.onnx)
    sets = build_sets(args.seed or [rts_render.SEED], args.n)
    result = {"command": _load.command_line(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {**machine(), "onnxruntime": ort.__version__},
              "sets": {name: s["about"] for name, s in sets.items()},
              "models": evaluate(models, sets)}
    md = report_md(result)
    print(md)
    if not args.no_write:
        print(f"wrote {_load.write_results(RESULTS, 'rts_generators', md, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
