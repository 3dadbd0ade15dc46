"""A pool of number photos rendered once, shared by the number models' training runs (``model.number_train``).

    python -m model.number_pool --n 120000 --workers 2 --out runs/number_pool

The pool is ``n`` photos from ``model.number.NumberGenerator`` over MNIST-train 0-54,999 and the training
fonts (the generator's mix of surfaces unless ``--surfaces`` gives another), rendered in chunks of ``CHUNK``
by ``workers`` processes; chunk ``k`` draws from the seed ``(seed, k)``, so the pool is the same whatever
the number of workers. Rendering costs about 10 ms a photo on one core, which would starve two
single-threaded trainings run side by side on the 2 cores here; rendered once, both train from the same
photos (the card says how many times each was seen).

Files in ``out``: ``x.npy`` (n, side, side) uint8 letterboxed inputs, ``digits.npy`` (n, 5) int64 (``NO_DIGIT``
past the end), ``thetas.npy`` (n, 5, 2, 3) float32 each digit's target crop, ``meta.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from model import data as mnist
from model.number import MAX_DIGITS, SURFACES, check_surfaces, fixed_set
from model.photo import TRAIN_FONT_DIRS, font_files

CHUNK = 500
TRAIN_DIGITS = 55_000

_state: dict[str, Any] = {}


def _init(side: int, seed: int, surfaces: tuple[float, ...], fonts: list[str]) -> None:
    data = mnist.load_mnist(None)
    _state.update(images=data["train_images"][:TRAIN_DIGITS], labels=data["train_labels"][:TRAIN_DIGITS],
                  fonts=fonts, side=side, seed=seed, surfaces=surfaces)


def _chunk(k: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    s = _state
    # Lengths in turn within a chunk (fixed_set), so every length is equally common.
    xs, ys, ts = fixed_set(s["images"], s["labels"], s["fonts"], (s["seed"], k), CHUNK, s["side"],
                           surfaces=s["surfaces"])
    return k, xs, ys, ts


def build(out: Path, n: int, side: int = 256, seed: int = 0, workers: int = 2,
          surfaces: tuple[float, ...] = SURFACES) -> dict[str, Any]:
    """Render the pool into ``out`` (skipped where ``meta.json`` already records the same request);
    ``surfaces``: the generator's mix of plain, ruled, squared paper and board (``model.number.SURFACES``)."""
    surfaces = check_surfaces(surfaces)
    if n % CHUNK:
        raise ValueError(f"n must be a multiple of {CHUNK}")
    request: dict[str, Any] = {"n": n, "side": side, "seed": seed, "chunk": CHUNK}
    if surfaces != SURFACES:  # the generator's own mix: the request as pools rendered before the option
        request["surfaces"] = list(surfaces)
    meta_file = out / "meta.json"
    fonts = font_files(TRAIN_FONT_DIRS)
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        # A pool rendered from another set of training fonts (model.photo.TRAIN_FONTS) is rendered again.
        if meta.get("request") == request and meta.get("fonts", len(fonts)) == len(fonts):
            return meta
    out.mkdir(parents=True, exist_ok=True)
    meta_file.unlink(missing_ok=True)  # the arrays below are emptied first: a failed render leaves no pool
    x = np.lib.format.open_memmap(out / "x.npy", "w+", np.uint8, (n, side, side))
    d = np.lib.format.open_memmap(out / "digits.npy", "w+", np.int64, (n, MAX_DIGITS))
    t = np.lib.format.open_memmap(out / "thetas.npy", "w+", np.float32, (n, MAX_DIGITS, 2, 3))
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers, _init, (side, seed, surfaces, fonts)) as pool:
        for done, (k, xs, ys, ts) in enumerate(pool.imap_unordered(_chunk, range(n // CHUNK)), start=1):
            sl = slice(k * CHUNK, (k + 1) * CHUNK)
            x[sl], d[sl], t[sl] = xs, ys, ts
            if done % 20 == 0:
                print(f"{done * CHUNK} photos, {time.perf_counter() - t0:.0f}s", flush=True)
    x.flush(), d.flush(), t.flush()
    meta = {"request": request, "render_s": time.perf_counter() - t0, "workers": workers,
            "source": "MNIST-train 0-54,999, training fonts", "surfaces": list(surfaces), "fonts": len(fonts)}
    meta_file.write_text(json.dumps(meta, indent=1))
    return meta


def load(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pool's arrays, memory-mapped."""
    return (np.load(out / "x.npy", mmap_mode="r"), np.load(out / "digits.npy"), np.load(out / "thetas.npy"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.number_pool", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=120_000)
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--surfaces", type=float, nargs=4, default=list(SURFACES),
                   metavar=("PLAIN", "RULED", "SQUARED", "BOARD"),
                   help="the mix of surfaces (default: the generator's, %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/number_pool"))
    a = p.parse_args(argv)
    print(json.dumps(build(a.out, a.n, a.side, a.seed, a.workers, tuple(a.surfaces))))


if __name__ == "__main__":
    main()
