"""configData values packed as google.protobuf.Any wrappers, decoded by type URL, over a real channel."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2, wrappers_pb2

from dmi.anypack import (
    AnyDecodeError,
    pack_map,
    pack_value,
    shortest_float32,
    to_cr_value,
    unpack_map,
    unpack_value,
)
from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc
from tests.peers import serve_mapper


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


EVERY_WRAPPER = {
    "s": (wrappers_pb2.StringValue(value="ttyUSB0"), "ttyUSB0"),
    "b": (wrappers_pb2.BoolValue(value=True), True),
    "i32": (wrappers_pb2.Int32Value(value=-7), -7),
    "i64": (wrappers_pb2.Int64Value(value=2**40 + 1), 2**40 + 1),
    "u32": (wrappers_pb2.UInt32Value(value=4_000_000_000), 4_000_000_000),
    "u64": (wrappers_pb2.UInt64Value(value=2**63), 2**63),
    "f": (wrappers_pb2.FloatValue(value=0.1), 0.1),
    "d": (wrappers_pb2.DoubleValue(value=0.1), 0.1),
    "by": (wrappers_pb2.BytesValue(value=b"\x00\xff"), b"\x00\xff"),
}


async def test_every_wrapper_round_trips_over_grpc(tmp_path: Path) -> None:
    from tests.peers import short_tmpdir

    with short_tmpdir() as d:
        path = d / "m.sock"
        async with serve_mapper(path) as mapper:
            channel = grpc.aio.insecure_channel(f"unix:{path}")
            device = pb.Device(name="x", namespace="default")
            for key, (message, _) in EVERY_WRAPPER.items():
                device.spec.protocol.configData.data[key].CopyFrom(_any(message))
            await api_pb2_grpc.DeviceMapperServiceStub(channel).RegisterDevice(pb.RegisterDeviceRequest(device=device))
            await channel.close()
    received = mapper.calls[0].request.device.spec.protocol.configData.data
    assert unpack_map(received) == {key: value for key, (_, value) in EVERY_WRAPPER.items()}


def test_edgecore_packing_numbers_are_float32() -> None:
    packed = pack_map({"slaveID": 1, "scale": 0.1, "name": "x", "on": False, "gone": None})
    assert set(packed) == {"slaveID", "scale", "name", "on"}  # null is left out
    assert packed["slaveID"].type_url.endswith("google.protobuf.FloatValue")
    assert packed["scale"].type_url.endswith("google.protobuf.FloatValue")
    assert packed["name"].type_url.endswith("google.protobuf.StringValue")
    assert packed["on"].type_url.endswith("google.protobuf.BoolValue")
    assert unpack_map(packed) == {"slaveID": 1.0, "scale": 0.1, "name": "x", "on": False}
    # float32: integers above 2^24 lose precision, exactly as edgecore's packing does.
    assert unpack_value(pack_map({"big": 16777217})["big"]) == 16777216.0


def test_typed_packing_keeps_int64_and_double() -> None:
    packed = pack_map({"n": 16777217, "x": 0.1}, packing="typed")
    assert packed["n"].type_url.endswith("Int64Value") and packed["x"].type_url.endswith("DoubleValue")
    assert unpack_map(packed) == {"n": 16777217, "x": 0.1}


def test_nested_values_travel_as_json_strings_and_come_back() -> None:
    packed = pack_value({"b": [1, 2], "a": "x"})
    assert packed is not None and packed.type_url.endswith("StringValue")
    text = unpack_value(packed)
    assert text == '{"a":"x","b":[1,2]}'
    assert to_cr_value(text) == {"a": "x", "b": [1, 2]}
    assert to_cr_value("{not json") == "{not json"


def test_decode_errors_are_clear() -> None:
    with pytest.raises(AnyDecodeError, match=r"expected a google\.protobuf wrapper"):
        unpack_value(_any(pb.TwinProperty(value="x")))
    broken = any_pb2.Any(type_url="type.googleapis.com/google.protobuf.StringValue", value=b"\xff\xff\xff")
    with pytest.raises(AnyDecodeError, match="corrupt StringValue"):
        unpack_value(broken)


def test_shortest_float32() -> None:
    assert shortest_float32(float(wrappers_pb2.FloatValue(value=0.1).value)) == 0.1
    assert shortest_float32(float(wrappers_pb2.FloatValue(value=21.5).value)) == 21.5
    assert math.isnan(shortest_float32(float("nan")))
    # Near float32's limit a shorter decimal rounds past it; that must not raise (it did: OverflowError).
    near_max = struct.unpack(">f", bytes.fromhex("ff7fff7f"))[0]
    assert struct.pack(">f", shortest_float32(near_max)) == bytes.fromhex("ff7fff7f")
    assert to_cr_value(502.0) == 502 and to_cr_value(1.5) == 1.5
