"""``mapper agent`` (the edge agent alone) and ``mapper up`` (the embedded stack, for demos and laptops)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from dmi.agent.app import Agent, AgentConfig, StatusTarget
from dmi.agent.ratelimit import parse_rate
from dmi.agent.status import StatusReader
from dmi.anypack import Packing
from dmi.sockets import DEFAULT_DMI_SOCKET, SocketInUseError
from mapper_cli.cmd_get import devices_table
from mapper_cli.common import (
    RUNTIME_DIR,
    SYSTEM_STATE_DIR,
    LogLevel,
    PackingChoice,
    StatusTargetChoice,
    fail,
    setup_logging,
)

log = logging.getLogger("mapper")

PackingOpt = Annotated[
    PackingChoice,
    typer.Option(
        "--packing",
        help="configData packing: 'edgecore' (numbers as FloatValue, like real edgecore) or 'typed' (Int64/Double).",
    ),
]
RateOpt = Annotated[
    str | None,
    typer.Option(
        "--rate-limit",
        help="Limit all DMI calls like edgecore does, RATE:BURST (edgecore: 1:100). Off by default.",
    ),
]
LogOpt = Annotated[LogLevel, typer.Option("--log-level", help="Log level.")]


def register(app: typer.Typer) -> None:
    app.command("agent")(agent)
    app.command("up")(up)


def _config(
    socket: Path,
    state_dir: Path,
    devices: Path | None,
    packing: str,
    rate_limit: str | None,
    status_target: str,
    poll: float,
    kubeconfig: Path | None = None,
    in_cluster: bool = False,
    node: str = "",
    status_budget: str = "600:1000",
    status_interval: float = 1.0,
    namespace: str = "",
) -> AgentConfig:
    if devices is not None and not devices.is_dir():
        fail(
            f"--devices {devices}: not a folder. "
            "Hint: point it at a folder of Device/DeviceModel YAML, e.g. crds/samples"
        )
    rate = None
    if rate_limit:
        try:
            rate = parse_rate(rate_limit)
        except ValueError as exc:
            fail(str(exc))
    if (kubeconfig is not None or in_cluster) and not node:
        node = os.environ.get("NODE_NAME", "")
        if not node:
            fail("--node NAME is needed with a cluster (or NODE_NAME in the environment, as the DaemonSet sets it)")
    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"--kubeconfig {kubeconfig}: no such file. Hint: the path of a kubeconfig, e.g. ~/.kube/config")
    try:
        qps, burst = parse_rate(status_budget)
    except ValueError as exc:
        fail(f"--status-budget: {exc}")
        raise AssertionError from exc
    pk: Packing = "typed" if packing == "typed" else "edgecore"
    target: StatusTarget = "device" if status_target == "device" else "devicestatus"
    return AgentConfig(
        socket=socket,
        state_dir=state_dir,
        devices_dir=devices,
        packing=pk,
        rate_limit=rate,
        status_target=target,
        poll_interval=poll,
        kubeconfig=kubeconfig,
        in_cluster=in_cluster,
        node=node,
        namespace=namespace,
        status_qps=qps,
        status_burst=burst,
        status_interval_s=status_interval,
    )


async def _run_until_signalled(
    agent: Agent, while_running: asyncio.Future[None] | None = None, socket_option: str = "--socket"
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.start()
    except SocketInUseError as exc:
        await agent.stop()
        # The socket comes from --socket for `mapper agent`, from --runtime-dir for `mapper up`.
        fail(str(exc).replace("--socket", socket_option))
    try:
        await stop.wait()
    finally:
        if while_running is not None:
            while_running.cancel()
        await agent.stop()


def agent(
    devices: Annotated[
        Path | None,
        typer.Option("--devices", "-d", help="Folder of DeviceModel/Device CR YAML, watched for changes."),
    ] = None,
    socket: Annotated[
        Path,
        typer.Option("--socket", help="DMI socket file, or a folder (socket <folder>/dmi.sock, as KubeEdge >= 1.23)."),
    ] = DEFAULT_DMI_SOCKET,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Where twins, states and mappers are kept.")
    ] = SYSTEM_STATE_DIR,
    packing: PackingOpt = PackingChoice.edgecore,
    rate_limit: RateOpt = None,
    status_target: Annotated[
        StatusTargetChoice,
        typer.Option("--status-target", help="devicestatus (KubeEdge >= 1.23) or device (.status of the Device)."),
    ] = StatusTargetChoice.devicestatus,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Seconds between checks of the CR folder.")
    ] = 1.0,
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", help="Take Devices and DeviceModels from this cluster; write status back."),
    ] = None,
    in_cluster: Annotated[
        bool, typer.Option("--in-cluster", help="The same with the pod's service account (the DaemonSet).")
    ] = False,
    node: Annotated[
        str, typer.Option("--node", help="This node's name: only Devices with this spec.nodeName are served.")
    ] = "",
    namespace: Annotated[
        str,
        typer.Option(
            "--namespace", help="Only this namespace's Devices and models (default: all, which needs a ClusterRole)."
        ),
    ] = "",
    status_budget: Annotated[
        str, typer.Option("--status-budget", help="Status writes to the cluster, QPS:BURST for all devices.")
    ] = "600:1000",
    status_interval: Annotated[
        float, typer.Option("--status-interval", help="At most one status write per device per this many seconds.")
    ] = 1.0,
    log_level: LogOpt = LogLevel.info,
) -> None:
    """Run the edge agent: the DMI DeviceManagerService that mappers register with (edgecore's role).

    With --kubeconfig (or --in-cluster) it also plays cloudcore's part for devices: this node's Devices and their
    models come from the cluster, and reported twins and state go to their DeviceStatus objects.
    """
    setup_logging(log_level)
    config = _config(
        socket, state_dir, devices, packing, rate_limit, status_target, poll_interval,
        kubeconfig, in_cluster, node, status_budget, status_interval, namespace,
    )  # fmt: skip
    asyncio.run(_run_until_signalled(Agent(config)))


def up(
    devices: Annotated[Path, typer.Option("--devices", "-d", help="Folder of DeviceModel/Device CR YAML.")] = Path(
        "crds/samples"
    ),
    runtime_dir: Annotated[
        Path, typer.Option("--runtime-dir", help="Folder for sockets, state and logs (kept between runs).")
    ] = RUNTIME_DIR,
    mappers: Annotated[
        bool, typer.Option("--mappers/--no-mappers", help="Start the shipped mappers (and simulators) too.")
    ] = True,
    http_port: Annotated[int, typer.Option("--http-port", help="REST API port of the first mapper.")] = 7777,
    refresh: Annotated[float, typer.Option("--refresh", help="Seconds between table refreshes.")] = 1.0,
    log_level: LogOpt = LogLevel.warning,
) -> None:
    """Run the embedded stack on this machine (no cluster): the agent on a CR folder, a mapper and a simulator
    for every protocol with a shipped one, and a live device table."""
    setup_logging(log_level)
    config = _config(runtime_dir / "dmi.sock", runtime_dir / "state", devices, "edgecore", None, "devicestatus", 1.0)
    console = Console(stderr=True)
    plan = stack_plan(devices, runtime_dir, http_port, log_level.value) if mappers else []

    for name, value in DEMO_SECRETS.items():
        os.environ.setdefault(name, value)  # the simulated camera and its mapper both read it

    async def main() -> None:
        agent_ = Agent(config)
        children = Children(runtime_dir / "logs")

        async def side() -> None:
            await agent_.started.wait()
            for name, argv in plan:
                await children.start(name, argv)
                await asyncio.sleep(0.3)  # a simulator listens before its mapper connects
            await _live_table(config.state_dir, refresh)

        side_task: asyncio.Future[None] = asyncio.ensure_future(side())
        try:
            await _run_until_signalled(agent_, side_task, socket_option="--runtime-dir")
        finally:
            await children.stop()

    console.print(
        f"[bold]kubeedge-mapper[/] embedded agent on [cyan]{config.socket}[/], devices from [cyan]{devices}[/]"
    )
    for name, _argv in plan:
        console.print(f"  starting {name} (log: {runtime_dir / 'logs' / (name + '.log')})")
    console.print("Ctrl-C to stop. Other terminal: mapper get devices / mapper get devicestatus NAME")
    asyncio.run(main())


# Protocols whose shipped mapper has a simulator ``mapper simulate PROTOCOL`` can start for the demo.
SIMULATED = ("modbus", "onvif")
# The demo camera's password: its sample CR reads it from this variable (in a cluster, a mounted Secret file).
DEMO_SECRETS = {"ONVIF_PASSWORD": "demo-password"}


def stack_plan(devices: Path, runtime_dir: Path, http_port: int, log_level: str) -> list[tuple[str, list[str]]]:
    """The child processes of ``mapper up``: per protocol in the folder with a shipped mapper, its simulator
    (when there is one) and the mapper itself."""
    from mapper_cli.cmd_run import SHIPPED_PROTOCOLS
    from mapper_cli.cmd_simulate import load_specs

    plan: list[tuple[str, list[str]]] = []
    me = [sys.executable, "-m", "mapper_cli.main"]
    port = http_port
    # The same REST port for the same mapper every time: modbus first (7777), then the others by name.
    for protocol in sorted(_protocols(devices), key=lambda p: (p != "modbus", p)):
        if protocol not in SHIPPED_PROTOCOLS:
            log.warning("no shipped mapper for protocol %s yet: its devices stay without one", protocol)
            continue
        if protocol in SIMULATED and load_specs([devices], protocol)[0]:
            plan.append(
                (f"{protocol}-simulator", [*me, "simulate", protocol, "-f", str(devices), "--log-level", log_level])
            )
        plan.append(
            (
                f"{protocol}-mapper",
                [
                    *me,
                    "run",
                    protocol,
                    "--name",
                    f"{protocol}-mapper",
                    "--socket",
                    str(runtime_dir / f"{protocol}-mapper.sock"),
                    "--edgecore-sock",
                    str(runtime_dir / "dmi.sock"),
                    "--http-port",
                    str(port),
                    "--log-level",
                    log_level,
                ],
            )
        )
        port += 1
    return plan


def _protocols(devices: Path) -> list[str]:
    from dmi.resources import is_kind
    from dmi.validate import validate_paths

    found: dict[str, None] = {}
    for loaded in validate_paths([devices]).documents:
        if is_kind(loaded.doc, "Device"):
            name = ((loaded.doc.get("spec") or {}).get("protocol") or {}).get("protocolName")
            if isinstance(name, str) and name:
                found[name] = None
    return list(found)


class Children:
    """Child processes of ``mapper up``, their output in log files, stopped (TERM, then KILL) together."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._procs: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, argv: list[str]) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log_dir / f"{name}.log", "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self._procs.append((name, proc))

    def find(self, name: str) -> asyncio.subprocess.Process | None:
        """The child started as ``name``, if any."""
        return next((proc for n, proc in self._procs if n == name), None)

    async def stop(self) -> None:
        for _name, proc in reversed(self._procs):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for name, proc in reversed(self._procs):
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                log.warning("%s did not stop in 10 s; killing it", name)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._procs.clear()


async def _live_table(state_dir: Path, refresh: float) -> None:
    """Redraw the device table; on a non-terminal, print it whenever it changes."""
    await asyncio.sleep(0.2)
    reader = StatusReader(state_dir)
    console = Console(width=200)
    try:
        if sys.stdout.isatty():
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    live.update(devices_table(reader.devices(None), title="devices"), refresh=True)
                    await asyncio.sleep(refresh)
        last = ""
        while True:
            with console.capture() as cap:
                console.print(devices_table(reader.devices(None)))
            text = cap.get()
            if text != last:
                print(text, flush=True)
                last = text
            await asyncio.sleep(refresh)
    finally:
        with contextlib.suppress(Exception):
            reader.close()
