"""The number model read once or twice (``service.zoom``), through a real ``stn-serve``.

Every photo is posted as its JPEG to ``/v1/models/stn_number/predict`` twice, with ``?zoom=false`` (one
reading of the letterboxed photo) and ``?zoom=true`` (the bundled model's default: a second reading from a
window on the digits the first found, ``stn.zoom_fill`` and ``stn.zoom_alone_below`` in its metadata), one
request at a time, alternating, so both are timed on the same machine in the same minutes.

Photo sets (``model.number.NumberGenerator``; lengths 1-5 in turn):

- ``val``: MNIST-train 55,000-59,999 and the training fonts (the trainer's validation digits), drawn with
  seeds of their own: not the photos the zoom's two values were chosen on (``model.number_train.VAL_SEED``
  and ``(VAL_SEED, 1)``), so this confirms that choice on fresh photos;
- ``test``: MNIST-test and the held-out fonts. ``in range`` is the card's held-out set itself
  (``model.number.test_set``'s seed and order, rendered again as JPEGs); measured once, it chose nothing.

Conditions: ``in range`` (the generator as trained: the number 35-85 % of the photo's width, frames of
256-448 px) and ``small`` (the number 12-35 % of the width, frames of 768-1,344 px: a house number
photographed from across the street, outside the training range).

    python -m bench.number_zoom                      # writes bench/results/number_zoom_<date>.md/.json
    python -m bench.number_zoom --n 40 --no-write    # a quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import _load
from bench.photo_eval import machine
from model import data as mnist
from model import number, number_pool
from model.card import wilson
from model.number_train import VAL_SEED
from model.photo import TEST_FONT_DIRS, TRAIN_FONT_DIRS, font_files
from service.repository import ModelSpec
from tests.utils.server import serve_args, stn_serve
from tests.utils.toys import BUNDLED

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL = "stn_number"
CONDITIONS: dict[str, dict[str, Any]] = {
    "in range": {"line_width": number.LINE_WIDTH, "long_side": number.LONG_SIDE},
    "small": {"line_width": (0.12, 0.35), "long_side": (768, 1344)},
}
# (set, condition) -> seed. test/in range is the card's held-out set (model.number.test_set).
SEEDS: dict[tuple[str, str], Any] = {
    ("val", "in range"): [VAL_SEED, 2], ("val", "small"): [VAL_SEED, 3],
    ("test", "in range"): number.TEST_SEED, ("test", "small"): [number.TEST_SEED, 1],
}


def render(data: dict[str, Any], set_name: str, cond: str, n: int) -> list[number.NumberPhoto]:
    if set_name == "val":
        images = data["train_images"][number_pool.TRAIN_DIGITS:]
        labels = data["train_labels"][number_pool.TRAIN_DIGITS:]
        fonts = font_files(TRAIN_FONT_DIRS)
    else:
        images, labels, fonts = data["test_images"], data["test_labels"], font_files(TEST_FONT_DIRS)
    gen = number.NumberGenerator(images, labels, fonts, **CONDITIONS[cond])
    rng = np.random.default_rng(SEEDS[set_name, cond])
    return [gen.render(rng, i % number.MAX_DIGITS + 1) for i in range(n)]  # as model.number.fixed_set draws


def digit_errors(read: str, truth: str) -> int:
    """Positions where the read number and the true one differ (a digit misread, missed or added), as
    ``model.number_train.errors`` counts them over the model's five positions (the rate is over the true
    digits)."""
    a, b = read.ljust(number.MAX_DIGITS, "-"), truth.ljust(number.MAX_DIGITS, "-")
    return sum(x != y for x, y in zip(a, b, strict=True))


def zoom_alone_below(repository: Path) -> float:
    """The model's ``stn.zoom_alone_below`` (``service.repository.parse_spec``'s default where it has none)."""
    import onnxruntime as ort

    path = repository / MODEL / "1" / "model.onnx"
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return float(meta.get("stn.zoom_alone_below", ModelSpec.zoom_alone_below))


def measure(client: httpx.Client, photos: list[number.NumberPhoto], alone_below: float) -> dict[str, Any]:
    texts: dict[str, list[str]] = {"once": [], "twice": []}
    seconds: dict[str, list[float]] = {"once": [], "twice": []}
    alone = 0
    for k, photo in enumerate(photos):
        order = ("once", "twice") if k % 2 == 0 else ("twice", "once")
        for mode in order:
            t0 = time.perf_counter()
            r = client.post(f"/v1/models/{MODEL}/predict", params={"zoom": str(mode == "twice").lower()},
                            content=photo.data, headers={"content-type": "image/jpeg"})
            seconds[mode].append(time.perf_counter() - t0)
            r.raise_for_status()
            p = r.json()
            texts[mode].append(p["text"])
            if mode == "twice":
                x0, _, x1, _ = p["zoom_window"]
                alone += (x1 - x0) < alone_below * max(photo.size)  # as service.zoom.is_alone decides
    truth = ["".join(map(str, ph.labels)) for ph in photos]
    n_digits = sum(len(t) for t in truth)
    out: dict[str, Any] = {"n": len(photos), "digits": n_digits, "second_alone": alone}
    wrong = {}
    for mode in ("once", "twice"):
        w = np.array([a != b for a, b in zip(texts[mode], truth, strict=True)])
        d = sum(digit_errors(a, b) for a, b in zip(texts[mode], truth, strict=True))
        wrong[mode] = w
        out[mode] = {"numbers_wrong": int(w.sum()), "number_error": float(w.mean()),
                     "number_ci": wilson(int(w.sum()), len(w)), "digits_wrong": d, "digit_error": d / n_digits,
                     "digit_ci": wilson(d, n_digits), "median_ms": 1000 * float(np.median(seconds[mode]))}
    out["fixed"] = int((wrong["once"] & ~wrong["twice"]).sum())
    out["broken"] = int((~wrong["once"] & wrong["twice"]).sum())
    return out


def _pct(e: float, ci: tuple[float, float]) -> str:
    return f"{100 * e:.2f} ({100 * ci[0]:.2f}–{100 * ci[1]:.2f})"


def table(result: dict[str, Any]) -> str:
    rows = ["| set | condition | photos | numbers wrong, once | twice | digits wrong, once | twice | "
            "fixed / broken | second alone | median ms once / twice |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, r in result["sets"].items():
        s, c = key.split("/")
        o, t = r["once"], r["twice"]
        rows.append(f"| {s} | {c} | {r['n']:,} | {_pct(o['number_error'], o['number_ci'])} | "
                    f"{_pct(t['number_error'], t['number_ci'])} | {_pct(o['digit_error'], o['digit_ci'])} | "
                    f"{_pct(t['digit_error'], t['digit_ci'])} | {r['fixed']} / {r['broken']} | "
                    f"{r['second_alone']} | {o['median_ms']:.1f} / {t['median_ms']:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="photos per set, in range")
    p.add_argument("--n-small", type=int, default=1000, help="photos per set, small")
    p.add_argument("--sets", nargs="+", default=["val", "test"], choices=["val", "test"])
    p.add_argument("--repository", type=Path, default=BUNDLED)
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    data = mnist.load_mnist(None)
    alone_below = zoom_alone_below(a.repository)
    result: dict[str, Any] = {"command": _load.command_line(), "machine": machine(), "zoom_alone_below": alone_below,
                              "sets": {}}
    with tempfile.TemporaryDirectory(prefix="stn-zoom-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / MODEL).symlink_to((a.repository / MODEL).resolve())
        with stn_serve(Path(tmp), *serve_args(repo)) as server, httpx.Client(base_url=server.url, timeout=60) as c:
            meta = c.get(f"/v2/models/{MODEL}").json()
            result["model"] = {"name": MODEL, "platform": meta.get("platform"), "versions": meta.get("versions")}
            for set_name in a.sets:
                for cond in CONDITIONS:
                    t0 = time.perf_counter()
                    photos = render(data, set_name, cond, a.n if cond == "in range" else a.n_small)
                    t1 = time.perf_counter()
                    r = measure(c, photos, alone_below)
                    r["render_s"], r["measure_s"] = t1 - t0, time.perf_counter() - t1
                    result["sets"][f"{set_name}/{cond}"] = r
                    print(f"{set_name}/{cond}: once {r['once']['numbers_wrong']} twice {r['twice']['numbers_wrong']} "
                          f"of {r['n']} (fixed {r['fixed']}, broken {r['broken']})", flush=True)
    md = "\n".join([
        "# stn_number read once or twice (`service.zoom`), through a real stn-serve", "",
        f"Command: `{result['command']}`; {result['machine']['cpu']}, one intra-op thread, requests one at a time.",
        "", "Error % (95 % Wilson interval). `fixed / broken`: numbers read wrong once and right twice, and the "
        f"other way round. `second alone`: photos whose window was under {alone_below:g} of the photo's longer side "
        "(the second reading alone answers). Median ms: a request's wall time at the client.", "", table(result), ""])
    print(md)
    if not a.no_write:
        print(_load.write_results(RESULTS, "number_zoom", md, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
