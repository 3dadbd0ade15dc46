"""The paper's Table 1 (Jaderberg et al. 2015): CNN and ST-CNN with affine, projective and TPS transformers on
R, RTS, P and E distorted MNIST, one recipe per distortion (``model/configs/table1_<d>.json``).

    python -m model.table1 --run r_affine p_tps --jobs 2   # train cells that have no card yet, 2 at a time
    python -m model.table1 --write docs/table1              # the table from the runs' cards, cards copied

A cell is ``<distortion>_<model>``, the model ``cnn`` or a transformer family. Each run trains with
``stn-train --config model/configs/table1_<d>.json`` (the family or ``--model cnn`` on the command line) into
``runs/table1/<cell>`` and measures the distortion's fixed test set (``model.distort.test_set``) once, at
the end, on the epoch with the lowest validation error; the test set chooses nothing. ``--write`` puts the
table (``README.md``) and each finished cell's card (``<cell>.md``, ``<cell>.json``) in the folder; cells
not trained yet are shown as such, never filled in.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from model.card import TABLE1, wilson

DISTORTIONS = ("r", "rts", "p", "e")
MODELS = ("cnn", "affine", "projective", "tps")
RUNS = Path("runs/table1")
CONFIGS = Path(__file__).resolve().parent / "configs"
TEST_N = 10_000


def cell_name(distortion: str, model: str) -> str:
    return f"{distortion}_{model}"


def command(distortion: str, model: str, runs: Path = RUNS) -> list[str]:
    """The ``stn-train`` command of one cell."""
    cmd = ["stn-train", "--config", f"model/configs/table1_{distortion}.json"]
    cmd += ["--model", "cnn"] if model == "cnn" else ["--transform", model]
    return [*cmd, "--out", str(runs / cell_name(distortion, model))]


def parse_cell(name: str) -> tuple[str, str]:
    d, _, m = name.partition("_")
    if d not in DISTORTIONS or m not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown cell {name!r}: <{'|'.join(DISTORTIONS)}>_<{'|'.join(MODELS)}>")
    return d, m


def run_cells(cells: list[tuple[str, str]], jobs: int, runs: Path = RUNS) -> None:
    """Train the cells without a card, ``jobs`` processes at a time, each logging to ``runs/table1/<cell>.log``."""
    todo = [c for c in cells if not (runs / cell_name(*c) / "card.json").exists()]
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    runs.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("stn-train")  # this environment's, beside its python
    while todo or running:
        while todo and len(running) < jobs:
            d, m = todo.pop(0)
            name = cell_name(d, m)
            cmd = command(d, m, runs)
            with open(runs / f"{name}.log", "ab") as log:
                running.append((name, subprocess.Popen([str(exe), *cmd[1:]], stdout=log, stderr=log)))
            print(f"started {name}: {' '.join(cmd)}", flush=True)
        time.sleep(5)
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                print(f"{item[0]} ended with exit status {item[1].returncode}", flush=True)


def _cell(card: dict[str, Any] | None) -> str:
    if card is None or card.get("test_error") is None:
        return "not run"
    k = round(card["test_error"] * TEST_N)
    lo, hi = wilson(k, TEST_N)
    return f"**{100 * card['test_error']:.2f}** ({100 * lo:.2f}-{100 * hi:.2f})"


def read_cards(runs: Path = RUNS) -> dict[str, dict[str, Any]]:
    cards = {}
    for d in DISTORTIONS:
        for m in MODELS:
            path = runs / cell_name(d, m) / "card.json"
            if path.exists():
                cards[cell_name(d, m)] = json.loads(path.read_text())
    return cards


def read_cards_in(folder: Path) -> dict[str, dict[str, Any]]:
    """The cards ``write`` copied into ``folder`` (``<cell>.json``)."""
    return {cell_name(d, m): json.loads((folder / f"{cell_name(d, m)}.json").read_text())
            for d in DISTORTIONS for m in MODELS if (folder / f"{cell_name(d, m)}.json").exists()}


def _order(name: str) -> int:
    return [cell_name(d, m) for d in DISTORTIONS for m in MODELS].index(name)


def render(cards: dict[str, dict[str, Any]]) -> str:
    rows = ["| model | " + " | ".join(d.upper() for d in DISTORTIONS) + " |",
            "| --- | " + " | ".join("---" for _ in DISTORTIONS) + " |"]
    for m in MODELS:
        label = "CNN" if m == "cnn" else f"ST-CNN {m}"
        cells = []
        for d in DISTORTIONS:
            card = cards.get(cell_name(d, m))
            cells.append(f"{_cell(card)} / {100 * TABLE1[m][d]:.1f}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    detail = ["| cell | test error (%) | validation (%) | best epoch | wall time (min) | threads | command |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, card in cards.items():
        detail.append(f"| [{name}]({name}.md) | {100 * card['test_error']:.2f} | {100 * card['val_error']:.2f} | "
                      f"{card['best_epoch']} of {card['epochs']} | {card['wall_time_s'] / 60:.1f} | "
                      f"{card['hardware']['torch_threads']} | `{card['command']}` |")
    return "\n".join([
        "# The paper's Table 1, reproduced",
        "",
        "Test error (%) on each distortion's fixed test set (the 10,000 MNIST-test digits distorted once, "
        "`model.distort.test_set`), with its 95 % Wilson interval, and the paper's figure after the slash "
        "(Jaderberg et al. 2015, Table 1). One recipe per distortion: `model/configs/table1_<d>.json`; the "
        "family (or `--model cnn`) on the command line; model selection on the validation set "
        "(MNIST-train 55,000-59,999, distorted once). Written by `python -m model.table1 --write docs/table1`.",
        "",
        *rows,
        "",
        *detail,
        "",
    ])


def write(folder: Path, runs: Path = RUNS) -> Path:
    """The table from the runs' cards, and from the cards already in ``folder`` for cells whose run is not in
    this checkout (a run folder holds checkpoints, never committed; the copied cards are)."""
    cards = read_cards(runs)
    kept = {name: card for name, card in read_cards_in(folder).items() if name not in cards}
    folder.mkdir(parents=True, exist_ok=True)
    for name in cards:
        shutil.copyfile(runs / name / "card.json", folder / f"{name}.json")
        md = (runs / name / "card.md").read_text()
        # The figures stay in the run folder: the copied card links nothing that is not committed.
        md = "\n".join(line for line in md.splitlines() if not line.startswith("![")) + "\n"
        (folder / f"{name}.md").write_text(md)
    out = folder / "README.md"
    out.write_text(render(dict(sorted({**cards, **kept}.items(), key=lambda kv: _order(kv[0])))))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.table1", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", nargs="*", type=parse_cell, metavar="CELL",
                   help="cells to train (all 16 when given no names); cells with a card are skipped")
    p.add_argument("--jobs", type=int, default=2, help="trainings at a time (each takes the threads its config says)")
    p.add_argument("--runs", type=Path, default=RUNS)
    p.add_argument("--write", type=Path, metavar="FOLDER", help="write the table and the cards here")
    args = p.parse_args(argv)
    if args.run is not None:
        cells = args.run or [(d, m) for d in DISTORTIONS for m in MODELS]
        run_cells(cells, args.jobs, args.runs)
    if args.write:
        print(write(args.write, args.runs).read_text())


if __name__ == "__main__":
    main()
