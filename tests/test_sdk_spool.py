"""Store-and-forward on disk: values kept while the agent is away survive a mapper restart and are delivered."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc
from mapper_framework.agent_client import AgentClient
from mapper_framework.config import MapperConfig, config_from_dict
from mapper_framework.register_answer import RegisterAnswer
from mapper_framework.twin_report import TwinReport
from tests.sdk_driver import until


class Recorder(api_pb2_grpc.DeviceManagerServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.twins: list[tuple[str, str, str, str]] = []
        self.states: list[tuple[str, str]] = []

    async def MapperRegister(self, request: Any, context: Any) -> pb.MapperRegisterResponse:
        return pb.MapperRegisterResponse()

    async def ReportDeviceStatus(self, request: Any, context: Any) -> pb.ReportDeviceStatusResponse:
        for t in request.reportedDevice.twins:
            self.twins.append((request.deviceName, t.propertyName, t.reported.value, t.reported.metadata["timestamp"]))
        return pb.ReportDeviceStatusResponse()

    async def ReportDeviceStates(self, request: Any, context: Any) -> pb.ReportDeviceStatesResponse:
        self.states.append((request.deviceName, request.state))
        return pb.ReportDeviceStatesResponse()


async def serve(socket: Path, recorder: Recorder) -> AsyncIterator[None]:
    server = grpc.aio.server()
    api_pb2_grpc.add_DeviceManagerServiceServicer_to_server(recorder, server)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    try:
        yield
    finally:
        await server.stop(0)


def config(sockdir: Path, spool: Path, limit: int = 100_000) -> MapperConfig:
    return config_from_dict(
        {
            "grpc_server": {"socket_path": str(sockdir / "m.sock")},
            "common": {"name": "m", "protocol": "p", "edgecore_sock": str(sockdir / "dmi.sock")},
            "report": {
                "retry_initial_s": 0.05,
                "retry_max_s": 0.2,
                "spool_file": str(spool),
                "spool_limit": limit,
                "spool_interval_s": 0.05,
            },
        },
        "test",
    )


async def nothing(_answer: RegisterAnswer) -> None:
    return None


async def test_values_kept_during_an_outage_survive_a_restart(sockdir: Path, tmp_path: Path) -> None:
    spool = tmp_path / "spool" / "outbox.json"
    first = AgentClient(config(sockdir, spool), nothing)
    first.outbox.put_twins(("default", "dev-a"), [TwinReport("temperature", "215", "int", 1111)])
    first.outbox.put_twins(("default", "dev-b"), [TwinReport("level", "7", "int", 2222, "9")])
    first.outbox.put_state(("default", "dev-a"), "online")
    first.start()
    await until(spool.exists, what="the spool file, written while the agent is away")
    first.outbox.put_twins(("default", "dev-a"), [TwinReport("temperature", "216", "int", 3333)])
    await first.close()  # a mapper restart: the last values are saved at shutdown
    saved = json.loads(spool.read_text())
    assert sorted(row[2:6] for row in saved["twins"]) == [
        ["level", "7", "int", 2222],
        ["temperature", "216", "int", 3333],
    ]
    assert saved["states"] == [["default", "dev-a", "online"]]

    second = AgentClient(config(sockdir, spool), nothing)
    assert second.outbox.depth == 3
    recorder = Recorder()
    async for _ in serve(sockdir / "dmi.sock", recorder):
        second.start()
        await until(lambda: len(recorder.twins) == 2 and recorder.states, what="the spooled values at the agent")
        await until(lambda: not spool.exists(), what="the spool file removed once delivered")
        await second.close()
    assert sorted(recorder.twins) == [("dev-a", "temperature", "216", "3333"), ("dev-b", "level", "7", "2222")]
    assert recorder.states == [("dev-a", "online")]


async def test_a_broken_spool_file_is_set_aside(
    sockdir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "outbox.json"
    spool.write_text("{not json")
    with caplog.at_level(logging.ERROR):
        client = AgentClient(config(sockdir, spool), nothing)
    assert client.outbox.depth == 0
    assert (tmp_path / "outbox.json.broken").read_text() == "{not json"
    assert "store-and-forward file" in caplog.text and "is unreadable" in caplog.text
    await client.close()


async def test_the_spool_is_bounded_and_says_so(
    sockdir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "outbox.json"
    client = AgentClient(config(sockdir, spool, limit=2), nothing)
    for i in range(5):
        client.outbox.put_twins(("default", f"dev-{i}"), [TwinReport("t", str(i), "int", 1000 + i)])
    with caplog.at_level(logging.WARNING):
        await client.close()
    kept = json.loads(spool.read_text())["twins"]
    assert sorted(row[3] for row in kept) == ["3", "4"]  # the newest
    assert "5 twin(s) pending, 2 kept on disk (report.spool_limit); the oldest 3" in caplog.text
    await asyncio.sleep(0)
