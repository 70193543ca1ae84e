"""A small driver for SDK tests (not shipped): a simulated device whose registers the test controls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmi.agent.app import Agent
from dmi.resources import ObjectKey
from mapper_framework.config import config_from_dict
from mapper_framework.device import DeviceSpec
from mapper_framework.driver import Driver
from mapper_framework.mapper import Mapper
from tests import crs


@dataclass
class Protocol:
    slaveID: int


@dataclass
class Visitor:
    offset: int = 0
    register: str = "HoldingRegister"


@dataclass
class FakeDevice:
    """The 'hardware': registers by offset, a write log, and a switch to make it fail."""

    registers: dict[int, Any] = field(default_factory=dict)
    writes: list[tuple[int, Any]] = field(default_factory=list)
    down: bool = False
    reads: int = 0


class FakeDriver(Driver[Protocol, Visitor]):
    protocol_config = Protocol
    visitor_config = Visitor

    def __init__(self, device: FakeDevice) -> None:
        self.device = device
        self.connected: Protocol | None = None
        self.closed = False

    async def connect(self, config: Protocol) -> None:
        self.connected = config

    async def read(self, visitor: Visitor) -> Any:
        if self.device.down:
            raise ConnectionError("device does not answer")
        self.device.reads += 1
        return self.device.registers.get(visitor.offset, 0)

    async def write(self, visitor: Visitor, value: Any) -> None:
        if self.device.down:
            raise ConnectionError("device does not answer")
        self.device.registers[visitor.offset] = value
        self.device.writes.append((visitor.offset, value))

    async def close(self) -> None:
        self.closed = True


class FakeFleet:
    """One FakeDevice per device name; the driver factory the Mapper is given."""

    def __init__(self) -> None:
        self.devices: dict[str, FakeDevice] = {}
        self.drivers: list[FakeDriver] = []

    def __call__(self, spec: DeviceSpec) -> FakeDriver:
        driver = FakeDriver(self.devices.setdefault(spec.name, FakeDevice()))
        self.drivers.append(driver)
        return driver


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def fast_device(name: str, desired: str | None = None) -> dict[str, Any]:
    props = [
        {
            "name": "temperature",
            "collectCycle": 50,
            "reportCycle": 100,
            "reportToCloud": True,
            "visitors": {"protocolName": "testproto", "configData": {"offset": 0}},
        },
        {
            "name": "setpoint",
            "collectCycle": 50,
            "reportCycle": 100,
            "reportToCloud": True,
            "visitors": {"protocolName": "testproto", "configData": {"offset": 1}},
            **({"desired": {"value": desired}} if desired is not None else {}),
        },
    ]
    return crs.device(name, "thermo", properties=props)


def stored(agent: Agent, device: str) -> dict[str, tuple[str | None, str | None]]:
    return {t.property: (t.reported_value, t.desired_value) for t in agent.store.twins(ObjectKey("default", device))}


async def start_fake_mapper(
    edgecore_sock: Path, sockdir: Path, probe_ms: int = 100, failures_offline: int = 3
) -> tuple[Mapper, FakeFleet]:
    """A "testproto" mapper of FakeDrivers registered with the agent at ``edgecore_sock``, quick to retry."""
    fleet = FakeFleet()
    config = config_from_dict(
        {
            "grpc_server": {"socket_path": str(sockdir / "testproto.sock")},
            "common": {
                "name": "test-mapper",
                "protocol": "testproto",
                "edgecore_sock": str(edgecore_sock),
                "http_port": "0",
            },
            "report": {"retry_initial_s": 0.05, "retry_max_s": 0.5},
            "state": {"probe_ms": probe_ms, "failures_offline": failures_offline},
        }
    )
    mapper = Mapper(config, fleet)
    await mapper.start()
    return mapper, fleet
