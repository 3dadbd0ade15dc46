"""``stn-serve``: serve a model repository over HTTP. Every setting is a flag; flags override ``STN_*``.

The flags are ``service.settings.Settings`` itself, parsed by pydantic-settings (``CliApp``): a new setting
is one field there, and it is a flag (``--kebab-case``; booleans as ``--x`` / ``--no-x``) and an ``STN_X``
variable at once. With no arguments it serves the bundled repository (``service/model_repository``) on
http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError
from pydantic_settings import CliApp, CliSettingsSource, SettingsConfigDict

from service import __version__
from service.server import serve
from service.settings import Settings


class CliSettings(Settings):
    """The settings, read from the command line as well (it wins over the environment)."""

    model_config = SettingsConfigDict(
        {
            **Settings.model_config,
            "cli_prog_name": "stn-serve",
            "cli_kebab_case": True,
            "cli_implicit_flags": True,
            "cli_avoid_json": True,
            "cli_hide_none_type": True,
            "cli_exit_on_error": True,
        }
    )


def build_parser() -> argparse.ArgumentParser:
    envs = ", ".join(f"--{n.replace('_', '-')}: STN_{n.upper()}" for n in Settings.model_fields)
    parser = argparse.ArgumentParser(
        prog="stn-serve",
        description="Serve spatial transformer models (ONNX) over HTTP: /v1 image API, /v2 Open Inference "
        "Protocol, /metrics, and a demo page at /. Each flag overrides its STN_<NAME> environment variable.",
        epilog=f"Environment variables: {envs}.",
    )
    parser.add_argument("--version", action="version", version=f"stn-serve {__version__}")
    return parser


def parse_settings(argv: list[str] | None = None) -> Settings:
    """The settings from ``argv`` (default ``sys.argv[1:]``) over the environment; exits 2 on a bad flag
    (argparse's message) and raises ``ValidationError`` on a bad value."""
    args = sys.argv[1:] if argv is None else argv
    source: CliSettingsSource[argparse.ArgumentParser] = CliSettingsSource(CliSettings, root_parser=build_parser())
    return CliApp.run(CliSettings, cli_args=args, cli_settings_source=source)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except ValidationError as exc:
        print(f"stn-serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
