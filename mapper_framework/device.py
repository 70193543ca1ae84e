"""The mapper's view of a device: what the agent sent (proto) as typed, defaulted settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from dmi.anypack import AnyDecodeError, unpack_map
from dmi.v1beta1 import api_pb2 as pb
from mapper_framework.sinks.base import unsupported
from mapper_framework.values import model_type

DEFAULT_CYCLE_MS = 1000


class DeviceSpecError(ValueError):
    """A device the mapper cannot run as sent (e.g. configData it cannot decode)."""


@dataclass(frozen=True, slots=True)
class PropertySpec:
    name: str
    type: str  # lower case: int, float, double, string, boolean, bytes, stream
    access_mode: str  # ReadWrite or ReadOnly ("" when the model does not say)
    collect_cycle_ms: int
    report_cycle_ms: int
    report_to_cloud: bool
    visitor_protocol: str = ""
    visitor_data: Mapping[str, Any] = field(default_factory=dict)
    desired: str | None = None
    minimum: str = ""
    maximum: str = ""
    unit: str = ""
    push_method: pb.PushMethod | None = None

    @property
    def writable(self) -> bool:
        return self.access_mode == "ReadWrite"


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    description: str
    property_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    namespace: str
    name: str
    model: str
    protocol_name: str
    protocol_data: Mapping[str, Any]
    properties: tuple[PropertySpec, ...]
    methods: tuple[MethodSpec, ...] = ()
    state_report_cycle_ms: int = 0
    state_report_to_cloud: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def property(self, name: str) -> PropertySpec | None:
        return next((p for p in self.properties if p.name == name), None)


def _decode(value: pb.CustomizedValue, where: str) -> dict[str, Any]:
    try:
        data = unpack_map(value.data)
    except AnyDecodeError as exc:
        raise DeviceSpecError(f"{where}: {exc}") from None
    # A thousand devices of one model repeat the same keys and texts ten thousand times: share them.
    return {intern(k): intern(v) if isinstance(v, str) else v for k, v in data.items()}


def device_spec(device: pb.Device, model: pb.DeviceModel | None) -> DeviceSpec:
    """Combine a device and its model as the agent sent them; cycles of 0 become the 1 s default."""
    where = f"device {device.namespace or 'default'}/{device.name}"
    model_props = {p.name: p for p in model.spec.properties} if model is not None else {}
    properties = []
    for prop in device.spec.properties:
        mp = model_props.get(prop.name)
        if prop.HasField("pushMethod") and (why := unsupported(prop.pushMethod)) is not None:
            raise DeviceSpecError(f"{where} property {prop.name}: pushMethod.{why}")
        properties.append(
            PropertySpec(
                name=intern(prop.name),
                type=intern(model_type(mp.type)) if mp is not None else "string",
                access_mode=intern(mp.accessMode) if mp is not None else "",
                collect_cycle_ms=prop.collectCycle or DEFAULT_CYCLE_MS,
                report_cycle_ms=prop.reportCycle or DEFAULT_CYCLE_MS,
                report_to_cloud=prop.reportToCloud,
                visitor_protocol=intern(prop.visitors.protocolName),
                visitor_data=_decode(prop.visitors.configData, f"{where} property {prop.name} visitors"),
                desired=prop.desired.value if prop.HasField("desired") and prop.desired.value else None,
                minimum=intern(mp.minimum) if mp is not None else "",
                maximum=intern(mp.maximum) if mp is not None else "",
                unit=intern(mp.unit) if mp is not None else "",
                push_method=prop.pushMethod if prop.HasField("pushMethod") else None,
            )
        )
    return DeviceSpec(
        namespace=device.namespace or "default",
        name=device.name,
        model=device.spec.deviceModelReference,
        protocol_name=device.spec.protocol.protocolName,
        protocol_data=_decode(device.spec.protocol.configData, f"{where} protocol"),
        properties=tuple(properties),
        methods=tuple(MethodSpec(m.name, m.description, tuple(m.propertyNames)) for m in device.spec.methods),
        state_report_cycle_ms=device.status.reportCycle if device.HasField("status") else 0,
        state_report_to_cloud=device.status.reportToCloud if device.HasField("status") else False,
    )
