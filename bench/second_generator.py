"""The bundled distorted-MNIST models on two generators: their own fixed test set and an independent one.

Every bundled model in ``service/model_repository/*/`` (the ``_fp16`` twins only when named in ``--models``)
whose ONNX metadata ``stn.dataset`` is ``mnist-r``, ``mnist-rts``, ``mnist-p`` or ``mnist-e`` is run on two
sets of the 10,000 MNIST-test digits (nothing here trains or selects a model):

- ``distort``: ``model.distort.test_set(d, load_mnist())``, the fixed test set its model card reports;
- ``render-<seed>``: a second reading of the papers' recipe written without ``model/distort.py``:
  ``bench/rts_render.py`` for rts (ink-centred rotation and scale, placed anywhere the ink stays on the
  42x42 canvas), ``bench/table1_render.py`` for r, p and e (Pillow rotation, Pillow homography of jittered
  corners, numpy elastic field); one set per ``--seed``, by default each generator's own seed. For the rts
  sets also the error on the placements where the whole warped 28x28 frame would lie on the canvas
  (``frame``) and on the rest (``wide``): ``rts_render.frame_inside``.

Other models are listed as skipped with the reason (``mnist-tc``: no second generator here; sequence and
photo models: not single distorted digits). Each model is run from its ONNX file by onnxruntime (CPU, one
intra-op thread, batches of 500), its input normalised by the file's own ``stn.mean`` / ``stn.std``, the
answer the arg-max of its ``logits`` output. The table says for every second set whether the model's error
on its own set lies inside the second set's 95 % Wilson interval.

    python -m bench.second_generator                              # every bundled model; writes bench/results/
    python -m bench.second_generator --models stn_p,stn_p_fp16 --seed 20261212 --seed 1 --n 1000 --no-write
    python -m bench.second_generator --models '' --onnx runs/p_proj/model.onnx  # a model not bundled yet
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench import _load, rts_render, table1_render
from bench.photo_eval import machine
from export.verify import cpu_session
from model.card import wilson

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / "service" / "model_repository"
RESULTS = ROOT / "bench" / "results"
BATCH = 500
DATASETS = {"mnist-r": "r", "mnist-rts": "rts", "mnist-p": "p", "mnist-e": "e"}  # stn.dataset -> distortion
SIDE = {"r": table1_render.FRAME, "p": table1_render.FRAME, "e": table1_render.FRAME, "rts": rts_render.CANVAS}
DEFAULT_SEED = {**table1_render.SEEDS, "rts": rts_render.SEED}
OWN = "distort"

Sets = Mapping[str, dict[str, dict[str, Any]]] | Callable[[str], dict[str, dict[str, Any]]]


def _unsupported(meta: dict[str, str], outputs: list[str]) -> str | None:
    """Why a model whose ``stn.dataset`` is set but not one of ``DATASETS`` is skipped; None otherwise."""
    dataset = meta.get("stn.dataset")
    if dataset is None or dataset in DATASETS:
        return None
    if meta.get("stn.kind") == "sequence":
        return (f"a sequence model (stn.dataset {dataset!r}, outputs {', '.join(outputs)}): it reads digit "
                "strings, not one distorted digit")
    if "photo" in dataset:
        return f"a photo model (stn.dataset {dataset!r}): it reads photographs, not distorted MNIST"
    return (f"stn.dataset {dataset!r} has no second generator here (only "
            f"{', '.join(DATASETS)})")


def describe(sess: Any) -> dict[str, Any]:
    """Input name and shape, distortion, normalisation and outputs, from the ONNX file; ``skipped`` says why it
    cannot run."""
    inp = sess.get_inputs()[0]
    meta = sess.get_modelmeta().custom_metadata_map
    outputs = [o.name for o in sess.get_outputs()]
    spec: dict[str, Any] = {"input": inp.name, "shape": [str(d) for d in inp.shape], "outputs": outputs,
                            "version": meta.get("stn.version", ""), "dataset": meta.get("stn.dataset")}
    if spec["dataset"] in DATASETS:
        spec["distortion"] = DATASETS[spec["dataset"]]
    if "stn.mean" in meta and "stn.std" in meta:
        spec["mean"], spec["std"] = float(meta["stn.mean"]), float(meta["stn.std"])
    if (why := _unsupported(meta, outputs)) is not None:
        spec["skipped"] = why
    elif "logits" not in outputs:
        spec["skipped"] = f"no 'logits' output (outputs: {', '.join(outputs)})"
    elif "mean" not in spec:
        spec["skipped"] = "no stn.mean / stn.std metadata: its normalisation is unknown"
    elif "distortion" not in spec:
        spec["skipped"] = "no stn.dataset metadata: the distortion it was trained on is unknown"
    elif list(inp.shape[1:]) != [1, SIDE[spec["distortion"]], SIDE[spec["distortion"]]]:
        side = SIDE[spec["distortion"]]
        spec["skipped"] = f"input {tuple(inp.shape)} is not (B, 1, {side}, {side})"
    return spec


def predict(sess: Any, spec: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Labels for float (N, 1, S, S) images in [0, 1], in batches of ``BATCH``."""
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


