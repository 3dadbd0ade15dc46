"""Benchmark results files (``bench._load.write_results``): two results written in the same minute are both
kept, the second under a ``-2`` suffix, each with its table and its JSON."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bench import _load


class _Frozen(datetime):
    @classmethod
    def now(cls, tz: object = None) -> _Frozen:  # type: ignore[override]
        return cls(2026, 12, 7, 11, 39, tzinfo=timezone.utc)


def test_two_results_in_one_minute_are_both_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_load, "datetime", _Frozen)
    first = _load.write_results(tmp_path, "demo", "first\n", {"run": 1})
    second = _load.write_results(tmp_path, "demo", "second\n", {"run": 2})
    assert first.name == "demo_20261207-1139.md" and second.name == "demo_20261207-1139-2.md"
    assert first.read_text() == "first\n" and second.read_text() == "second\n"
    assert json.loads(second.with_suffix(".json").read_text()) == {"run": 2}
    assert json.loads(first.with_suffix(".json").read_text()) == {"run": 1}
