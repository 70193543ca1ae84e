"""``mapper simulate PROTOCOL``: serve simulated devices for the Device CRs given, so a mapper has a peer."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer

from dmi.convert import device_to_proto, model_to_proto
from dmi.resources import DeviceModelResource, DeviceResource, ObjectKey, is_kind, parse_device, parse_model
from dmi.validate import validate_paths
from mapper_cli.common import LogLevel, fail, setup_logging
from mapper_framework.device import DeviceSpec, DeviceSpecError, device_spec

MOTION_ANNOTATION = "simulator.kubeedge-mapper.io/motion"

simulate_app = typer.Typer(
    name="simulate",
    help="Serve simulated devices described by Device CRs (for demos, tests and benchmarks).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(simulate_app)


def load_specs(paths: list[Path], protocol: str) -> tuple[list[DeviceSpec], dict[str, str], list[str]]:
    """The devices of ``protocol`` in ``paths`` as a mapper would receive them (model defaults merged).

    Returns the specs, the motions named by each device's annotation, and the problems found (one line each).
    """
    report = validate_paths(paths)
    problems = [str(issue) for issue in report.errors]
    bad = {(i.file, i.index) for i in report.errors}
    models: dict[ObjectKey, DeviceModelResource] = {}
    devices: list[DeviceResource] = []
    for loaded in report.documents:
        if (loaded.file, loaded.index) in bad:
            continue
        if is_kind(loaded.doc, "DeviceModel"):
            model = parse_model(loaded.doc)
            models[model.key] = model
        elif is_kind(loaded.doc, "Device"):
            devices.append(parse_device(loaded.doc))
    specs: list[DeviceSpec] = []
    motions: dict[str, str] = {}
    for device in devices:
        if device.protocol.protocol_name != protocol:
            continue
        found = models.get(ObjectKey(device.key.namespace, device.model_ref))
        try:
            spec = device_spec(
                device_to_proto(device, found, packing="typed"), model_to_proto(found) if found else None
            )
        except DeviceSpecError as exc:
            problems.append(str(exc))
            continue
        specs.append(spec)
        annotations = (device.document.get("metadata") or {}).get("annotations") or {}
        for item in str(annotations.get(MOTION_ANNOTATION, "")).split(","):
            name, sep, motion = item.partition("=")
            if sep and name.strip():
                motions[f"{spec.namespace}/{spec.name}/{name.strip()}"] = motion.strip()
    return specs, motions, problems


@simulate_app.command("modbus")
def modbus(
    files: Annotated[
        list[Path], typer.Option("--file", "-f", help="Device (and DeviceModel) CR file or folder; repeatable.")
    ],
    tcp: Annotated[
        str | None, typer.Option("--tcp", help="Serve every device on HOST:PORT instead of at its own ip:port.")
    ] = None,
    rtu: Annotated[
        str | None, typer.Option("--rtu", help="Serve every device on this serial port (the far end of the line).")
    ] = None,
    motion: Annotated[
        list[str] | None,
        typer.Option(
            "--motion",
            "-m",
            help="PROPERTY=KIND[:LOW:HIGH[:PERIOD]], KIND one of static, ramp, sine, walk, toggle. PROPERTY may be"
            " NAMESPACE/DEVICE/PROPERTY. Repeatable.",
        ),
    ] = None,
    pad: Annotated[int, typer.Option("--pad", help="Unused registers served as zeros between two properties.")] = 8,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log level.")] = LogLevel.info,
) -> None:
    """Simulate the Modbus devices of the CRs: one pymodbus server per address, one slave per device."""
    from mappers.modbus.simulator import SimulatorError, build_endpoints, serve

    setup_logging(log_level)
    if tcp and rtu:
        fail("give --tcp or --rtu, not both")
    specs, motions, problems = load_specs(files, "modbus")
    for line in problems:
        typer.echo(f"skipped: {line}", err=True)
    for item in motion or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            fail(f"--motion {item!r}: expected PROPERTY=KIND[:LOW:HIGH[:PERIOD]], e.g. temperature=sine:18:26:60")
        motions[name] = text
    try:
        endpoints = build_endpoints(specs, motions, tcp=tcp, rtu=rtu)
    except SimulatorError as exc:
        fail(str(exc))
        raise AssertionError from exc
    if not endpoints:
        fail(f"no Modbus device to simulate in {', '.join(map(str, files))}. Hint: Device CRs with protocolName modbus")
    for endpoint in endpoints:
        for slave in endpoint.slaves.values():
            typer.echo(f"{endpoint.kind} {endpoint.address} slave {slave.slave_id}: {slave.device}", err=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(serve(endpoints, pad))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    except SimulatorError as exc:
        fail(str(exc))
