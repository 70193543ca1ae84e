"""The agent's ``DeviceManagerService``: registration, twin reports and state reports."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from dmi.agent.dispatcher import Dispatcher
from dmi.agent.inventory import DeviceEntry, Inventory
from dmi.agent.ratelimit import TokenBucket
from dmi.agent.rules import (
    ONLINE_STATES,
    RequestError,
    check_object_name,
    check_twin_name,
    check_twin_value,
    invalid,
    last_online_time,
    normalise_state,
    not_found,
    shown,
)
from dmi.agent.store import AgentStore, MapperRecord, TwinWrite
from dmi.resources import DEFAULT_NAMESPACE, ObjectKey
from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc

log = logging.getLogger(__name__)

RATE_LIMITED = "too many request"
REFUSAL_LOG_INTERVAL = 10.0


SERVICE = "v1beta1.DeviceManagerService"


class DeviceManager(api_pb2_grpc.DeviceManagerServiceServicer):  # type: ignore[misc]
    """Implements the three DeviceManagerService RPCs on top of the store and dispatcher."""

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's handlers, parsing requests ourselves so a corrupt body gets INVALID_ARGUMENT
        naming the message type (gRPC's own parser answers a bare UNKNOWN)."""
        methods: dict[str, tuple[Any, Any]] = {
            "MapperRegister": (self.MapperRegister, pb.MapperRegisterRequest),
            "ReportDeviceStatus": (self.ReportDeviceStatus, pb.ReportDeviceStatusRequest),
            "ReportDeviceStates": (self.ReportDeviceStates, pb.ReportDeviceStatesRequest),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    _parsing(impl, request_type),
                    request_deserializer=None,
                    response_serializer=_serialize,
                )
                for name, (impl, request_type) in methods.items()
            },
        )

    def __init__(
        self,
        store: AgentStore,
        dispatcher: Dispatcher,
        inventory: Callable[[], Inventory],
        limiter: TokenBucket | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._inventory = inventory
        self._limiter = limiter
        self._on_change = on_change or (lambda: None)
        self.reports = 0
        self.twins_stored = 0
        self.rejected = 0
        self._refusals: dict[tuple[str, str], tuple[float, int]] = {}

    # ------------------------------------------------------------------ helpers
    async def _refuse(self, context: grpc.aio.ServicerContext, exc: RequestError, method: str) -> None:
        self.rejected += 1
        # One line per kind of refusal per interval: a misbehaving mapper must not flood the log.
        kind = (method.split("(")[0], exc.code)
        now = time.monotonic()
        last, quiet = self._refusals.get(kind, (0.0, 0))
        if now - last >= REFUSAL_LOG_INTERVAL:
            more = f" ({quiet} more {kind[0]} refused with {exc.code} since the last report)" if quiet else ""
            log.warning("%s refused: %s%s", method, exc, more)
            self._refusals[kind] = (now, 0)
        else:
            self._refusals[kind] = (last, quiet + 1)
        await context.abort(getattr(grpc.StatusCode, exc.code), str(exc))

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        if self._limiter is not None and not self._limiter.try_take():
            self.rejected += 1
            await context.abort(grpc.StatusCode.UNKNOWN, RATE_LIMITED)

    def _device(self, name: str, namespace: str) -> DeviceEntry:
        check_object_name("deviceName", name)
        check_object_name("deviceNamespace", namespace)
        key = ObjectKey(namespace or DEFAULT_NAMESPACE, name)
        entry = self._inventory().device(key)
        if entry is None:
            raise not_found(f"device {key} is not known to this agent: no Device CR with that namespace and name")
        return entry

    # ------------------------------------------------------------------ RPCs
    async def MapperRegister(
        self, request: pb.MapperRegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.MapperRegisterResponse:
        await self._admit(context)
        try:
            if not request.HasField("mapper"):
                raise invalid("MapperRegisterRequest has no mapper: edgecore would crash on it; always send MapperInfo")
            info = request.mapper
            check_object_name("mapper name", info.name)
            if not info.protocol:
                raise invalid(f"mapper {shown(info.name)}: protocol is empty; set common.protocol in the mapper config")
            if not info.name:
                raise invalid("mapper name is empty; set common.name in the mapper config")
            try:
                address = info.address.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid(f"mapper {shown(info.name)}: address is not UTF-8 text") from None
        except RequestError as exc:
            await self._refuse(context, exc, "MapperRegister")
            raise AssertionError("unreachable") from exc
        record = MapperRecord(
            name=info.name,
            protocol=info.protocol,
            address=address,
            version=info.version,
            api_version=info.api_version,
            with_data=request.withData,
            registered_ms=int(time.time() * 1000),
        )
        await self._store.save_mapper(record)
        if not request.withData:
            # edgecore never calls such a mapper back; neither do we, but we say so.
            log.warning("mapper %s registered with withData=false: it will receive no devices or updates", info.name)
            return pb.MapperRegisterResponse()
        if address:
            await self._dispatcher.attach(record)
        else:
            log.warning("mapper %s sent no address: device changes cannot be pushed to it", info.name)
        answer = self._inventory().register_answer(info.protocol)
        log.info(
            "mapper %s registered (protocol %s, address %s): %d device(s)",
            info.name,
            info.protocol,
            address,
            len(answer.deviceList),
        )
        self._on_change()
        return answer

    async def ReportDeviceStatus(
        self, request: pb.ReportDeviceStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportDeviceStatusResponse:
        await self._admit(context)
        try:
            if not request.deviceName:
                raise invalid("ReportDeviceStatusRequest is invalid data: deviceName is empty")
            if not request.HasField("reportedDevice") or not request.reportedDevice.twins:
                raise invalid("ReportDeviceStatusRequest does not have twin data")
            entry = self._device(request.deviceName, request.deviceNamespace)
            writes = _twin_writes(request.reportedDevice.twins, entry)
        except RequestError as exc:
            await self._refuse(context, exc, f"ReportDeviceStatus({shown(request.deviceName)})")
            raise AssertionError("unreachable") from exc
        await self._store.write_twins(entry.resource.key, writes, int(time.time() * 1000))
        self.reports += 1
        self.twins_stored += len(writes)
        self._on_change()
        return pb.ReportDeviceStatusResponse()

    async def ReportDeviceStates(
        self, request: pb.ReportDeviceStatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportDeviceStatesResponse:
        await self._admit(context)
        try:
            if not request.deviceName or not request.state:
                missing = "deviceName" if not request.deviceName else "state"
                raise invalid(f"ReportDeviceStatesRequest is invalid data: {missing} is empty")
            state = normalise_state(request.state)
            entry = self._device(request.deviceName, request.deviceNamespace)
        except RequestError as exc:
            await self._refuse(context, exc, f"ReportDeviceStates({shown(request.deviceName)})")
            raise AssertionError("unreachable") from exc
        online = last_online_time() if state.lower() in ONLINE_STATES else None
        await self._store.write_state(entry.resource.key, state, int(time.time() * 1000), online)
        self._on_change()
        return pb.ReportDeviceStatesResponse()


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _parsing(impl: Any, request_type: Any) -> Any:
    async def handle(body: bytes, context: grpc.aio.ServicerContext) -> Any:
        request = request_type()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request is not a valid {request_type.DESCRIPTOR.full_name}: {exc}",
            )
        return await impl(request, context)

    return handle


def _twin_writes(twins: Any, entry: DeviceEntry) -> list[TwinWrite]:
    writes: dict[str, TwinWrite] = {}
    names = entry.property_names
    for index, twin in enumerate(twins):
        name = twin.propertyName
        if name not in names:  # the inventory admits only names that pass the rule
            check_twin_name(index, name)
        if not twin.HasField("reported"):
            raise invalid(
                f"twins[{index}] ({name}) has no reported: edgecore dereferences it and crashes;"
                " send an empty TwinProperty when there is nothing to report"
            )
        if not twin.HasField("observedDesired"):
            raise invalid(
                f"twins[{index}] ({name}) has no observedDesired: edgecore dereferences it and crashes;"
                " send an empty TwinProperty when there is no desired value"
            )
        if name not in names:
            raise not_found(f"device {entry.resource.key} has no property {shown(name)} (twins[{index}])")
        reported, desired = twin.reported, twin.observedDesired
        rvalue, dvalue = reported.value, desired.value
        check_twin_value(index, name, "reported", rvalue)
        if dvalue:
            check_twin_value(index, name, "observedDesired", dvalue)
        # An empty value means "nothing to say": keep what we had rather than erase it.
        writes[name] = TwinWrite(
            property=name,
            reported_value=rvalue or None,
            reported_meta=dict(reported.metadata) if rvalue else None,
            desired_value=dvalue or None,
            desired_meta=dict(desired.metadata) if dvalue else None,
        )
    return list(writes.values())
