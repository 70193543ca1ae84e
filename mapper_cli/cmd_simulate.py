"""``mapper simulate PROTOCOL``: serve simulated devices for the Device CRs given, so a mapper has a peer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    devices: list[tuple[DeviceResource, Path]] = []
    for loaded in report.documents:
        if (loaded.file, loaded.index) in bad:
            continue
        if is_kind(loaded.doc, "DeviceModel"):
            model = parse_model(loaded.doc)
            models[model.key] = model
        elif is_kind(loaded.doc, "Device"):
            devices.append((parse_device(loaded.doc), Path(loaded.file).parent))
    specs: list[DeviceSpec] = []
    motions: dict[str, str] = {}
    for device, folder in devices:
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
                motion = motion.strip()
                kind, _, rest = motion.partition(":")
                if kind == "replay" and rest and not Path(rest).is_absolute():
                    # A recorded file sits next to the CR that names it.
                    motion = f"replay:{folder / rest}"
                motions[f"{spec.namespace}/{spec.name}/{name.strip()}"] = motion
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
    if log_level is not LogLevel.debug:
        # pymodbus logs every request for a slave it does not serve (with a hex dump), a line per poll.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    if tcp and rtu:
        fail("give --tcp or --rtu, not both")
    specs, motions, problems = load_specs(files, "modbus")
    for line in problems:
        typer.echo(f"skipped: {line}", err=True)
    overrides: dict[str, str] = {}
    for item in motion or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            fail(f"--motion {item!r}: expected PROPERTY=KIND[:LOW:HIGH[:PERIOD]], e.g. temperature=sine:18:26:60")
        overrides[name] = text
    try:
        endpoints = build_endpoints(specs, motions, tcp=tcp, rtu=rtu, overrides=overrides)
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


@simulate_app.command("onvif")
def onvif(
    files: Annotated[
        list[Path], typer.Option("--file", "-f", help="Device (and DeviceModel) CR file or folder; repeatable.")
    ],
    rtsp_port: Annotated[
        int, typer.Option("--rtsp-port", help="Port of the RTSP server playing the test pattern (0: any free one).")
    ] = 8554,
    size: Annotated[str, typer.Option("--size", help="Stream size WIDTHxHEIGHT.")] = "640x480",
    fps: Annotated[int, typer.Option("--fps", help="Stream frame rate.")] = 25,
    ptz: Annotated[bool, typer.Option("--ptz/--no-ptz", help="Offer the PTZ service.")] = True,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="The cameras' password, instead of what each CR's password names."),
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log level.")] = LogLevel.info,
) -> None:
    """Simulate the ONVIF cameras of the CRs: one camera per device at its configData url (host:port), user
    userName, password from the file (or env:NAME) its password names; streams from one real RTSP server
    (GStreamer) playing a moving test pattern. Ctrl-C or SIGTERM stops it."""
    from mapper_framework.driver import ConfigError, parse_config
    from mappers.onvif.config import OnvifProtocolConfig
    from mappers.onvif.rtsp_server import RtspServerError, start_rtsp_server
    from mappers.onvif.simulator import CameraSpec, SimulatedCamera, serve_camera

    setup_logging(log_level)
    specs, _motions, problems = load_specs(files, "onvif")
    for line in problems:
        typer.echo(f"skipped: {line}", err=True)
    if not specs:
        fail(f"no ONVIF device to simulate in {', '.join(map(str, files))}. Hint: Device CRs with protocolName onvif")
    width, sep, height = size.partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        fail(f"--size {size!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    if fps <= 0:
        fail(f"--fps {fps}: must be > 0")
    shared_secret: str | None = None
    if password_file is not None:
        try:
            shared_secret = password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            fail(f"--password-file {password_file}: {exc.strerror or exc}. Hint: a file holding the password")
    cameras: list[tuple[str, CameraSpec]] = []
    taken: dict[tuple[str, int], str] = {}
    for spec in specs:
        where = f"device {spec}"
        try:
            config = parse_config(OnvifProtocolConfig, spec.protocol_data, f"{where} protocol")
            secret = shared_secret if shared_secret is not None else config.secret()
        except ConfigError as exc:
            fail(f"{where}: {exc}, or give --password-file FILE (one password for every simulated camera)")
            raise AssertionError from exc
        if (config.host, config.port) in taken:
            fail(f"{where}: url {config.address} is also the url of device {taken[config.host, config.port]}")
        taken[config.host, config.port] = str(spec)
        camera = CameraSpec(
            host=config.host,
            port=config.port,
            username=config.userName,
            password=secret,
            ptz=ptz,
            width=int(width),
            height=int(height),
            fps=fps,
            serial=f"SIM-{spec.name}"[:32],
        )
        cameras.append((str(spec), camera))
    try:
        rtsp = start_rtsp_server(rtsp_port, int(width), int(height), fps, ["/stream", "/sub"])
    except RtspServerError as exc:
        fail(str(exc))
        raise AssertionError from exc
    for name, camera in cameras:
        camera.rtsp_url, camera.sub_rtsp_url = rtsp.url_of("/stream"), rtsp.url_of("/sub")
        typer.echo(
            f"camera {name}: http://{camera.host}:{camera.port}/onvif/device_service user {camera.username!r}"
            f" (PTZ {'on' if camera.ptz else 'off'}) -> {camera.rtsp_url} ({size} H.264 {fps} fps)",
            err=True,
        )

    async def main() -> None:
        running: list[SimulatedCamera] = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            for _name, camera in cameras:
                running.append(await serve_camera(camera))
            typer.echo(f"serving {len(running)} camera(s); Ctrl-C to stop", err=True)
            await stop.wait()
        finally:
            for sim in running:
                await sim.close()

    try:
        asyncio.run(main())
    except OSError as exc:
        fail(f"cannot serve a camera: {exc}. Hint: another process may hold the port of a CR's url")
    finally:
        rtsp.close()
