"""The mapper's ``DeviceMapperService``: what the agent calls when Devices and DeviceModels change."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc
from mapper_framework.registry import DeviceRegistry

log = logging.getLogger(__name__)


class MapperService(api_pb2_grpc.DeviceMapperServiceServicer):  # type: ignore[misc]
    def __init__(self, registry: DeviceRegistry) -> None:
        self._registry = registry

    async def RegisterDevice(self, request: pb.RegisterDeviceRequest, context: Any) -> pb.RegisterDeviceResponse:
        device = request.device
        if not device.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "RegisterDevice: device name is empty")
        await self._registry.put_device(device)
        return pb.RegisterDeviceResponse(deviceName=device.name, deviceNamespace=device.namespace)

    async def UpdateDevice(self, request: pb.UpdateDeviceRequest, context: Any) -> pb.UpdateDeviceResponse:
        if not request.device.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "UpdateDevice: device name is empty")
        await self._registry.put_device(request.device)
        return pb.UpdateDeviceResponse()

    async def RemoveDevice(self, request: pb.RemoveDeviceRequest, context: Any) -> pb.RemoveDeviceResponse:
        await self._registry.remove_device(request.deviceNamespace, request.deviceName)
        return pb.RemoveDeviceResponse()

    async def CreateDeviceModel(
        self, request: pb.CreateDeviceModelRequest, context: Any
    ) -> pb.CreateDeviceModelResponse:
        self._registry.set_model(request.model)
        return pb.CreateDeviceModelResponse(
            deviceModelName=request.model.name, deviceModelNamespace=request.model.namespace
        )

    async def UpdateDeviceModel(
        self, request: pb.UpdateDeviceModelRequest, context: Any
    ) -> pb.UpdateDeviceModelResponse:
        self._registry.set_model(request.model)
        return pb.UpdateDeviceModelResponse()

    async def RemoveDeviceModel(
        self, request: pb.RemoveDeviceModelRequest, context: Any
    ) -> pb.RemoveDeviceModelResponse:
        self._registry.remove_model(request.modelNamespace, request.modelName)
        return pb.RemoveDeviceModelResponse()

    async def GetDevice(self, request: pb.GetDeviceRequest, context: Any) -> pb.GetDeviceResponse:
        device = self._registry.current(request.deviceNamespace, request.deviceName)
        if device is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"device {request.deviceNamespace}/{request.deviceName} is not on this mapper",
            )
        return pb.GetDeviceResponse(device=device)
