"""The number model's error analysis (``bench/number_analysis.py``) on a tiny untrained checkpoint: it reads
the validation photos the trainer selects with, counts every digit of them, and its counts are consistent
(a number read at the wrong length is a number wrong)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import number_analysis
from model.checkpoint import save_checkpoint
from model.nets import build_model
from model.number_train import OPTS, model_config
from model.photo import TRAIN_FONT_DIRS, font_files


@pytest.mark.parametrize("refine", [False, True])
def test_the_analysis_counts_every_validation_digit(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    refine: bool) -> None:
    if not font_files(TRAIN_FONT_DIRS):
        pytest.skip("no training fonts (tests/setup_system.sh installs them)")
    torch.manual_seed(0)
    cfg = model_config({**OPTS, "loc_hidden": 16, "cls_channels": [8, 8, 8], "cls_hidden": 16, "refine": refine})
    save_checkpoint(tmp_path / "tiny.ckpt", build_model(cfg), cfg, {"dataset": "number-photo"}, {})
    assert number_analysis.main([str(tmp_path / "tiny.ckpt"), "--n", "10", "--threads", "1", "--no-write"]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in out.splitlines()
            if line.startswith("| ") and "---" not in line and "measure" not in line}
    groups = {k: v for k, v in rows.items() if k in {"handwritten", "printed", "plain", "ruled", "squared", "board"}}
    bins = {k: v for k, v in rows.items() if k in {"0-0.1", "0.1-0.2", "0.2-0.35", "0.35-0.6", "0.6-1", "≥ 1"}}
    rows = {k: v for k, v in rows.items() if k not in groups and k not in bins and k != "numbers wrong, by photo"
            and not k.startswith("chosen crop")}
    assert set(rows) == {"numbers wrong", "length wrong", "strip misses a digit", "length wrong, strip holds all",
                         "digits misread, own crops", "digits misread, true crops"} \
        | ({"digits misread, first-stage crops"} if refine else set())
    assert ("before refining" in out) is refine
    # Each photo counted once by kind and once by surface, their wrong numbers adding up to the whole.
    kind = [v for k, v in groups.items() if k in {"handwritten", "printed"}]
    surface = [v for k, v in groups.items() if k not in {"handwritten", "printed"}]
    for split in (kind, surface):
        assert sum(int(v[0]) for v in split) == 10
        wrong = sum(int(v[0]) * float(v[1].split()[0]) / 100 for v in split)
        assert wrong == pytest.approx(10 * float(rows["numbers wrong"][1].split()[0]) / 100, abs=1e-6)
    assert rows["numbers wrong"][0] == "10" and rows["digits misread, own crops"][0] == "30"  # lengths 1-5 in turn
    # Every digit in one corner-error bin; the bins' misreads add up to the table's.
    assert len(bins) == 6 and sum(int(v[0].replace(",", "")) for v in bins.values()) == 30
    for col, row in ((1, "digits misread, own crops"), (2, "digits misread, true crops")):
        misread = sum(int(v[col].strip(" |")) for v in bins.values())
        assert misread == pytest.approx(30 * float(rows[row][1].split()[0]) / 100, abs=0.01)  # % to 2 places
    pct = {k: float(v[1].split()[0]) for k, v in rows.items()}
    assert all(0 <= v <= 100 for v in pct.values())
    assert pct["numbers wrong"] >= pct["length wrong"] >= pct["length wrong, strip holds all"]
