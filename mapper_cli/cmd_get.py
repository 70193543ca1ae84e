"""``mapper get``: devices, device statuses and models, as a cluster would show them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dmi.agent.status import DeviceView, NoAgentState, StatusReader
from dmi.resources import ObjectKey
from mapper_cli.common import Output, default_state_dir, dump, fail

get_app = typer.Typer(help="Show devices, device statuses and device models known to the agent.", no_args_is_help=True)

StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Agent state folder (default: ./.mapper/state if present, else /var/lib/kubeedge-mapper).",
    ),
]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")]
AllNsOpt = Annotated[bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="Output format.")]


def register(app: typer.Typer) -> None:
    app.add_typer(get_app, name="get")


def _reader(state_dir: Path | None) -> StatusReader:
    try:
        return StatusReader(state_dir or default_state_dir())
    except NoAgentState as exc:
        fail(str(exc))
        raise AssertionError from exc


def _as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    secs = max(0, int(time.time() - ms / 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def devices_table(views: list[DeviceView], title: str | None = None) -> Table:
    """The device summary table (also used by ``mapper up``)."""
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for col in ("NAMESPACE", "NAME", "MODEL", "PROTOCOL", "STATE", "TWINS", "UPDATED"):
        table.add_column(col)
    for v in views:
        spec = v.device.get("spec") or {}
        latest = max((t.reported_ms or 0 for t in v.twins), default=0) or None
        twins = ", ".join(f"{t.property}={t.reported_value}" for t in v.twins if t.reported_value is not None)
        table.add_row(
            v.key.namespace,
            v.key.name,
            (spec.get("deviceModelRef") or {}).get("name", ""),
            (spec.get("protocol") or {}).get("protocolName", ""),
            v.state.state if v.state else "-",
            twins or "-",
            _age(latest),
        )
    return table


def _twins_table(view: DeviceView) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("PROPERTY", "REPORTED", "OBSERVED-DESIRED", "TYPE", "UPDATED"):
        table.add_column(col)
    for t in view.twins:
        table.add_row(
            t.property,
            t.reported_value if t.reported_value is not None else "-",
            t.desired_value if t.desired_value is not None else "-",
            t.reported_meta.get("type", ""),
            _age(t.reported_ms),
        )
    return table


def _print(obj: Any, output: Output) -> None:
    typer.echo(dump(obj, output), nl=False)


@get_app.command("devices")
def get_devices(
    namespace: NamespaceOpt = "default",
    all_namespaces: AllNsOpt = False,
    output: OutputOpt = Output.table,
    state_dir: StateDirOpt = None,
) -> None:
    """List devices with their state and latest reported twins."""
    reader = _reader(state_dir)
    views = reader.devices(None if all_namespaces else namespace)
    if output is Output.table:
        if not views:
            typer.echo(f"No devices found in {'any namespace' if all_namespaces else namespace}.")
            return
        Console(width=200).print(devices_table(views))
        return
    _print(_as_list([v.device_doc() for v in views]), output)


def _one(state_dir: Path | None, name: str, namespace: str) -> DeviceView:
    reader = _reader(state_dir)
    view = reader.device(ObjectKey(namespace, name))
    if view is None:
        fail(f'device "{name}" not found in namespace "{namespace}". Hint: mapper get devices -A')
        raise AssertionError
    return view


@get_app.command("device")
def get_device(
    name: Annotated[str, typer.Argument(help="Device name.")],
    namespace: NamespaceOpt = "default",
    output: OutputOpt = Output.table,
    state_dir: StateDirOpt = None,
) -> None:
    """Show one Device CR (with its twins in the table view)."""
    view = _one(state_dir, name, namespace)
    if output is Output.table:
        console = Console(width=200)
        console.print(devices_table([view]))
        console.print()
        console.print(_twins_table(view))
        return
    _print(view.device_doc(), output)


@get_app.command("devicestatus")
def get_devicestatus(
    name: Annotated[str, typer.Argument(help="Device name (a DeviceStatus has its Device's name).")],
    namespace: NamespaceOpt = "default",
    output: OutputOpt = Output.yaml,
    state_dir: StateDirOpt = None,
) -> None:
    """Show a device's DeviceStatus (live twins, state, lastOnlineTime) as kubectl would."""
    view = _one(state_dir, name, namespace)
    if output is Output.table:
        Console(width=200).print(_twins_table(view))
        return
    _print(view.device_status(), output)


@get_app.command("devicestatuses")
def get_devicestatuses(
    namespace: NamespaceOpt = "default",
    all_namespaces: AllNsOpt = False,
    output: OutputOpt = Output.yaml,
    state_dir: StateDirOpt = None,
) -> None:
    """List DeviceStatus objects."""
    views = _reader(state_dir).devices(None if all_namespaces else namespace)
    if output is Output.table:
        Console(width=200).print(devices_table(views))
        return
    _print(_as_list([v.device_status() for v in views]), output)


@get_app.command("devicemodels")
def get_devicemodels(
    namespace: NamespaceOpt = "default",
    all_namespaces: AllNsOpt = False,
    output: OutputOpt = Output.table,
    state_dir: StateDirOpt = None,
) -> None:
    """List DeviceModel CRs."""
    models = [
        m
        for m in _reader(state_dir).models()
        if all_namespaces or (m.get("metadata") or {}).get("namespace", "default") == namespace
    ]
    if output is Output.table:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("NAMESPACE", "NAME", "PROTOCOL", "PROPERTIES"):
            table.add_column(col)
        for m in models:
            spec = m.get("spec") or {}
            table.add_row(
                (m.get("metadata") or {}).get("namespace", "default"),
                (m.get("metadata") or {}).get("name", ""),
                spec.get("protocol", ""),
                ", ".join(p.get("name", "") for p in spec.get("properties") or []),
            )
        Console(width=200).print(table)
        return
    _print(_as_list(models), output)
