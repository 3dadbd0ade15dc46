"""The tally of hostile cases tried, by kind, and the 5xx answers seen (printed at the end of the run by
``conftest.pytest_terminal_summary``; must stay 0)."""

from __future__ import annotations

from collections import Counter

TALLY: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()
SERVER_ERRORS: list[str] = []


def record(kind: str, status: int | None, what: str = "", allowed_5xx: tuple[int, ...] = ()) -> None:
    """Count one case of ``kind`` and the HTTP status it got (``None``: not an HTTP answer, e.g. a process
    that refused to start); a 5xx is a failure unless ``allowed_5xx`` names it (503 when shedding load)."""
    TALLY[kind] += 1
    if status is None:
        return
    STATUSES[status] += 1
    if status >= 500 and status not in allowed_5xx:
        SERVER_ERRORS.append(f"{kind}: {status} {what}")
