"""Real Modbus peers for tests: CR builders, free ports, a socat serial line, driver helpers."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmi.convert import device_to_proto, model_to_proto
from dmi.resources import parse_device, parse_model
from mapper_framework.device import DeviceSpec, device_spec
from mapper_framework.driver import parse_config
from mappers.modbus.config import ModbusProtocolConfig, ModbusVisitorConfig
from tests import crs


@dataclass
class Point:
    """One property: its model type and access, its visitor configData and an optional desired value."""

    name: str
    type: str
    visitor: dict[str, Any]
    access: str = "ReadOnly"
    desired: str | None = None
    minimum: str | None = None
    maximum: str | None = None


def docs(
    name: str,
    points: list[Point],
    protocol_config: dict[str, Any],
    cycle_ms: int = 1000,
    model_name: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A DeviceModel and a Device CR (as dicts) for a Modbus device."""
    model_name = model_name or f"{name}-model"
    model_props = []
    for p in points:
        prop: dict[str, Any] = {"name": p.name, "type": p.type, "accessMode": p.access}
        if p.minimum is not None:
            prop["minimum"] = p.minimum
        if p.maximum is not None:
            prop["maximum"] = p.maximum
        model_props.append(prop)
    device_props = []
    for p in points:
        entry: dict[str, Any] = {
            "name": p.name,
            "collectCycle": cycle_ms,
            "reportCycle": cycle_ms,
            "reportToCloud": True,
            "visitors": {"protocolName": "modbus", "configData": p.visitor},
        }
        if p.desired is not None:
            entry["desired"] = {"value": p.desired}
        device_props.append(entry)
    model = crs.model(model_name, protocol="modbus", properties=model_props)
    device = crs.device(name, model_name, protocol="modbus", properties=device_props)
    device["spec"]["protocol"]["configData"] = dict(protocol_config)
    device["spec"]["stateReport"] = {"reportCycle": cycle_ms, "reportToCloud": True}
    return model, device


def spec(model: dict[str, Any], device: dict[str, Any]) -> DeviceSpec:
    """What a mapper gets for these CRs from edgecore (every number packed as a float32)."""
    m = parse_model(model)
    return device_spec(device_to_proto(parse_device(device), m, packing="edgecore"), model_to_proto(m))


def typed(device_spec_: DeviceSpec) -> tuple[ModbusProtocolConfig, list[ModbusVisitorConfig]]:
    """The driver's typed configs, parsed as the SDK does."""
    protocol = parse_config(ModbusProtocolConfig, device_spec_.protocol_data, "protocol")
    visitors = [parse_config(ModbusVisitorConfig, p.visitor_data, p.name) for p in device_spec_.properties]
    return protocol, visitors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serial_line(folder: Path) -> Iterator[tuple[str, str]]:
    """A real serial line: a socat pty pair; yields the two ends' paths."""
    socat = shutil.which("socat")
    assert socat is not None, "socat is missing: `make test` installs it (Debian package socat)"
    a, b = folder / "tty-mapper", folder / "tty-device"
    proc = subprocess.Popen(
        [socat, "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not (a.exists() and b.exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"socat did not make the pty pair: {proc.stderr.read() if proc.stderr else ''!r}")
            time.sleep(0.02)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
