"""``serve(settings)``: logging set up, then uvicorn serving ``create_app(settings)`` until SIGINT/SIGTERM.

First ``preflight`` loads every model (once: the app serves those sessions): a repository that cannot
serve anything stops the process with one error line and exit status 1. On SIGTERM uvicorn stops
accepting connections and waits (up to ``graceful_timeout_s``) for in-flight requests to finish; then
the app's lifespan drains the batch queues and stops the inference threads.
With ``workers > 1`` each worker process builds its app from the environment, so the settings are
exported as ``STN_*`` variables first.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import uvicorn

from service.app import create_app
from service.logs import configure_logging
from service.preflight import StartupError, preflight
from service.settings import Settings

log = logging.getLogger(__name__)


def settings_to_env(settings: Settings) -> dict[str, str]:
    """``STN_*`` variables that rebuild ``settings`` in another process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if name == "api_token":
            value = settings.token
        elif isinstance(value, list):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"STN_{name.upper()}"] = str(value)
    return env


def serve(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; the exit status: 1 when the repository cannot serve anything (said in one
    log line, before the port is bound), 3 when the application fails to start, else 0."""
    configure_logging(settings.log_format, settings.log_level, settings.access_log)
    try:
        loaded = preflight(settings, keep=settings.workers == 1)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 1
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.graceful_timeout_s,
        "lifespan": "on",
        "server_header": False,
    }
    if settings.workers > 1:
        os.environ.update(settings_to_env(settings))
        uvicorn.run("service.app:create_app_from_env", factory=True, workers=settings.workers, **common)
    else:
        app = create_app(settings, freeze_gc=True, preloaded=loaded)
        uvicorn.run(app, **common)  # exits with status 3 itself if start-up fails
    return 0
