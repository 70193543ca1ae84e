"""Shared pieces of the CLI: logging, the embedded runtime folder, output formats."""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

RUNTIME_DIR = Path(".mapper")
SYSTEM_STATE_DIR = Path("/var/lib/kubeedge-mapper")


class Output(StrEnum):
    table = "table"
    yaml = "yaml"
    json = "json"


class PackingChoice(StrEnum):
    edgecore = "edgecore"
    typed = "typed"


class StatusTargetChoice(StrEnum):
    devicestatus = "devicestatus"
    device = "device"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def setup_logging(level: LogLevel | str = LogLevel.info) -> None:
    name = level.value if isinstance(level, LogLevel) else level
    logging.basicConfig(
        level=getattr(logging, name.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def default_state_dir() -> Path:
    """The embedded runtime folder of the working directory if there is one, else the system folder."""
    embedded = RUNTIME_DIR / "state"
    return embedded if (embedded / "agent.db").exists() else SYSTEM_STATE_DIR


def dump(obj: Any, output: Output) -> str:
    if output is Output.json:
        return json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` and exit with ``code``."""
    import typer

    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
