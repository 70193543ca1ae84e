"""``mapper validate``: check DeviceModel, Device and DeviceStatus CRs before they reach a cluster or the agent."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from dmi.validate import Issue, ValidationReport, validate_paths
from mapper_cli.common import fail
from mapper_cli.driver_checks import driver_issues, merged


class ValidateOutput(StrEnum):
    text = "text"
    json = "json"


FilenameOpt = Annotated[
    list[Path],
    typer.Option(
        "--filename",
        "-f",
        help="A CR file or a folder of them (*.yaml, *.yml, *.json, searched recursively). Repeatable.",
        show_default=False,
    ),
]
OutputOpt = Annotated[ValidateOutput, typer.Option("--output", "-o", help="Output format.")]


def register(app: typer.Typer) -> None:
    """Add the ``validate`` command to ``app``."""
    app.command("validate")(validate)


def validate(filename: FilenameOpt, output: OutputOpt = ValidateOutput.text) -> None:
    """Validate device CRs against the v1beta1 CRD schemas and against each other.

    Every file is checked together with the others, so a Device's model must be
    among them. Devices of a shipped mapper (modbus, onvif, dht11) also have their
    configData checked by that mapper's own rules, and desired values against
    their property's type, minimum and maximum. Warnings (for example configData that real edgecore would not
    pass on unchanged) are shown but do not fail; any error exits with status 1.
    """
    for path in filename:
        if not path.exists():
            fail(f"{path} does not exist", code=2)
    report = validate_paths(filename)
    report = merged(report, driver_issues(report))
    if not report.documents and not report.issues:
        shown = ", ".join(map(str, filename))
        fail(f"no CR documents in {shown} (files *.yaml, *.yml, *.json). Hint: check the path, or -f FOLDER")
    if output is ValidateOutput.json:
        typer.echo(json.dumps(_as_json(report), indent=2))
    else:
        for issue in report.issues:
            typer.echo(issue.described())
        typer.echo(_summary(report))
    if not report.ok:
        raise typer.Exit(1)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _summary(report: ValidationReport) -> str:
    checked = f"{_plural(len(report.documents), 'document')} checked"
    if not report.issues:
        return f"{checked}: ok"
    return f"{checked}: {_plural(len(report.errors), 'error')}, {_plural(len(report.warnings), 'warning')}"


def _issue_json(issue: Issue) -> dict[str, Any]:
    return {
        "file": issue.file,
        "index": issue.index,
        "path": issue.path,
        "message": issue.message,
        "subject": issue.subject,
    }


def _as_json(report: ValidationReport) -> dict[str, Any]:
    return {
        "documents": len(report.documents),
        "errors": [_issue_json(i) for i in report.errors],
        "warnings": [_issue_json(i) for i in report.warnings],
    }
