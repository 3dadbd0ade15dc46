"""The Table 1 runner: its commands train what the table says, and the table shows only measured cells."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from model import table1
from model.card import PAPER, TABLE1
from model.train import parse_args


def test_paper_figures() -> None:
    # Jaderberg et al. 2015, Table 1, ST-CNN rows and the CNN row (R, RTS, P, E).
    assert [TABLE1["tps"][d] for d in table1.DISTORTIONS] == [0.007, 0.005, 0.008, 0.011]
    assert [TABLE1["cnn"][d] for d in table1.DISTORTIONS] == [0.012, 0.008, 0.015, 0.014]
    assert PAPER["e"] == {"st-cnn": 0.011, "cnn": 0.014}
    assert PAPER["p"]["st-cnn"] == 0.008


@pytest.mark.parametrize("distortion", table1.DISTORTIONS)
@pytest.mark.parametrize("model", table1.MODELS)
def test_command_trains_the_cell(distortion: str, model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(table1.CONFIGS.parents[1])  # the command names its config from the repository root
    cmd = table1.command(distortion, model, Path("runs/t"))
    assert cmd[0] == "stn-train"
    opts, _ = parse_args(cmd[1:])
    assert opts["distortion"] == distortion
    assert opts["model"] == ("cnn" if model == "cnn" else "stcnn")
    if model != "cnn":
        assert opts["transform"] == model
    assert opts["out"] == f"runs/t/{distortion}_{model}"


def test_one_recipe_per_distortion() -> None:
    for d in table1.DISTORTIONS:
        r = json.loads((table1.CONFIGS / f"table1_{d}.json").read_text())
        assert r["distortion"] == d and "out" not in r  # the runner names the folder of each cell


def test_parse_cell() -> None:
    assert table1.parse_cell("e_tps") == ("e", "tps")
    assert table1.parse_cell("rts_cnn") == ("rts", "cnn")
    with pytest.raises(argparse.ArgumentTypeError):
        table1.parse_cell("e_bilinear")


def _fake_card(runs: Path, cell: str, test_error: float) -> None:
    folder = runs / cell
    folder.mkdir(parents=True)
    card = {"test_error": test_error, "val_error": 0.01, "best_epoch": 3, "epochs": 4, "wall_time_s": 60.0,
            "hardware": {"torch_threads": 1}, "command": f"stn-train ... {cell}"}
    (folder / "card.json").write_text(json.dumps(card))
    (folder / "card.md").write_text(f"# {cell}\n\n![curves](curves.png)\ntext\n")


def test_write_shows_only_measured_cells(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _fake_card(runs, "p_projective", 0.0071)
    out = table1.write(tmp_path / "docs", runs)
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| ST-CNN projective"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert cells[2].startswith("**0.71** (0.56-0.89)") and cells[2].endswith("/ 0.8")
    assert cells[0] == "not run / 0.8" and cells[1] == "not run / 0.6"
    assert text.count("not run") == 15
    copied = (tmp_path / "docs" / "p_projective.md").read_text()
    assert "![" not in copied and "text" in copied  # figures are not committed beside the copy
    assert json.loads((tmp_path / "docs" / "p_projective.json").read_text())["test_error"] == 0.0071


def test_write_keeps_the_cards_already_copied(tmp_path: Path) -> None:
    """A fresh checkout has the committed cards but not the runs: a newly trained cell joins them."""
    runs = tmp_path / "runs"
    _fake_card(runs, "r_affine", 0.0097)
    docs = tmp_path / "docs"
    table1.write(docs, runs)
    (runs / "r_affine" / "card.json").unlink()  # that run is gone from this checkout
    _fake_card(runs, "e_tps", 0.0088)
    text = table1.write(docs, runs).read_text()
    assert text.count("not run") == 14
    details = [line for line in text.splitlines() if line.startswith("| [")]
    assert [d.split("]")[0][3:] for d in details] == ["r_affine", "e_tps"]  # in the table's order