def build_sets(distortion: str, seeds: list[int] | None, n: int | None) -> dict[str, dict[str, Any]]:
    """``{name: {"x": float32 (N, 1, S, S) in [0, 1], "y": int64 (N,), "about": str, "own": bool,
    ["frame": bool (N,)]}}``: the model's own set (``distort``) first, then one second-generator set per seed
    (``seeds`` None: the generator's default seed)."""
    from model.data import load_mnist
    from model.distort import test_set

    data = load_mnist()
    x, y = test_set(distortion, data)
    sets: dict[str, dict[str, Any]] = {
        OWN: {"x": x[:n].numpy().astype(np.float32), "y": y[:n].numpy().astype(np.int64), "own": True,
              "about": f"model.distort.test_set({distortion!r}): the model's own fixed test set"}}
    images = np.asarray(data["test_images"])[:n]
    labels = np.asarray(data["test_labels"], dtype=np.int64)[:n]
    for seed in seeds or [DEFAULT_SEED[distortion]]:
        if distortion == "rts":
            imgs, params = rts_render.render(images, seed)
            extra: dict[str, Any] = {"frame": rts_render.frame_inside(params),
                                     "about": f"bench.rts_render.render, seed {seed}"}
        else:
            imgs = table1_render.render(distortion, images, seed)[0]
            extra = {"about": f"bench.table1_render.render({distortion!r}), seed {seed}"}
        sets[f"render-{seed}"] = {"x": (imgs[:, None] / 255.0).astype(np.float32), "y": labels, "own": False,
                                  **extra}
    return sets


def evaluate(models: dict[str, Path], sets: Sets) -> dict[str, Any]:
    """Per model: its spec and, unless skipped, the error on every set of its distortion (``sets[d]`` or
    ``sets(d)``), the rts sets' frame/wide split, and for each second set ``own_inside``: does the error on the
    model's own set lie inside this set's 95 % interval?"""
    get = sets if callable(sets) else sets.__getitem__
    out: dict[str, Any] = {}
    for name, path in models.items():
        sess = cpu_session(path)
        spec = describe(sess)
        res: dict[str, Any] = {"path": str(path), **spec, "sets": {}}
        out[name] = res
        if "skipped" in spec:
            continue
        own = None
        for set_name, s in get(spec["distortion"]).items():
            wrong = predict(sess, spec, s["x"]) != s["y"]
            row = rate(wrong)
            if "frame" in s:
                row["frame"], row["wide"] = rate(wrong[s["frame"]]), rate(wrong[~s["frame"]])
            if s.get("own"):
                own = row["error"]
            elif own is not None:
                row["own_inside"] = bool(row["ci95"][0] <= own <= row["ci95"][1])
            res["sets"][set_name] = row
    return out


