"""Start-up checks ``stn-serve`` runs before it binds its port.

A server that can never serve anything should not come up at all: a missing or empty repository, a
``cuda`` provider without a GPU, or a repository none of whose models loads stops the process with one
clear error line and a non-zero exit, instead of a server that stays unready forever. A repository where
only some models are bad still starts: those models are reported not ready (``/v2/health/ready``,
``/v1/models``, the log) and the others are served.

Every model is loaded once: ``preflight`` creates the sessions the server will use (its provider, its
threads, on a thread at the inference threads' niceness, so that onnxruntime's own threads, created with
the session, inherit it) and hands them, and the errors of the models that failed, to ``create_app``,
whose data plane only warms them. With several worker processes each worker loads its own sessions from
the environment; the preflight then tries each model once on the CPU (one thread, dropped at once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

from service.batching import _renice
from service.repository import ModelEntry, scan_repository
from service.runtime import ModelRuntime, cuda_available
from service.settings import Settings

Loaded = dict[str, ModelRuntime | Exception]


class StartupError(Exception):
    """Nothing can be served: the message says why, for one log line."""


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    # A trial load would log "loaded ..." once more than the real one.
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def preflight(settings: Settings, keep: bool = True) -> Loaded:
    """Load every model of the repository once: ``{model: loaded ModelRuntime, or the exception its load
    raised}``. Raises ``StartupError`` when none can be served.

    ``keep``: the sessions are the server's (its provider and threads); else a trial load on the CPU (one
    thread) whose sessions are dropped.
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
    loaded: Loaded = {}

    def load(entry: ModelEntry) -> ModelRuntime | Exception:
        s = settings
        if keep:
            rt = ModelRuntime(entry, s.provider, s.intra_op_threads, s.cuda_device_id)
        else:
            rt = ModelRuntime(entry, "cpu", intra_op_threads=1)
        try:
            rt.load()
        except Exception as exc:
            return exc
        return rt

    with ThreadPoolExecutor(1, initializer=_renice, initargs=(settings.inference_nice,)) as pool:
        with nullcontext() if keep else _quiet("service.runtime"):
            for name, entry in entries.items():
                loaded[name] = pool.submit(load, entry).result()
    problems = {n: r for n, r in loaded.items() if isinstance(r, Exception)}
    if len(problems) == len(entries):
        detail = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in problems.items())
        raise StartupError(f"no model in {root} can be loaded: {detail}")
    return loaded if keep else {}
