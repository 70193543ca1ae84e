"""Entry point of the ``mapper`` command."""

from __future__ import annotations

import typer

from mapper_cli import cmd_agent, cmd_get, cmd_run, cmd_validate

app = typer.Typer(
    name="mapper",
    help="KubeEdge device mappers in Python: run mappers and the edge agent, validate device CRs, inspect devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cmd_validate.register(app)
cmd_agent.register(app)
cmd_get.register(app)
cmd_run.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
