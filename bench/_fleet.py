"""Shared set-up of the SDK benchmarks: CR folders, the agent and a mapper as real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
API = "devices.kubeedge.io/v1beta1"


def write_fleet(folder: Path, devices: int, properties: int, cycle_ms: int, protocol: str = "bench") -> None:
    props = [{"name": f"p{i}", "type": "INT", "accessMode": "ReadOnly"} for i in range(properties)]
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": API,
            "kind": "DeviceModel",
            "metadata": {"name": "bench-model", "namespace": "default"},
            "spec": {"protocol": protocol, "properties": props},
        }
    ]
    for d in range(devices):
        docs.append(
            {
                "apiVersion": API,
                "kind": "Device",
                "metadata": {"name": f"dev-{d}", "namespace": "default"},
                "spec": {
                    "deviceModelRef": {"name": "bench-model"},
                    "nodeName": "edge",
                    "protocol": {"protocolName": protocol, "configData": {"slaveID": d % 247}},
                    "properties": [
                        {
                            "name": f"p{i}",
                            "collectCycle": cycle_ms,
                            "reportCycle": cycle_ms,
                            "reportToCloud": True,
                            "visitors": {"protocolName": protocol, "configData": {"offset": i}},
                        }
                        for i in range(properties)
                    ],
                },
            }
        )
    (folder / "fleet.yaml").write_text(yaml.safe_dump_all(docs))


def start_agent(work: Path, crs: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mapper_cli.main",
            "agent",
            "--socket",
            str(work / "dmi.sock"),
            "--state-dir",
            str(work / "state"),
            "--devices",
            str(crs),
            "--log-level",
            "error",
        ],
        cwd=ROOT,
    )


def start_mapper(work: Path, protocol: str = "bench", rest: bool = False) -> subprocess.Popen[bytes]:
    config = work / "mapper.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "grpc_server": {"socket_path": str(work / f"{protocol}.sock")},
                "common": {
                    "name": f"{protocol}-mapper",
                    "protocol": protocol,
                    "edgecore_sock": str(work / "dmi.sock"),
                    "http_port": "0",
                },
                "rest": {"enabled": rest},
            }
        )
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mapper_cli.main",
            "run",
            "-c",
            str(config),
            "--driver",
            "bench._drivers:CounterDriver",
            "--log-level",
            "error",
        ],
        cwd=ROOT,
    )
