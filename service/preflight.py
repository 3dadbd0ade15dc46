"""Start-up checks ``stn-serve`` runs before it binds its port.

A server that can never serve anything should not come up at all: a missing or empty repository, a
``cuda`` provider without a GPU, or a repository none of whose models loads stops the process with one
clear error line and a non-zero exit, instead of a server that stays unready forever. A repository where
only some models are bad still starts: those models are reported not ready (``/v2/health/ready``,
``/v1/models``, the log) and the others are served.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from service.repository import scan_repository
from service.runtime import ModelRuntime, cuda_available
from service.settings import Settings


class StartupError(Exception):
    """Nothing can be served: the message says why, for one log line."""


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    # The trial load would log "loaded ..." once more than the real one.
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def preflight(settings: Settings) -> dict[str, str]:
    """Try every model of the repository once (CPU, one thread, session dropped at once).

    Returns ``{model: error}`` for the models that do not load; raises ``StartupError`` when none can be
    served.
    """
    if settings.provider == "cuda":
        ok, reason = cuda_available()
        if not ok:
            raise StartupError(f"provider cuda requested but {reason}")
    root = settings.model_repository
    try:
        entries = scan_repository(root)
    except FileNotFoundError as exc:
        raise StartupError(str(exc)) from None
    if not entries:
        raise StartupError(f"model repository {root} holds no <name>/<version>/model.onnx")
    problems: dict[str, str] = {}
    with _quiet("service.runtime"):
        for name, entry in entries.items():
            try:
                ModelRuntime(entry, "cpu", intra_op_threads=1).load()
            except Exception as exc:
                problems[name] = f"{type(exc).__name__}: {exc}"
    if len(problems) == len(entries):
        detail = "; ".join(f"{n}: {why}" for n, why in problems.items())
        raise StartupError(f"no model in {root} can be loaded: {detail}")
    return problems
