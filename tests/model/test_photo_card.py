"""The photo model's card: its measured limitations come from the file named on the command line."""

from __future__ import annotations

import json
from pathlib import Path

from model import photo_card

BUNDLED = Path(__file__).resolve().parents[2] / "service" / "model_repository" / "stn_photo" / "card.json"


def _limits(md: str) -> str:
    return md.split("## Known limitations", 1)[1].split("## Data", 1)[0].strip()


def test_limitations_come_from_the_file_before_the_shared_ones() -> None:
    card = json.loads(BUNDLED.read_text())
    card.update(limitations="- Misreads sevens on blue paper (measured).\n",
                limitations_file="model/configs/x.limitations.md")
    md = photo_card.render(card)
    section = _limits(md)
    assert section.startswith("- Misreads sevens on blue paper (measured).\n- One digit per photo")
    assert "--limitations model/configs/x.limitations.md && make export-photo" in md


def test_without_a_file_only_the_shared_limitations() -> None:
    card = json.loads(BUNDLED.read_text())
    card.pop("limitations", None)
    card.pop("limitations_file", None)
    md = photo_card.render(card)
    assert _limits(md).startswith("- One digit per photo")
    assert "--limitations" not in md
