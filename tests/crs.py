"""Small CR documents for tests, written into a folder the agent watches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

API = "devices.kubeedge.io/v1beta1"


def model(
    name: str,
    protocol: str = "testproto",
    properties: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    props = (
        properties
        if properties is not None
        else [
            {
                "name": "temperature",
                "type": "INT",
                "accessMode": "ReadOnly",
                "visitors": {
                    "protocolName": protocol,
                    "configData": {"register": "HoldingRegister", "offset": 0},
                },
            },
            {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite"},
        ]
    )
    return {
        "apiVersion": API,
        "kind": "DeviceModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"protocol": protocol, "properties": props, **spec},
    }


def device(
    name: str,
    model_name: str,
    protocol: str = "testproto",
    desired: str | None = None,
    properties: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    **config: Any,
) -> dict[str, Any]:
    props = (
        properties
        if properties is not None
        else [
            {
                "name": "temperature",
                "collectCycle": 1000,
                "reportCycle": 1000,
                "reportToCloud": True,
                "visitors": {"protocolName": protocol, "configData": {"offset": 3}},
            },
            {
                "name": "setpoint",
                "collectCycle": 1000,
                "reportCycle": 1000,
                "reportToCloud": True,
                **({"desired": {"value": desired}} if desired is not None else {}),
            },
        ]
    )
    return {
        "apiVersion": API,
        "kind": "Device",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "deviceModelRef": {"name": model_name},
            "nodeName": "edge-1",
            "protocol": {"protocolName": protocol, "configData": {"slaveID": 1, **config}},
            "properties": props,
        },
    }


def write(folder: Path, filename: str, *docs: dict[str, Any]) -> Path:
    path = folder / filename
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.rename(path)  # atomic, as editors and ConfigMap updates are
    return path
