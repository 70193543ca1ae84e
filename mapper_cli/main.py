"""Entry point of the ``mapper`` command.

Only the command being run is imported: ``mapper run`` on a Raspberry Pi should not pay for the agent,
the validator or the table renderer (several MB of resident memory each).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

COMMANDS = {
    "run": "mapper_cli.cmd_run",
    "agent": "mapper_cli.cmd_agent",
    "up": "mapper_cli.cmd_agent",
    "get": "mapper_cli.cmd_get",
    "validate": "mapper_cli.cmd_validate",
    "simulate": "mapper_cli.cmd_simulate",
    "new": "mapper_cli.cmd_new",
    "crds": "mapper_cli.cmd_crds",
    "ai": "mapper_cli.cmd_ai",
}


def build_app(only: str | None = None) -> typer.Typer:
    """The CLI with every command, or only the one named ``only``."""
    app = typer.Typer(
        name="mapper",
        help="KubeEdge device mappers in Python: run mappers and the edge agent, validate device CRs, inspect devices.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    # A callback keeps typer in command-group mode even when a single command is registered.
    app.callback()(_root)
    modules = [COMMANDS[only]] if only in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(module).register(app)
    return app


def _root() -> None:
    """KubeEdge device mappers in Python: run mappers and the edge agent, validate device CRs, inspect devices."""


def __getattr__(name: str) -> Any:
    # ``from mapper_cli.main import app`` (tests, embedding) gets the full CLI.
    if name == "app":
        return build_app()
    raise AttributeError(name)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else None
    build_app(command)(prog_name="mapper")


if __name__ == "__main__":
    main()
