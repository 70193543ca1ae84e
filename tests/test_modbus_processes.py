"""The shipped Modbus mapper end to end, every part a real process.

``mapper agent`` watches a CR folder, ``mapper simulate modbus`` serves the devices of those CRs on
127.0.0.1, and ``mapper run modbus`` sits between them. The tests read the agent's store (what a cluster would
show), the simulator's registers (with a plain pymodbus client) and the mapper's ``/metrics``.

The simulator gets its own copy of the CRs, without the desired values: it starts a writable point at the
CR's desired value, so with the agent's folder a register at 215 would not show that the mapper wrote it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from dmi.agent.status import StatusReader
from dmi.agent.store import TwinRow
from dmi.resources import ObjectKey
from tests import crs
from tests.agent_process import AgentProcess
from tests.modbus_peers import Point, docs, free_port

ROOT = Path(__file__).resolve().parent.parent
CYCLE_MS = 1000
DEVICE = "modbus-a"  # slave 1: the four properties
OTHER = "modbus-b"  # slave 2 on the same port: for the removal test
PROPERTIES = ("temperature", "setpoint", "pump", "level")


def points(setpoint: str | None) -> list[Point]:
    return [
        Point(
            "temperature",
            "FLOAT",
            {"register": "HoldingRegister", "offset": 0, "dataType": "float", "limit": 1, "scale": 0.1},
        ),
        Point(
            "setpoint",
            "FLOAT",
            {"register": "HoldingRegister", "offset": 1, "dataType": "float", "limit": 1, "scale": 0.1},
            access="ReadWrite",
            desired=setpoint,
        ),
        Point("pump", "BOOLEAN", {"register": "CoilRegister", "offset": 0}, access="ReadWrite"),
        Point("level", "INT", {"register": "InputRegister", "offset": 0, "dataType": "uint16"}),
    ]


def other_points() -> list[Point]:
    return [Point("level", "INT", {"register": "InputRegister", "offset": 0, "dataType": "uint16"})]


def write_device(folder: Path, port: int, setpoint: str | None) -> None:
    config = {"ip": "127.0.0.1", "port": port, "slaveID": 1}
    crs.write(folder, f"{DEVICE}.yaml", *docs(DEVICE, points(setpoint), config, cycle_ms=CYCLE_MS))


def write_other(folder: Path, port: int) -> None:
    config = {"ip": "127.0.0.1", "port": port, "slaveID": 2}
    crs.write(folder, f"{OTHER}.yaml", *docs(OTHER, other_points(), config, cycle_ms=CYCLE_MS))


def _connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Simulator:
    """``mapper simulate modbus -f FOLDER``, restartable, logging (appending) to one file."""

    def __init__(self, folder: Path, port: int, log: Path) -> None:
        self.folder = folder
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 20.0) -> None:
        args = [sys.executable, "-m", "mapper_cli.main", "simulate", "modbus", "-f", str(self.folder)]
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [*args, "--log-level", "warning"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not _connectable(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"simulator not listening on {self.port} after {timeout}s:\n{self.log.read_text()}")
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Stack:
    tmp: Path
    crs: Path  # watched by the agent
    sim_crs: Path  # served by the simulator
    port: int  # the devices' Modbus TCP port
    http_port: int  # the mapper's REST API
    agent: AgentProcess
    sim: Simulator
    mapper: subprocess.Popen[bytes]

    @property
    def state_dir(self) -> Path:
        return self.agent.state_dir

    def logs(self) -> str:
        parts = []
        for name in ("agent.log", "simulator.log", "mapper.log"):
            path = self.tmp / name
            text = path.read_text(errors="replace") if path.exists() else "(none)"
            parts.append(f"===== {name} (last 4000 chars)\n{text[-4000:]}")
        return "\n".join(parts)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> float:
        """Poll ``predicate`` until true; returns the seconds it took. On timeout fails with every log."""
        start = time.monotonic()
        deadline = start + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")
            time.sleep(0.02)
        return time.monotonic() - start

    def check(self, ok: bool, what: str) -> None:
        assert ok, f"{what}\n{self.logs()}"


def view_twins(state_dir: Path, name: str) -> dict[str, TwinRow]:
    reader = StatusReader(state_dir)
    try:
        view = reader.device(ObjectKey("default", name))
        return {} if view is None else {t.property: t for t in view.twins}
    finally:
        reader.close()


def twins(state_dir: Path, name: str) -> dict[str, tuple[str | None, str | None]]:
    """(reported, observedDesired) per property, as the agent stored them."""
    return {p: (t.reported_value, t.desired_value) for p, t in view_twins(state_dir, name).items()}


def device_state(state_dir: Path, name: str) -> str | None:
    reader = StatusReader(state_dir)
    try:
        view = reader.device(ObjectKey("default", name))
        return None if view is None or view.state is None else view.state.state
    finally:
        reader.close()


def read_ms(state_dir: Path, name: str, prop: str) -> int:
    """When the mapper read the value the agent holds (the mapper's timestamp, not the agent's receipt)."""
    twin = view_twins(state_dir, name).get(prop)
    return int(twin.reported_meta.get("timestamp", "0")) if twin is not None else 0


def register(port: int, table: str, address: int, slave: int = 1) -> int:
    """One value read straight from the simulator, bypassing the mapper."""
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    try:
        assert client.connect(), f"cannot connect to the simulator on {port}"  # type: ignore[no-untyped-call]
        if table == "holding":
            response = client.read_holding_registers(address, count=1, device_id=slave)
            assert not response.isError(), response
            return int(response.registers[0])
        response = client.read_coils(address, count=1, device_id=slave)
        assert not response.isError(), response
        return int(response.bits[0])
    finally:
        client.close()  # type: ignore[no-untyped-call]


def metrics_text(http_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def gauge(text: str, name: str) -> int:
    found = re.search(rf"^{name} (\d+)$", text, re.MULTILINE)
    assert found is not None, f"{name} missing from /metrics:\n{text}"
    return int(found.group(1))


@dataclass
class LeakWatch:
    tasks: int  # the fewest tasks seen over one cycle
    rss: int  # bytes, at the end of that cycle
    samples: list[int]  # every task count seen


def leak_watch(http_port: int) -> LeakWatch:
    """``mapper_asyncio_tasks`` and ``process_resident_memory_bytes`` sampled over one cycle.

    A single sample can catch a flush in flight: ``AgentClient._flush`` gathers one task per device with a
    report queued, so a read at that instant shows up to +2 here (two devices). Those tasks live for one RPC;
    a leaked task lives on, so it is in every sample and the minimum over a cycle shows it.
    """
    samples, text = [], ""
    deadline = time.monotonic() + CYCLE_MS / 1000
    while time.monotonic() < deadline:
        text = metrics_text(http_port)
        samples.append(gauge(text, "mapper_asyncio_tasks"))
        time.sleep(0.05)
    return LeakWatch(min(samples), gauge(text, "process_resident_memory_bytes"), samples)


@pytest.fixture
def stack(sockdir: Path, tmp_path: Path) -> Iterator[Stack]:
    port, http_port = free_port(), free_port()
    folder, sim_folder = tmp_path / "crs", tmp_path / "sim-crs"
    folder.mkdir()
    sim_folder.mkdir()
    write_device(folder, port, setpoint="21.5")
    write_other(folder, port)
    write_device(sim_folder, port, setpoint=None)  # the register starts at 0, not at the desired value
    write_other(sim_folder, port)
    sim = Simulator(sim_folder, port, tmp_path / "simulator.log")
    agent = AgentProcess(sockdir / "dmi.sock", tmp_path / "state", folder, tmp_path / "agent.log")
    mapper: subprocess.Popen[bytes] | None = None
    log = (tmp_path / "mapper.log").open("wb")
    try:
        sim.start()
        # Precondition of the desired-value checks: the simulator does not start the setpoint at 215 itself.
        assert register(port, "holding", 1) == 0, sim.log.read_text()
        agent.start()
        mapper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mapper_cli.main",
                "run",
                "modbus",
                "--name",
                "modbus-mapper",
                "--socket",
                str(sockdir / "modbus.sock"),
                "--edgecore-sock",
                str(agent.socket),
                "--http-port",
                str(http_port),
                "--log-level",
                "info",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        yield Stack(tmp_path, folder, sim_folder, port, http_port, agent, sim, mapper)
    finally:
        code, hung = 0, False
        if mapper is not None:
            mapper.terminate()
            try:
                code = mapper.wait(timeout=15)
            except subprocess.TimeoutExpired:
                hung = True
                mapper.kill()
                code = mapper.wait()
        log.close()
        sim.stop()
        agent.stop()
    mapper_log = (tmp_path / "mapper.log").read_text(errors="replace")[-6000:]
    assert not hung, f"the mapper did not exit within 15 s of SIGTERM (killed):\n{mapper_log}"
    assert code == 0, f"the mapper exited with {code} on SIGTERM:\n{mapper_log}"


def all_reported(state_dir: Path) -> bool:
    found = twins(state_dir, DEVICE)
    return all(found.get(p, (None, None))[0] for p in PROPERTIES)


def test_values_flow_and_desired_values_reach_the_registers(stack: Stack) -> None:
    state = stack.state_dir
    # a. simulator -> mapper -> agent store, for every property and register table.
    took = stack.wait(lambda: all_reported(state), "reported values of all four properties in the agent's store")
    print(f"\nall four properties reported {took:.2f} s after the stack started")
    reported = twins(state, DEVICE)
    stack.check(float(reported["temperature"][0] or "nan") >= 0, f"temperature {reported['temperature']}")
    stack.check(reported["pump"][0] in ("true", "false"), f"pump {reported['pump']}")
    stack.check(str(reported["level"][0]).isdigit(), f"level {reported['level']}")
    stack.check(device_state(state, DEVICE) == "online", f"state {device_state(state, DEVICE)}")

    # b. the desired value of the CR was written to holding register 1 (the simulator started it at 0) ...
    stack.wait(lambda: register(stack.port, "holding", 1) == 215, "holding register 1 = 215 (desired 21.5)")
    stack.wait(lambda: twins(state, DEVICE)["setpoint"] == ("21.5", "21.5"), "setpoint reported/observed 21.5")
    # ... and an edit of the CR file is written too.
    write_device(stack.crs, stack.port, setpoint="23")
    took = stack.wait(lambda: register(stack.port, "holding", 1) == 230, "holding register 1 = 230 (desired 23)")
    print(f"desired 23 in the device register {took:.2f} s after the CR edit")
    stack.wait(lambda: twins(state, DEVICE)["setpoint"][1] == "23", "observedDesired of setpoint 23")
    stack.wait(lambda: twins(state, DEVICE)["setpoint"][0] == "23", "reported setpoint 23")
    stack.check(register(stack.port, "coil", 0) == 0, "pump has no desired value: its coil was not written")

    # e. removing one device's CR file stops that device only.
    stack.wait(lambda: bool(twins(state, OTHER).get("level", (None,))[0]), "modbus-b reported")
    (stack.crs / f"{OTHER}.yaml").unlink()
    stack.wait(lambda: twins(state, OTHER) == {}, "modbus-b gone from the agent")
    stack.wait(lambda: f'device="{OTHER}"' not in metrics_text(stack.http_port), "modbus-b gone from the mapper")
    since = int(time.time() * 1000)
    stack.wait(lambda: read_ms(state, DEVICE, "temperature") > since, "modbus-a still reporting after the removal")
    stack.check(device_state(state, DEVICE) == "online", "modbus-a still online")
    stack.check(stack.mapper.poll() is None, "the mapper is still running")


def outage(stack: Stack, round_: int) -> float:
    """Kill the simulator (-9), time how long until the agent shows the device offline, restart it, see values
    flow again. Returns the seconds from the kill to ``offline`` in the agent's store."""
    state = stack.state_dir
    stack.wait(lambda: device_state(state, DEVICE) == "online", f"online before outage {round_}")
    start = time.monotonic()
    stack.sim.kill9()
    stack.wait(lambda: device_state(state, DEVICE) == "offline", f"offline in outage {round_}", 10.0)
    offline_s = time.monotonic() - start
    print(f"outage {round_}: offline in the agent {offline_s:.2f} s after SIGKILL")
    stack.check(stack.mapper.poll() is None, f"the mapper died in outage {round_}")
    stack.check(
        offline_s <= 2 * CYCLE_MS / 1000 + 0.5, f"outage {round_}: offline after {offline_s:.2f} s (> 2 cycles + 0.5 s)"
    )
    restarted_ms = int(time.time() * 1000)
    stack.sim.start()
    back = time.monotonic()
    stack.wait(lambda: device_state(state, DEVICE) == "online", f"online again after outage {round_}")
    stack.wait(lambda: read_ms(state, DEVICE, "temperature") > restarted_ms, f"values again after outage {round_}")
    # The restarted device lost its set point (the simulator starts it at 0): the mapper writes the desired value
    # again once the device is back.
    stack.wait(lambda: register(stack.port, "holding", 1) == 215, f"desired value re-written after outage {round_}")
    print(f"outage {round_}: online with fresh values {time.monotonic() - back:.2f} s after the simulator restart")
    return offline_s


def test_simulator_killed_the_device_goes_offline_and_back_without_leaking(stack: Stack) -> None:
    state = stack.state_dir
    stack.wait(lambda: all_reported(state), "reported values of all four properties in the agent's store")
    # c. offline within two cycles of the kill, online with values once the simulator is back.
    offline = [outage(stack, 1)]
    # d. three outages: the mapper's tasks and memory stay flat (baseline after the first recovery).
    baseline = leak_watch(stack.http_port)
    offline += [outage(stack, 2), outage(stack, 3)]
    final = leak_watch(stack.http_port)
    print(
        f"offline after SIGKILL: {', '.join(f'{s:.2f} s' for s in offline)}\n"
        f"asyncio tasks {baseline.tasks} -> {final.tasks} (samples {sorted(set(baseline.samples))} -> "
        f"{sorted(set(final.samples))}); RSS {baseline.rss / 2**20:.2f} -> {final.rss / 2**20:.2f} MiB"
    )
    stack.check(final.tasks == baseline.tasks, f"asyncio tasks {baseline} -> {final}")
    grown = final.rss - baseline.rss
    stack.check(grown < 3 * 2**20, f"RSS grew {grown / 2**20:.2f} MiB: {baseline.rss} -> {final.rss}")
