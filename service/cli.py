"""``stn-serve``: serve a model repository over HTTP. Every setting is a flag; flags override ``STN_*``.

With no arguments it serves the bundled repository (``service/model_repository``) on http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, get_args

from pydantic import ValidationError

from service import __version__
from service.server import serve
from service.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stn-serve",
        description="Serve spatial transformer models (ONNX) over HTTP: /v1 image API, /v2 Open Inference "
        "Protocol, /metrics, and a demo page at /. Each flag overrides the STN_<NAME> variable.",
    )
    p.add_argument("--version", action="version", version=f"stn-serve {__version__}")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"STN_{name.upper()}"
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        if name == "api_token":
            default = None
        elif name == "model_repository":
            default = str(default)
        help_text = f"{field.description or name.replace('_', ' ')} [{env}; default {default!r}]"
        if field.annotation is bool:
            p.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        choices = get_args(field.annotation) or None
        if choices and not all(isinstance(c, str) for c in choices):
            choices = None
        p.add_argument(
            flag,
            dest=name,
            default=None,
            choices=choices,
            metavar=name.split("_")[-1].upper() if not choices else None,
            help=help_text,
        )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"stn-serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
