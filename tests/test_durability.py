"""Every acknowledged twin survives kill -9 of the agent (a real subprocess)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dmi.agent.status import StatusReader
from dmi.resources import ObjectKey
from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc
from tests import crs
from tests.agent_process import AgentProcess
from tests.peers import twin

DEVICES = 8


@pytest.fixture
def agent_proc(sockdir: Path, tmp_path: Path) -> Iterator[AgentProcess]:
    folder = tmp_path / "crs"
    folder.mkdir()
    crs.write(folder, "d.yaml", crs.model("thermo"), *(crs.device(f"dev-{i}", "thermo") for i in range(DEVICES)))
    proc = AgentProcess(sockdir / "dmi.sock", tmp_path / "state", folder, tmp_path / "agent.log")
    proc.start()
    yield proc
    proc.stop()


async def test_acknowledged_twins_survive_kill_9(agent_proc: AgentProcess) -> None:
    acked: dict[str, int] = {}
    sent: dict[str, int] = {}
    stop = asyncio.Event()

    async def client(i: int) -> None:
        name = f"dev-{i}"
        async with grpc.aio.insecure_channel(f"unix:{agent_proc.socket}") as channel:
            stub = api_pb2_grpc.DeviceManagerServiceStub(channel)
            seq = 0
            while not stop.is_set():
                seq += 1
                sent[name] = seq
                try:
                    await stub.ReportDeviceStatus(
                        pb.ReportDeviceStatusRequest(
                            deviceName=name,
                            deviceNamespace="default",
                            reportedDevice=pb.DeviceStatus(
                                twins=[twin("temperature", str(seq)), twin("setpoint", str(seq * 2))]
                            ),
                        ),
                        timeout=2,
                    )
                except grpc.aio.AioRpcError:
                    return  # the agent is gone
                acked[name] = seq

    clients = [asyncio.create_task(client(i)) for i in range(DEVICES)]
    await asyncio.sleep(1.5)
    agent_proc.kill9()  # mid-stream: requests in flight die with it
    stop.set()
    await asyncio.gather(*clients)
    assert sum(acked.values()) > 100, f"too few reports acknowledged before the kill: {acked}"

    agent_proc.start()  # same state folder
    reader = StatusReader(agent_proc.state_dir)
    for name, seq in acked.items():
        view = reader.device(ObjectKey("default", name))
        assert view is not None
        rows = {t.property: t.reported_value for t in view.twins}
        stored = int(rows["temperature"] or 0)
        # Never older than what was acknowledged; at most the one request that was in flight.
        assert seq <= stored <= sent[name], (name, seq, stored, sent[name])
        assert int(rows["setpoint"] or 0) == 2 * stored
    reader.close()

    # The restarted agent serves at once, with the same inventory.
    async with grpc.aio.insecure_channel(f"unix:{agent_proc.socket}") as channel:
        stub = api_pb2_grpc.DeviceManagerServiceStub(channel)
        await stub.ReportDeviceStates(
            pb.ReportDeviceStatesRequest(deviceName="dev-0", deviceNamespace="default", state="ok")
        )
    reader = StatusReader(agent_proc.state_dir)
    state = reader.device(ObjectKey("default", "dev-0"))
    assert state is not None and state.state is not None and state.state.state == "ok"
    reader.close()
