"""Real gRPC peers for the tests: a recording DeviceMapperService (a mapper's server side)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    """Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="km-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Call:
    method: str
    request: Any


@dataclass
class RecordingMapper(api_pb2_grpc.DeviceMapperServiceServicer):  # type: ignore[misc]
    """A DeviceMapperService that records every call and keeps the devices it was given."""

    calls: list[Call] = field(default_factory=list)
    devices: dict[tuple[str, str], pb.Device] = field(default_factory=dict)
    models: dict[tuple[str, str], pb.DeviceModel] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _record(self, method: str, request: Any) -> None:
        copy = type(request)()
        copy.CopyFrom(request)
        self.calls.append(Call(method, copy))
        self.changed.set()

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def summary(self) -> list[tuple[str, str]]:
        out = []
        for c in self.calls:
            r = c.request
            if c.method in ("RegisterDevice", "UpdateDevice"):
                out.append((c.method, r.device.name))
            elif c.method in ("CreateDeviceModel", "UpdateDeviceModel"):
                out.append((c.method, r.model.name))
            elif c.method == "RemoveDevice":
                out.append((c.method, r.deviceName))
            elif c.method == "RemoveDeviceModel":
                out.append((c.method, r.modelName))
            else:
                out.append((c.method, r.deviceName))
        return out

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async def _wait() -> None:
            while len(self.calls) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_wait(), timeout)

    async def RegisterDevice(self, request: pb.RegisterDeviceRequest, context: Any) -> pb.RegisterDeviceResponse:
        self._record("RegisterDevice", request)
        d = request.device
        self.devices[(d.namespace, d.name)] = d
        return pb.RegisterDeviceResponse(deviceName=d.name, deviceNamespace=d.namespace)

    async def UpdateDevice(self, request: pb.UpdateDeviceRequest, context: Any) -> pb.UpdateDeviceResponse:
        self._record("UpdateDevice", request)
        self.devices[(request.device.namespace, request.device.name)] = request.device
        return pb.UpdateDeviceResponse()

    async def RemoveDevice(self, request: pb.RemoveDeviceRequest, context: Any) -> pb.RemoveDeviceResponse:
        self._record("RemoveDevice", request)
        self.devices.pop((request.deviceNamespace, request.deviceName), None)
        return pb.RemoveDeviceResponse()

    async def CreateDeviceModel(
        self, request: pb.CreateDeviceModelRequest, context: Any
    ) -> pb.CreateDeviceModelResponse:
        self._record("CreateDeviceModel", request)
        m = request.model
        self.models[(m.namespace, m.name)] = m
        return pb.CreateDeviceModelResponse(deviceModelName=m.name, deviceModelNamespace=m.namespace)

    async def UpdateDeviceModel(
        self, request: pb.UpdateDeviceModelRequest, context: Any
    ) -> pb.UpdateDeviceModelResponse:
        self._record("UpdateDeviceModel", request)
        self.models[(request.model.namespace, request.model.name)] = request.model
        return pb.UpdateDeviceModelResponse()

    async def RemoveDeviceModel(
        self, request: pb.RemoveDeviceModelRequest, context: Any
    ) -> pb.RemoveDeviceModelResponse:
        self._record("RemoveDeviceModel", request)
        self.models.pop((request.modelNamespace, request.modelName), None)
        return pb.RemoveDeviceModelResponse()

    async def GetDevice(self, request: pb.GetDeviceRequest, context: Any) -> pb.GetDeviceResponse:
        self._record("GetDevice", request)
        device = self.devices.get((request.deviceNamespace, request.deviceName))
        if device is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"device {request.deviceNamespace}/{request.deviceName}")
        return pb.GetDeviceResponse(device=device)


@contextlib.asynccontextmanager
async def serve_mapper(socket_path: Path, mapper: RecordingMapper | None = None) -> AsyncIterator[RecordingMapper]:
    """Serve a RecordingMapper on ``socket_path`` for the duration of the block."""
    mapper = mapper or RecordingMapper()
    server = grpc.aio.server()
    api_pb2_grpc.add_DeviceMapperServiceServicer_to_server(mapper, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    try:
        yield mapper
    finally:
        await server.stop(grace=None)


def twin(name: str, value: str, desired: str = "", meta: dict[str, str] | None = None) -> pb.Twin:
    return pb.Twin(
        propertyName=name,
        reported=pb.TwinProperty(value=value, metadata=meta if meta is not None else {"type": "int", "timestamp": "1"}),
        observedDesired=pb.TwinProperty(value=desired),
    )


def register_request(name: str, protocol: str, address: str, with_data: bool = True) -> pb.MapperRegisterRequest:
    return pb.MapperRegisterRequest(
        withData=with_data,
        mapper=pb.MapperInfo(
            name=name,
            version="v1.0",
            api_version="v1beta1",
            protocol=protocol,
            address=address.encode(),
            state="ok",
        ),
    )