def pct(r: dict[str, Any]) -> str:
    return f"{100 * r['error']:.2f} ({100 * r['ci95'][0]:.2f}–{100 * r['ci95'][1]:.2f})"


def report_md(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# Distorted MNIST: each model's own test set and a second generator, {r['date']}", "",
             f"Command: `{r['command']}`", "",
             f"Machine: {m['cpu']} ({m['cpu_count']} cores), {m['platform']}, Python {m['python']}, "
             f"onnxruntime {m['onnxruntime']} (CPU, 1 thread, batch {BATCH}).", "", "Sets:", ""]
    for distortion, sets in r["sets"].items():
        lines += [f"- {distortion}, `{name}`: {about}" for name, about in sets.items()]
    lines += ["", "Error (%) with its 95 % Wilson interval. `own inside`: does the model's error on its own set "
              "(`distort`) lie inside this set's interval? `frame` / `wide` (rts only): the second generator's "
              "placements where the whole warped 28x28 frame would / would not lie on the canvas.", "",
              "| model | distortion | set | n | errors | error % (95 % CI) | own inside | frame: errors / n "
              "| wide: errors / n |",
              "| --- | --- | --- | ---: | ---: | --- | --- | --- | --- |"]
    skipped = []
    for name, res in r["models"].items():
        if "skipped" in res:
            skipped.append(f"- `{name}`: skipped, {res['skipped']}.")
            continue
        for set_name, row in res["sets"].items():
            split = [f"{row[k]['errors']} / {row[k]['n']:,} ({pct(row[k])})" if k in row else "" for k in
                     ("frame", "wide")]
            inside = {True: "yes", False: "**no**"}.get(row.get("own_inside"), "")
            lines.append(f"| {name} | {res['distortion']} | {set_name} | {row['n']:,} | {row['errors']} | "
                         f"{pct(row)} | {inside} | " + " | ".join(split) + " |")
    if skipped:
        lines += ["", *skipped]
    return "\n".join(lines) + "\n"


def model_paths(names: list[str] | None, onnx: list[Path]) -> dict[str, Path]:
    """The bundled models ``names`` (None: every one in the repository but the ``_fp16`` twins) and the loose
    files ``onnx``."""
    if names is None:
        names = sorted(p.parent.parent.name for p in REPOSITORY.glob("*/1/model.onnx")
                       if not p.parent.parent.name.endswith("_fp16"))
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
    p.add_argument("--models", help="bundled models (comma-separated names in service/model_repository; '' for "
                   "none); default: every bundled model but the _fp16 twins")
    p.add_argument("--onnx", type=Path, action="append", default=[], help="a loose model file (repeatable)")
    p.add_argument("--seed", type=int, action="append", help="a second-generator set, for every distortion "
                   "(repeatable; default: each generator's own, "
                   + ", ".join(f"{d} {s}" for d, s in DEFAULT_SEED.items()) + ")")
    p.add_argument("--n", type=int, help="only the first n digits of each set (a quick look)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    import onnxruntime as ort

    names = None if args.models is None else [m for m in args.models.split(",") if m]
    models = model_paths(names, args.onnx)
    cache: dict[str, dict[str, dict[str, Any]]] = {}

    def sets_for(distortion: str) -> dict[str, dict[str, Any]]:
        if distortion not in cache:
            cache[distortion] = build_sets(distortion, args.seed, args.n)
        return cache[distortion]

    result: dict[str, Any] = {"command": _load.command_line(),
                              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "machine": {**machine(), "onnxruntime": ort.__version__}}
    evaluated = evaluate(models, sets_for)
    result["sets"] = {d: {name: s["about"] for name, s in sets.items()} for d, sets in cache.items()}
    result["models"] = evaluated
    md = report_md(result)
    print(md)
    if not args.no_write:
        print(f"wrote {_load.write_results(RESULTS, 'second_generator', md, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
