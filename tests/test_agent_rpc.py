"""DeviceManagerService of the agent over a real gRPC channel on a Unix socket."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest

from dmi.agent.app import Agent, AgentConfig
from dmi.agent.status import StatusReader
from dmi.anypack import unpack_map
from dmi.resources import ObjectKey
from dmi.sockets import SocketInUseError
from dmi.v1beta1 import api_pb2 as pb
from tests import crs
from tests.peers import register_request, serve_mapper, twin


async def _agent_with_devices(make_agent: Any, n: int = 3) -> Any:
    h = await make_agent()
    docs: list[dict[str, Any]] = [crs.model("thermo")]
    docs += [crs.device(f"dev-{i}", "thermo") for i in range(n)]
    docs += [crs.model("cam", protocol="other"), crs.device("cam-1", "cam", protocol="other")]
    crs.write(h.crs, "devices.yaml", *docs)
    await h.agent.reload()
    return h


async def test_register_answers_devices_of_the_protocol_with_one_model_each(make_agent: Any, sockdir: Path) -> None:
    h = await _agent_with_devices(make_agent, 5)
    answer = await h.stub.MapperRegister(register_request("test-mapper", "testproto", str(sockdir / "m.sock")))
    names = sorted(d.name for d in answer.deviceList)
    assert names == [f"dev-{i}" for i in range(5)]
    assert len(answer.modelList) == len(answer.deviceList)
    for device, model in zip(answer.deviceList, answer.modelList, strict=True):
        assert device.spec.deviceModelReference == model.name == "thermo"
        assert device.spec.protocol.protocolName == "testproto"
    # The model's visitor was merged under the device's: offset overridden by the device, register kept.
    temp = next(p for p in answer.deviceList[0].spec.properties if p.name == "temperature")
    assert unpack_map(temp.visitors.configData.data) == {"register": "HoldingRegister", "offset": 3.0}
    other = await h.stub.MapperRegister(register_request("cam-mapper", "other", str(sockdir / "c.sock")))
    assert [d.name for d in other.deviceList] == ["cam-1"]


async def test_register_without_data_answers_empty(make_agent: Any, sockdir: Path) -> None:
    h = await _agent_with_devices(make_agent)
    answer = await h.stub.MapperRegister(register_request("m", "testproto", str(sockdir / "m.sock"), with_data=False))
    assert len(answer.deviceList) == 0 and len(answer.modelList) == 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.MapperRegisterRequest(withData=True), "has no mapper"),
        (
            pb.MapperRegisterRequest(withData=True, mapper=pb.MapperInfo(name="m", protocol="")),
            "protocol is empty",
        ),
        (
            pb.MapperRegisterRequest(withData=True, mapper=pb.MapperInfo(name="", protocol="p")),
            "name is empty",
        ),
        (
            pb.MapperRegisterRequest(withData=True, mapper=pb.MapperInfo(name="m", protocol="p", address=b"\xff\xfe")),
            "not UTF-8",
        ),
    ],
)
async def test_register_rejects_bad_requests(make_agent: Any, request_: Any, message: str) -> None:
    h = await make_agent()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.MapperRegister(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


async def test_second_registration_of_a_mapper_replaces_the_first(make_agent: Any, sockdir: Path) -> None:
    h = await _agent_with_devices(make_agent)
    await h.stub.MapperRegister(register_request("m", "testproto", str(sockdir / "a.sock")))
    await h.stub.MapperRegister(register_request("m", "testproto", str(sockdir / "b.sock")))
    links = h.agent.dispatcher.links()
    assert links["testproto"].record.address == str(sockdir / "b.sock")
    mappers = h.agent.store.mappers()
    assert [(m.name, m.address) for m in mappers] == [("m", str(sockdir / "b.sock"))]


async def test_report_status_merges_twins_into_the_store(make_agent: Any) -> None:
    h = await _agent_with_devices(make_agent)
    await h.stub.ReportDeviceStatus(
        pb.ReportDeviceStatusRequest(
            deviceName="dev-0",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[twin("temperature", "215"), twin("setpoint", "20", desired="20")]),
        )
    )
    # A later report of one twin leaves the other as it was; an empty observedDesired keeps the old one.
    await h.stub.ReportDeviceStatus(
        pb.ReportDeviceStatusRequest(
            deviceName="dev-0",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[twin("setpoint", "21")]),
        )
    )
    rows = {r.property: r for r in h.agent.store.twins(ObjectKey("default", "dev-0"))}
    assert rows["temperature"].reported_value == "215"
    assert rows["temperature"].reported_meta == {"type": "int", "timestamp": "1"}
    assert rows["setpoint"].reported_value == "21"
    assert rows["setpoint"].desired_value == "20"


async def test_report_status_errors(make_agent: Any) -> None:
    h = await _agent_with_devices(make_agent)

    async def refused(req: pb.ReportDeviceStatusRequest) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.ReportDeviceStatus(req)
        return err.value.code(), err.value.details() or ""

    def req(
        name: str = "dev-0", ns: str = "default", twins: list[pb.Twin] | None = None
    ) -> pb.ReportDeviceStatusRequest:
        return pb.ReportDeviceStatusRequest(
            deviceName=name, deviceNamespace=ns, reportedDevice=pb.DeviceStatus(twins=twins or [])
        )

    code, msg = await refused(req())
    assert (code, msg) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ReportDeviceStatusRequest does not have twin data",
    )
    code, msg = await refused(req(name="nope", twins=[twin("temperature", "1")]))
    assert code == grpc.StatusCode.NOT_FOUND and "device default/nope is not known" in msg
    code, msg = await refused(req(ns="factory", twins=[twin("temperature", "1")]))
    assert code == grpc.StatusCode.NOT_FOUND and "factory/dev-0" in msg
    code, msg = await refused(req(twins=[twin("pressure", "1")]))
    assert code == grpc.StatusCode.NOT_FOUND and "has no property 'pressure'" in msg
    code, msg = await refused(req(twins=[twin("temperature", "-3.5e+2")]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not match ^[a-zA-Z0-9-_.,:/@#]{1,512}$" in msg
    code, msg = await refused(req(twins=[twin("temp erature", "1")]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "propertyName 'temp erature'" in msg
    no_desired = pb.Twin(propertyName="temperature", reported=pb.TwinProperty(value="1"))
    code, msg = await refused(req(twins=[no_desired]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "has no observedDesired" in msg
    no_reported = pb.Twin(propertyName="temperature", observedDesired=pb.TwinProperty())
    code, msg = await refused(req(twins=[no_reported]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "has no reported" in msg
    # Nothing of the refused requests reached the store.
    assert h.agent.store.twins(ObjectKey("default", "dev-0")) == []


async def test_report_states_and_last_online_time(make_agent: Any) -> None:
    h = await _agent_with_devices(make_agent)
    key = ObjectKey("default", "dev-1")
    await h.stub.ReportDeviceStates(
        pb.ReportDeviceStatesRequest(deviceName="dev-1", deviceNamespace="default", state="OK")
    )
    first = h.agent.store.state(key)
    assert first is not None and first.state == "OK"  # matched case-insensitively, stored verbatim
    assert first.last_online_time and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first.last_online_time)
    await h.stub.ReportDeviceStates(
        pb.ReportDeviceStatesRequest(deviceName="dev-1", deviceNamespace="default", state="offline")
    )
    second = h.agent.store.state(key)
    assert second is not None and second.state == "offline"
    assert second.last_online_time == first.last_online_time  # unchanged in DeviceStatus

    for bad, code, text in [
        (
            pb.ReportDeviceStatesRequest(deviceName="", state="ok"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid data",
        ),
        (
            pb.ReportDeviceStatesRequest(deviceName="dev-1", state=""),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid data",
        ),
        (
            pb.ReportDeviceStatesRequest(deviceName="dev-1", state="disconnected"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "report 'offline'",
        ),
        (
            pb.ReportDeviceStatesRequest(deviceName="ghost", state="ok"),
            grpc.StatusCode.NOT_FOUND,
            "not known",
        ),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.ReportDeviceStates(bad)
        assert err.value.code() == code and text in (err.value.details() or "")


async def test_status_store_renders_devicestatus_like_a_cluster(make_agent: Any) -> None:
    h = await _agent_with_devices(make_agent)
    await h.stub.ReportDeviceStatus(
        pb.ReportDeviceStatusRequest(
            deviceName="dev-2",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[twin("temperature", "19", meta={"type": "int", "timestamp": "5"})]),
        )
    )
    await h.stub.ReportDeviceStates(
        pb.ReportDeviceStatesRequest(deviceName="dev-2", deviceNamespace="default", state="online")
    )
    await h.agent.settle()
    reader = StatusReader(h.agent.config.state_dir)
    view = reader.device(ObjectKey("default", "dev-2"))
    assert view is not None
    status = view.device_status()
    assert status["kind"] == "DeviceStatus" and status["metadata"]["ownerReferences"][0]["kind"] == "Device"
    (t,) = status["status"]["twins"]
    assert t["propertyName"] == "temperature" and t["reported"]["value"] == "19"
    # Like a real cluster: receive time in ms and type "string", not the mapper's metadata.
    assert t["reported"]["metadata"]["type"] == "string"
    assert int(t["reported"]["metadata"]["timestamp"]) > 1_600_000_000_000
    assert status["status"]["state"] == "online" and "lastOnlineTime" in status["status"]
    # v1.23 layout: the Device itself carries no twins.
    assert "twins" not in (view.device_doc().get("status") or {})
    reader.close()


async def test_status_target_device_puts_twins_in_device_status(make_agent: Any) -> None:
    h = await make_agent(status_target="device")
    crs.write(h.crs, "d.yaml", crs.model("thermo"), crs.device("dev-0", "thermo"))
    await h.agent.reload()
    await h.stub.ReportDeviceStatus(
        pb.ReportDeviceStatusRequest(
            deviceName="dev-0",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[twin("temperature", "7")]),
        )
    )
    await h.agent.settle()
    reader = StatusReader(h.agent.config.state_dir)
    view = reader.device(ObjectKey("default", "dev-0"))
    assert view is not None
    assert view.device_doc()["status"]["twins"][0]["reported"]["value"] == "7"
    reader.close()


async def test_rate_limiter_answers_like_edgecore(make_agent: Any) -> None:
    h = await make_agent(rate_limit=(1.0, 5))
    crs.write(h.crs, "d.yaml", crs.model("thermo"), crs.device("dev-0", "thermo"))
    await h.agent.reload()
    results: list[str] = []
    for _ in range(8):
        try:
            await h.stub.ReportDeviceStates(
                pb.ReportDeviceStatesRequest(deviceName="dev-0", deviceNamespace="default", state="ok")
            )
            results.append("ok")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNKNOWN and "too many request" in (exc.details() or "")
            results.append("limited")
    # Burst of 5 passes (maybe one more token refilled meanwhile), the rest is refused.
    assert results[:5] == ["ok"] * 5 and results.count("limited") >= 2


async def test_socket_mode_and_stale_socket(sockdir: Path, tmp_path: Path) -> None:
    path = sockdir / "dmi.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening: what a killed agent leaves behind
    stale.close()
    agent = Agent(AgentConfig(socket=path, state_dir=tmp_path / "s"))
    await agent.start()
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o007 == 0 and mode <= 0o660
        # A second agent on the same socket is refused instead of stealing it.
        second = Agent(AgentConfig(socket=path, state_dir=tmp_path / "s2"))
        with pytest.raises(SocketInUseError, match="another server is listening"):
            await second.start()
        await second.stop()
        channel = grpc.aio.insecure_channel(f"unix:{path}")
        from dmi.v1beta1 import api_pb2_grpc

        answer = await api_pb2_grpc.DeviceManagerServiceStub(channel).MapperRegister(
            register_request("m", "p", "/nonexistent.sock")
        )
        assert len(answer.deviceList) == 0
        await channel.close()
    finally:
        await agent.stop()


async def test_an_agent_refused_the_socket_leaves_the_running_ones_state_alone(sockdir: Path, tmp_path: Path) -> None:
    path = sockdir / "dmi.sock"
    crs_dir, empty = tmp_path / "crs", tmp_path / "empty"
    crs_dir.mkdir()
    empty.mkdir()
    crs.write(crs_dir, "d.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
    state = tmp_path / "state"
    agent = Agent(AgentConfig(socket=path, state_dir=state, devices_dir=crs_dir))
    await agent.start()
    try:
        # The same socket and state folder, no devices, another status target: refused, and nothing changed.
        second = Agent(AgentConfig(socket=path, state_dir=state, devices_dir=empty, status_target="device"))
        with pytest.raises(SocketInUseError, match="another server is listening"):
            await second.start()
        await second.stop()
        reader = StatusReader(state)
        assert reader.target == "devicestatus"
        reader.close()
        assert [row.name for row in agent.store.resources("Device")] == ["dev-a"]
        from dmi.v1beta1 import api_pb2_grpc

        channel = grpc.aio.insecure_channel(f"unix:{path}")
        answer = await api_pb2_grpc.DeviceManagerServiceStub(channel).MapperRegister(
            register_request("m", "testproto", "/nonexistent.sock")
        )
        assert [d.name for d in answer.deviceList] == ["dev-a"]
        await channel.close()
    finally:
        await agent.stop()


async def test_socket_folder_form(sockdir: Path, tmp_path: Path) -> None:
    agent = Agent(AgentConfig(socket=sockdir, state_dir=tmp_path / "s"))
    await agent.start()
    try:
        assert (sockdir / "dmi.sock").is_socket()
    finally:
        await agent.stop()


async def test_regular_file_at_socket_path_is_not_replaced(sockdir: Path, tmp_path: Path) -> None:
    path = sockdir / "dmi.sock"
    path.write_text("precious")
    agent = Agent(AgentConfig(socket=path, state_dir=tmp_path / "s"))
    with pytest.raises(SocketInUseError, match="not a socket"):
        await agent.start()
    await agent.stop()
    assert path.read_text() == "precious"


async def test_concurrent_reports_all_stored(make_agent: Any) -> None:
    h = await _agent_with_devices(make_agent, 4)

    async def client(i: int) -> None:
        for n in range(25):
            await h.stub.ReportDeviceStatus(
                pb.ReportDeviceStatusRequest(
                    deviceName=f"dev-{i}",
                    deviceNamespace="default",
                    reportedDevice=pb.DeviceStatus(twins=[twin("temperature", str(n)), twin("setpoint", str(n * 2))]),
                )
            )

    await asyncio.gather(*(client(i) for i in range(4)))
    for i in range(4):
        rows = {r.property: r.reported_value for r in h.agent.store.twins(ObjectKey("default", f"dev-{i}"))}
        assert rows == {"temperature": "24", "setpoint": "48"}
    assert h.agent.service.twins_stored == 4 * 25 * 2


async def test_mapper_service_all_rpcs_over_a_real_channel(sockdir: Path) -> None:
    """DeviceMapperService: a client and a server generated from our proto, every RPC."""
    from dmi.v1beta1 import api_pb2_grpc

    path = sockdir / "mapper.sock"
    async with serve_mapper(path) as mapper:
        channel = grpc.aio.insecure_channel(f"unix:{path}")
        stub = api_pb2_grpc.DeviceMapperServiceStub(channel)
        model = pb.DeviceModel(
            name="m",
            namespace="ns",
            spec=pb.DeviceModelSpec(
                properties=[pb.ModelProperty(name="t", type="INT", accessMode="ReadOnly")],
                commands=[
                    pb.DeviceCommand(name="c", url="/x", method="GET", status_code=["200"], response=b"\x00\x01")
                ],
            ),
        )
        device = pb.Device(name="d", namespace="ns", spec=pb.DeviceSpec(deviceModelReference="m"))
        r1 = await stub.CreateDeviceModel(pb.CreateDeviceModelRequest(model=model))
        assert (r1.deviceModelName, r1.deviceModelNamespace) == ("m", "ns")
        await stub.UpdateDeviceModel(pb.UpdateDeviceModelRequest(model=model))
        r2 = await stub.RegisterDevice(pb.RegisterDeviceRequest(device=device))
        assert (r2.deviceName, r2.deviceNamespace) == ("d", "ns")
        device.spec.properties.add(name="t", desired=pb.TwinProperty(value="5"))
        await stub.UpdateDevice(pb.UpdateDeviceRequest(device=device))
        got = await stub.GetDevice(pb.GetDeviceRequest(deviceName="d", deviceNamespace="ns"))
        assert got.device == device
        await stub.RemoveDevice(pb.RemoveDeviceRequest(deviceName="d", deviceNamespace="ns"))
        await stub.RemoveDeviceModel(pb.RemoveDeviceModelRequest(modelName="m", modelNamespace="ns"))
        assert mapper.methods() == [
            "CreateDeviceModel",
            "UpdateDeviceModel",
            "RegisterDevice",
            "UpdateDevice",
            "GetDevice",
            "RemoveDevice",
            "RemoveDeviceModel",
        ]
        assert mapper.calls[0].request.model.spec.commands[0].response == b"\x00\x01"
        await channel.close()
