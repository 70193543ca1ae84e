"""The ``MapperRegister`` answer kept as bytes and parsed one device at a time.

With a thousand devices the answer is megabytes on the wire and several times that parsed; holding it whole
while every device starts sets the mapper's peak memory. Only its top level is walked here (field 1: repeated
DeviceModel, field 2: repeated Device, both length-delimited); each element is parsed when it is used and
dropped after.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from dmi.v1beta1 import api_pb2 as pb

_MODELS, _DEVICES = 1, 2
M = TypeVar("M", pb.DeviceModel, pb.Device)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7


def _skip(data: bytes, at: int, wire_type: int) -> int:
    if wire_type == 0:
        return _varint(data, at)[1]
    if wire_type == 1:
        return at + 8
    if wire_type == 2:
        size, at = _varint(data, at)
        return at + size
    if wire_type == 5:
        return at + 4
    raise ValueError(f"MapperRegisterResponse: unsupported wire type {wire_type}")


class RegisterAnswer:
    """Read-only view with the generated message's names: ``modelList`` and ``deviceList`` (iterables)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._spans: dict[int, list[tuple[int, int]]] = {_MODELS: [], _DEVICES: []}
        at = 0
        while at < len(data):
            key, at = _varint(data, at)
            field, wire_type = key >> 3, key & 7
            if field in self._spans and wire_type == 2:
                size, start = _varint(data, at)
                self._spans[field].append((start, start + size))
                at = start + size
            else:
                at = _skip(data, at, wire_type)  # a field from a newer proto: ignored, as protobuf does
        if at != len(data):
            raise ValueError("MapperRegisterResponse: truncated message")
        self.modelList: _Elements[pb.DeviceModel] = _Elements(self, _MODELS, pb.DeviceModel)
        self.deviceList: _Elements[pb.Device] = _Elements(self, _DEVICES, pb.Device)

    @classmethod
    def of(cls, message: pb.MapperRegisterResponse) -> RegisterAnswer:
        return cls(message.SerializeToString())


class _Elements(Generic[M]):
    def __init__(self, answer: RegisterAnswer, field: int, kind: type[M]) -> None:
        self._answer, self._field = answer, field
        self._kind: type[M] = kind

    def __len__(self) -> int:
        return len(self._answer._spans[self._field])

    def __iter__(self) -> Iterator[M]:
        data = self._answer.data
        for start, end in self._answer._spans[self._field]:
            message = self._kind()
            message.ParseFromString(data[start:end])
            yield message
