from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from dmi.agent.app import Agent, AgentConfig
from dmi.v1beta1 import api_pb2_grpc
from tests import crs
from tests.peers import short_tmpdir
from tests.sdk_driver import fast_device, start_fake_mapper


@pytest.fixture
def sockdir() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


@dataclass
class AgentHarness:
    agent: Agent
    crs: Path
    stub: api_pb2_grpc.DeviceManagerServiceStub
    channel: grpc.aio.Channel
    sockdir: Path


@pytest.fixture
async def make_agent(sockdir: Path, tmp_path: Path) -> AsyncIterator[object]:
    """Start an in-process agent on a CR folder; returns a factory so tests can pre-fill the folder."""
    started: list[AgentHarness] = []

    async def factory(
        rate_limit: tuple[float, int] | None = None, status_target: str = "devicestatus", forget_after_s: float = 30.0
    ) -> AgentHarness:
        crs = tmp_path / "crs"
        crs.mkdir(exist_ok=True)
        config = AgentConfig(
            socket=sockdir / "dmi.sock",
            state_dir=tmp_path / "state",
            devices_dir=crs,
            poll_interval=0.1,
            rate_limit=rate_limit,
            call_timeout=2.0,
            status_target="device" if status_target == "device" else "devicestatus",
            forget_after_s=forget_after_s,
        )
        agent = Agent(config)
        await agent.start()
        channel = grpc.aio.insecure_channel(f"unix:{agent.socket_path}")
        harness = AgentHarness(agent, crs, api_pb2_grpc.DeviceManagerServiceStub(channel), channel, sockdir)
        started.append(harness)
        return harness

    yield factory
    for h in started:
        await h.channel.close()
        await h.agent.stop()


@pytest.fixture
async def stack(make_agent: Any, sockdir: Path) -> Any:
    h = await make_agent()
    crs.write(h.crs, "d.yaml", crs.model("thermo"), fast_device("dev-a", desired="21"), fast_device("dev-b"))
    await h.agent.reload()
    mapper, fleet = await start_fake_mapper(h.agent.socket_path, sockdir, failures_offline=2)
    yield h, mapper, fleet
    await mapper.stop()
