"""200 malformed requests leave the agent (a real subprocess) serving, each answered with an error."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc
from tests import crs
from tests.agent_process import AgentProcess
from tests.peers import twin

METHODS = [
    "/v1beta1.DeviceManagerService/MapperRegister",
    "/v1beta1.DeviceManagerService/ReportDeviceStatus",
    "/v1beta1.DeviceManagerService/ReportDeviceStates",
]


@pytest.fixture
def agent_proc(sockdir: Path, tmp_path: Path) -> Iterator[AgentProcess]:
    folder = tmp_path / "crs"
    folder.mkdir()
    crs.write(folder, "d.yaml", crs.model("thermo"), crs.device("dev-0", "thermo"))
    proc = AgentProcess(sockdir / "dmi.sock", tmp_path / "state", folder, tmp_path / "agent.log")
    proc.start()
    yield proc
    proc.stop()


def _malformed(rng: random.Random) -> list[tuple[str, bytes]]:
    """Raw request bodies: random bytes, truncated and corrupted messages, hostile content."""
    good_status = pb.ReportDeviceStatusRequest(
        deviceName="dev-0",
        deviceNamespace="default",
        reportedDevice=pb.DeviceStatus(twins=[twin("temperature", "1")]),
    ).SerializeToString()
    cases: list[tuple[str, bytes]] = []
    for i in range(60):  # random garbage
        cases.append((METHODS[i % 3], rng.randbytes(rng.randint(1, 300))))
    for _ in range(30):  # truncated valid message
        cases.append((METHODS[1], good_status[: rng.randint(1, len(good_status) - 1)]))
    for _ in range(30):  # one flipped byte
        b = bytearray(good_status)
        b[rng.randrange(len(b))] ^= 0xFF
        cases.append((METHODS[1], bytes(b)))
    hostile = [
        pb.ReportDeviceStatusRequest(
            deviceName="x" * 1_000_000, reportedDevice=pb.DeviceStatus(twins=[twin("a", "1")])
        ),
        pb.ReportDeviceStatusRequest(
            deviceName="dev-0",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[twin("temperature", "v" * 600)]),
        ),
        pb.ReportDeviceStatusRequest(
            deviceName="dev-0",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[twin("t" * 200, "1")]),
        ),
        pb.ReportDeviceStatusRequest(
            deviceName="dev-0",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[twin("temperature", '{"a": 1}')]),
        ),
        pb.ReportDeviceStatusRequest(
            deviceName="dev-0",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[twin(f"p{i}", "1") for i in range(5000)]),
        ),
        pb.ReportDeviceStatusRequest(
            deviceName="dev-0",
            deviceNamespace="default",
            reportedDevice=pb.DeviceStatus(twins=[pb.Twin(propertyName="temperature")]),
        ),
        pb.ReportDeviceStatusRequest(deviceName="dev-0"),
        pb.ReportDeviceStatusRequest(),
        pb.ReportDeviceStatesRequest(deviceName="dev-0", state="on fire"),
        pb.ReportDeviceStatesRequest(deviceName="dev-0", state="ok" * 10000),
        pb.ReportDeviceStatesRequest(),
        pb.MapperRegisterRequest(),
        pb.MapperRegisterRequest(withData=True),
        pb.MapperRegisterRequest(withData=True, mapper=pb.MapperInfo(name="m")),
        pb.MapperRegisterRequest(withData=True, mapper=pb.MapperInfo(protocol="p")),
        pb.MapperRegisterRequest(withData=True, mapper=pb.MapperInfo(name="m", protocol="p", address=b"\xff")),
    ]
    method_of = {
        pb.ReportDeviceStatusRequest: METHODS[1],
        pb.ReportDeviceStatesRequest: METHODS[2],
        pb.MapperRegisterRequest: METHODS[0],
    }
    while len(cases) < 195:
        msg = hostile[(len(cases) - 120) % len(hostile)]
        cases.append((method_of[type(msg)], msg.SerializeToString()))
    # Invalid UTF-8 in a proto3 string field: the server must reject it at parse time.
    cases.append((METHODS[1], b"\x0a\x03\xff\xfe\xfd"))
    cases.append((METHODS[2], b"\x1a\x02\xc3\x28"))
    # Methods that do not exist.
    cases.append(("/v1beta1.DeviceManagerService/Nope", b""))
    cases.append(("/v1beta1.DeviceMapperService/RegisterDevice", b""))
    cases.append(("/other.Service/MapperRegister", b"\x00"))
    return cases


async def test_200_malformed_requests_leave_the_agent_serving(agent_proc: AgentProcess) -> None:
    cases = _malformed(random.Random(20261125))
    assert len(cases) == 200
    codes: Counter[str] = Counter()
    parse_errors = 0
    async with grpc.aio.insecure_channel(f"unix:{agent_proc.socket}") as channel:
        stub = api_pb2_grpc.DeviceManagerServiceStub(channel)
        for index, (method, body) in enumerate(cases):
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                await call(body, timeout=10)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
                parse_errors += "request is not a valid v1beta1." in (exc.details() or "")
                assert exc.code() != grpc.StatusCode.UNKNOWN, (index, exc.details())
                assert exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"case {index} hung"
            if index % 25 == 24:
                # Still serving valid requests, and still the same process.
                assert agent_proc.alive()
                await stub.ReportDeviceStates(
                    pb.ReportDeviceStatesRequest(deviceName="dev-0", deviceNamespace="default", state="ok")
                )
        assert agent_proc.alive()
        await stub.ReportDeviceStatus(
            pb.ReportDeviceStatusRequest(
                deviceName="dev-0",
                deviceNamespace="default",
                reportedDevice=pb.DeviceStatus(twins=[twin("temperature", "42")]),
            )
        )
    # Each kind of refusal showed up; nothing was silently accepted beyond what random bytes can make valid.
    assert codes["INVALID_ARGUMENT"] >= 20 and codes["NOT_FOUND"] >= 5 and codes["UNIMPLEMENTED"] >= 3
    assert parse_errors >= 10  # bodies that do not parse: INVALID_ARGUMENT naming the message type
    assert "RESOURCE_EXHAUSTED" not in codes  # error details stay small even for huge inputs
    assert codes["OK"] <= 20, codes
    log = agent_proc.log.read_text()
    assert "Traceback" not in log
    # Refusals are logged once per kind per interval, not once per request.
    refusals = log.count("refused")
    assert 0 < refusals <= 12, refusals
