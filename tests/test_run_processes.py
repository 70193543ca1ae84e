"""`mapper agent` and `mapper run` as real processes: values, desired writes, removal, agent kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dmi.agent.status import StatusReader
from dmi.agent.store import connect, read_twins
from dmi.resources import ObjectKey
from tests import crs
from tests.agent_process import AgentProcess

ROOT = Path(__file__).resolve().parent.parent


def wait(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def file_device(name: str, device_file: Path, desired: str | None = None) -> dict[str, Any]:
    props = [
        {
            "name": "temperature",
            "collectCycle": 100,
            "reportCycle": 200,
            "reportToCloud": True,
            "visitors": {"protocolName": "filedev", "configData": {"offset": 0}},
        },
        {
            "name": "setpoint",
            "collectCycle": 100,
            "reportCycle": 200,
            "reportToCloud": True,
            "visitors": {"protocolName": "filedev", "configData": {"offset": 1}},
            **({"desired": {"value": desired}} if desired is not None else {}),
        },
    ]
    dev = crs.device(name, "thermo", protocol="filedev", properties=props)
    dev["spec"]["protocol"]["configData"] = {"file": str(device_file)}
    return dev


def set_registers(path: Path, **values: Any) -> None:
    data = {"registers": {str(k[1:]): v for k, v in values.items()}, "down": False}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.rename(path)


def twins(state_dir: Path, name: str) -> dict[str, tuple[str | None, str | None]]:
    reader = StatusReader(state_dir)
    try:
        view = reader.device(ObjectKey("default", name))
        return {} if view is None else {t.property: (t.reported_value, t.desired_value) for t in view.twins}
    finally:
        reader.close()


@pytest.fixture
def processes(sockdir: Path, tmp_path: Path) -> Iterator[Any]:
    folder = tmp_path / "crs"
    folder.mkdir()
    dev_a, dev_b = tmp_path / "dev-a.json", tmp_path / "dev-b.json"
    set_registers(dev_a, r0=215, r1=0)
    set_registers(dev_b, r0=180, r1=0)
    crs.write(
        folder,
        "d.yaml",
        crs.model("thermo", protocol="filedev"),
        file_device("dev-a", dev_a, desired="21"),
        file_device("dev-b", dev_b),
    )
    agent = AgentProcess(sockdir / "dmi.sock", tmp_path / "state", folder, tmp_path / "agent.log")
    agent.start()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "grpc_server": {"socket_path": str(sockdir / "filedev.sock")},
                "common": {
                    "name": "filedev-mapper",
                    "protocol": "filedev",
                    "edgecore_sock": str(agent.socket),
                    "http_port": "0",
                },
                "report": {"retry_initial_s": 0.1, "retry_max_s": 1.0},
            }
        )
    )
    log = (tmp_path / "mapper.log").open("wb")
    mapper = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mapper_cli.main",
            "run",
            "-c",
            str(config),
            "--driver",
            "tests.file_driver:FileDriver",
            "--log-level",
            "info",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield agent, mapper, folder, dev_a, dev_b, tmp_path
    finally:
        mapper.terminate()
        try:
            code = mapper.wait(timeout=15)
        except subprocess.TimeoutExpired:
            mapper.kill()
            code = mapper.wait()
        log.close()
        agent.stop()
        assert code == 0, (tmp_path / "mapper.log").read_text()[-3000:]


def test_values_desired_and_removal_across_real_processes(processes: Any) -> None:
    agent, mapper, folder, dev_a, dev_b, _ = processes
    state = agent.state_dir
    wait(lambda: twins(state, "dev-a").get("temperature", (None,))[0] == "215", what="dev-a temperature")
    wait(lambda: twins(state, "dev-b").get("temperature", (None,))[0] == "180", what="dev-b temperature")
    # The desired value in the CR reached the driver's write and came back as observedDesired.
    wait(lambda: twins(state, "dev-a").get("setpoint", (None, None))[1] == "21", what="observedDesired 21")
    writes = [json.loads(x) for x in dev_a.with_suffix(".writes").read_text().splitlines()]
    assert writes == [{"offset": 1, "value": 21}]
    # Edit the desired value in the CR file.
    crs.write(
        folder,
        "d.yaml",
        crs.model("thermo", protocol="filedev"),
        file_device("dev-a", dev_a, desired="24"),
        file_device("dev-b", dev_b),
    )
    wait(lambda: twins(state, "dev-a").get("setpoint", (None, None))[1] == "24", what="observedDesired 24")
    assert json.loads(dev_a.with_suffix(".writes").read_text().splitlines()[-1]) == {"offset": 1, "value": 24}
    # Remove dev-b: its values stop moving, dev-a's go on.
    crs.write(folder, "d.yaml", crs.model("thermo", protocol="filedev"), file_device("dev-a", dev_a, desired="24"))
    time.sleep(1.0)
    set_registers(dev_b, r0=999, r1=0)
    set_registers(dev_a, r0=216, r1=24)
    wait(lambda: twins(state, "dev-a").get("temperature", (None,))[0] == "216", what="dev-a still reporting")
    time.sleep(0.5)
    # dev-b is gone from the agent's view, and its new register value was never reported (its stored twins go after
    # the agent's grace time, 30 s: tests/test_dispatch.py shows that).
    assert twins(state, "dev-b") == {}
    conn = connect(state / "agent.db", readonly=True)
    assert "999" not in {t.reported_value for t in read_twins(conn, ObjectKey("default", "dev-b"))}
    assert {t.property: t.reported_value for t in read_twins(conn, ObjectKey("default", "dev-a"))}[
        "temperature"
    ] == "216"
    conn.close()
    assert mapper.poll() is None


def test_agent_kill_9_the_mapper_reregisters_and_delivers_what_it_collected(processes: Any) -> None:
    agent, mapper, _, dev_a, dev_b, tmp = processes
    state = agent.state_dir
    wait(lambda: twins(state, "dev-a").get("temperature", (None,))[0] == "215", what="first value")
    agent.kill9()
    set_registers(dev_a, r0=301, r1=21)
    set_registers(dev_b, r0=302, r1=0)
    time.sleep(1.0)  # the mapper collects on while the agent is gone
    assert mapper.poll() is None
    agent.start()
    wait(lambda: twins(state, "dev-a").get("temperature", (None,))[0] == "301", what="dev-a after restart")
    wait(lambda: twins(state, "dev-b").get("temperature", (None,))[0] == "302", what="dev-b after restart")
    log = (tmp / "mapper.log").read_text()
    assert log.count("registered with the agent") >= 2
