"""How much one held-out photo set's error depends on its seed: set A of ``bench.photo_eval`` drawn again with
other seeds, each condition, through the exported model in onnxruntime.

``bench.photo_eval`` measures through HTTP on one draw per condition; a 1,000-photo draw of MNIST-test digits
has its own luck (which digits, how bold, how blurred), beyond the binomial interval of the rate it measures.
This draws ``--seeds`` more sets A (``model.photo.PhotoGenerator``, MNIST-test digits, held-out fonts; seeds
``SEED + k``, none of them ``bench.photo_eval.SEED_A``) and scores the bundled ``stn_photo`` on each, the
model input made by ``model.photo.photo_input`` (the service's own preprocessing, checked equal to it by
``tests/model/test_photo.py``). Nothing here trains or selects a model.

    python -m bench.photo_seeds                        # 3 seeds x 1,000 photos x 7 conditions, writes bench/results/
    python -m bench.photo_seeds --seeds 1 --n 200 --no-write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench import _load
from bench.photo_eval import CONDITIONS, SEED_A
from model.card import wilson
from model.data import load_mnist
from model.photo import TEST_FONT_DIRS, PhotoGenerator, font_files, photo_input

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SEED = 20_261_300


def errors(session: Any, gen: PhotoGenerator, condition: str, seed: int, n: int, side: int) -> int:
    rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
    wrong = 0
    for start in range(0, n, 100):
        photos = [gen.render(rng, condition) for _ in range(min(100, n - start))]
        x = np.stack([photo_input(p.data, side)[0] for p in photos])[:, None]
        logits = session.run(["logits"], {"image": x})[0]
        wrong += int((logits.argmax(1) != np.array([p.label for p in photos])).sum())
    return wrong


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n", type=int, default=1000, help="photos per condition and seed")
    p.add_argument("--model", type=Path, default=ROOT / "service" / "model_repository" / "stn_photo" / "1" /
                   "model.onnx")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    import onnxruntime as ort

    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    side = int(session.get_inputs()[0].shape[-1])
    data = load_mnist()
    gen = PhotoGenerator(data["test_images"], data["test_labels"], font_files(TEST_FONT_DIRS))
    seeds = [SEED + k for k in range(args.seeds)]
    assert SEED_A not in seeds
    table: dict[str, list[int]] = {}
    for c in CONDITIONS:
        table[c] = [errors(session, gen, c, s, args.n, side) for s in seeds]
        print(f"{c:8s} " + "  ".join(f"{100 * w / args.n:4.1f}" for w in table[c]), flush=True)
    lines = ["# Set A of the photo evaluation at other seeds", "", f"Command: `{_load.command_line()}`", "",
             f"Model `{args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model}`, "
             f"onnxruntime CPU; {args.n:,} photos per condition and seed, seeds {', '.join(map(str, seeds))} "
             f"(`bench.photo_eval` uses {SEED_A}). Error % (95 % Wilson interval); the spread between seeds is "
             "the draw's luck.", "",
             "| condition | " + " | ".join(f"seed {s}" for s in seeds) + " | pooled |",
             "| --- |" + " --- |" * (len(seeds) + 1)]
    for c, ws in table.items():
        cells = [f"{100 * w / args.n:.1f} ({100 * wilson(w, args.n)[0]:.1f}–{100 * wilson(w, args.n)[1]:.1f})"
                 for w in ws]
        tot, n = sum(ws), args.n * len(ws)
        lo, hi = wilson(tot, n)
        cells.append(f"{100 * tot / n:.1f} ({100 * lo:.1f}–{100 * hi:.1f})")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.no_write:
        result = {"seeds": seeds, "n": args.n, "errors": table, "command": _load.command_line(),
                  "pooled_error": {c: sum(ws) / (args.n * len(ws)) for c, ws in table.items()},
                  "spread_pp": {c: 100 * (max(ws) - min(ws)) / args.n for c, ws in table.items()}}
        print(f"wrote {_load.write_results(RESULTS, 'photo_seeds', md, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
