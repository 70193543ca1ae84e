"""``mapper get`` against a live agent's state folder: yaml, json and table output, and errors."""

from __future__ import annotations

import json
from typing import Any

import yaml
from typer.testing import CliRunner

from dmi.v1beta1 import api_pb2 as pb
from mapper_cli.main import app
from tests import crs
from tests.peers import twin

runner = CliRunner()


async def _populated(make_agent: Any) -> Any:
    h = await make_agent()
    crs.write(
        h.crs,
        "d.yaml",
        crs.model("thermo"),
        crs.model("thermo", namespace="plant"),
        crs.device("boiler-1", "thermo", desired="21"),
        crs.device("boiler-2", "thermo", namespace="plant"),
    )
    await h.agent.reload()
    await h.stub.ReportDeviceStatus(
        pb.ReportDeviceStatusRequest(
            deviceName="boiler-1",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[twin("temperature", "64"), twin("setpoint", "21", desired="21")]),
        )
    )
    await h.stub.ReportDeviceStates(
        pb.ReportDeviceStatesRequest(deviceName="boiler-1", deviceNamespace="default", state="ok")
    )
    await h.agent.settle()
    return h


async def test_get_device_yaml_is_the_cr(make_agent: Any) -> None:
    h = await _populated(make_agent)
    out = runner.invoke(app, ["get", "device", "boiler-1", "-o", "yaml", "--state-dir", str(h.agent.config.state_dir)])
    assert out.exit_code == 0, out.output
    doc = yaml.safe_load(out.output)
    assert doc["kind"] == "Device" and doc["metadata"]["name"] == "boiler-1"
    assert doc["spec"]["properties"][1]["desired"] == {"value": "21"}


async def test_get_devicestatus_shows_live_twins(make_agent: Any) -> None:
    h = await _populated(make_agent)
    out = runner.invoke(app, ["get", "devicestatus", "boiler-1", "--state-dir", str(h.agent.config.state_dir)])
    assert out.exit_code == 0, out.output
    doc = yaml.safe_load(out.output)
    assert doc["kind"] == "DeviceStatus" and doc["status"]["state"] == "ok"
    twins = {t["propertyName"]: t for t in doc["status"]["twins"]}
    assert twins["temperature"]["reported"]["value"] == "64"
    assert twins["setpoint"]["observedDesired"]["value"] == "21"
    out = runner.invoke(
        app, ["get", "devicestatuses", "-A", "-o", "json", "--state-dir", str(h.agent.config.state_dir)]
    )
    listed = json.loads(out.output)
    assert listed["kind"] == "List" and len(listed["items"]) == 2


async def test_get_devices_table_and_namespaces(make_agent: Any) -> None:
    h = await _populated(make_agent)
    state = str(h.agent.config.state_dir)
    out = runner.invoke(app, ["get", "devices", "--state-dir", state])
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "MODEL", "PROTOCOL", "STATE", "TWINS", "UPDATED"]
    assert "boiler-1" in out.output and "temperature=64" in out.output and "boiler-2" not in out.output
    out = runner.invoke(app, ["get", "devices", "-A", "--state-dir", state])
    assert "boiler-2" in out.output
    out = runner.invoke(app, ["get", "devices", "-n", "plant", "-o", "json", "--state-dir", state])
    assert [d["metadata"]["name"] for d in json.loads(out.output)["items"]] == ["boiler-2"]
    out = runner.invoke(app, ["get", "device", "boiler-1", "--state-dir", state])
    assert "PROPERTY" in out.output and "64" in out.output
    out = runner.invoke(app, ["get", "devicemodels", "--state-dir", state])
    assert "thermo" in out.output and "temperature, setpoint" in out.output


async def test_get_errors_are_clear(make_agent: Any, tmp_path: Any) -> None:
    h = await _populated(make_agent)
    out = runner.invoke(app, ["get", "device", "nope", "--state-dir", str(h.agent.config.state_dir)])
    assert out.exit_code == 1
    assert 'error: device "nope" not found in namespace "default". Hint: mapper get devices -A' in out.output
    out = runner.invoke(app, ["get", "devices", "--state-dir", str(tmp_path / "empty")])
    assert out.exit_code == 1 and "no agent state in" in out.output and "start the agent first" in out.output
    out = runner.invoke(app, ["get", "devices", "-o", "xml", "--state-dir", str(h.agent.config.state_dir)])
    assert out.exit_code == 2
