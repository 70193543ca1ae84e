"""What the agent serves: models and devices, and the mapper calls a change implies.

An :class:`Inventory` is an immutable snapshot. Devices whose model is missing
are kept but not *deliverable* (edgecore leaves them out of a mapper's answer
too). :func:`diff` turns two snapshots into ordered :class:`Op` s per protocol,
comparing the exact proto a mapper would receive, so a model edit that changes
a device's merged visitors also updates that device.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from dmi.agent.rules import TWIN_NAME_RE
from dmi.anypack import Packing
from dmi.convert import device_to_proto, model_to_proto
from dmi.resources import DeviceModelResource, DeviceResource, ObjectKey
from dmi.v1beta1 import api_pb2 as pb

Method = Literal[
    "CreateDeviceModel",
    "UpdateDeviceModel",
    "RemoveDeviceModel",
    "RegisterDevice",
    "UpdateDevice",
    "RemoveDevice",
]


@dataclass(frozen=True)
class DeviceEntry:
    resource: DeviceResource
    protocol: str
    proto: pb.Device | None  # None: the model is missing, so not deliverable
    wire: bytes = b""
    property_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ModelEntry:
    resource: DeviceModelResource
    protocol: str
    proto: pb.DeviceModel
    wire: bytes


@dataclass(frozen=True)
class Op:
    """One DeviceMapperService call for the mapper that owns ``protocol``."""

    protocol: str
    method: Method
    key: ObjectKey
    request: (
        pb.RegisterDeviceRequest
        | pb.UpdateDeviceRequest
        | pb.RemoveDeviceRequest
        | pb.CreateDeviceModelRequest
        | pb.UpdateDeviceModelRequest
        | pb.RemoveDeviceModelRequest
    )

    def __str__(self) -> str:
        return f"{self.method} {self.key} ({self.protocol})"


@dataclass(frozen=True)
class Inventory:
    models: Mapping[ObjectKey, ModelEntry] = field(default_factory=dict)
    devices: Mapping[ObjectKey, DeviceEntry] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        models: Iterable[DeviceModelResource],
        devices: Iterable[DeviceResource],
        packing: Packing = "edgecore",
    ) -> Inventory:
        model_entries: dict[ObjectKey, ModelEntry] = {}
        for model in models:
            proto = model_to_proto(model)
            model_entries[model.key] = ModelEntry(
                model, model.protocol, proto, proto.SerializeToString(deterministic=True)
            )
        device_entries: dict[ObjectKey, DeviceEntry] = {}
        for device in devices:
            model_entry = model_entries.get(device.model_key)
            if model_entry is None:
                device_entries[device.key] = DeviceEntry(
                    device,
                    device.protocol.protocol_name,
                    None,
                    b"",
                    _reportable(device),
                )
                continue
            dproto = device_to_proto(device, model_entry.resource, packing)
            device_entries[device.key] = DeviceEntry(
                device,
                device.protocol.protocol_name,
                dproto,
                dproto.SerializeToString(deterministic=True),
                _reportable(device),
            )
        return cls(model_entries, device_entries)

    def device(self, key: ObjectKey) -> DeviceEntry | None:
        return self.devices.get(key)

    def undeliverable(self) -> list[DeviceEntry]:
        return [d for d in self.devices.values() if d.proto is None]

    def register_answer(self, protocol: str) -> pb.MapperRegisterResponse:
        """Devices of ``protocol`` and one model per device, in the same (random) order, as edgecore answers."""
        entries = [d for d in self.devices.values() if d.proto is not None and d.protocol == protocol]
        random.shuffle(entries)  # edgecore's order is random too: mappers must not rely on it
        answer = pb.MapperRegisterResponse()
        for entry in entries:
            assert entry.proto is not None
            answer.deviceList.append(entry.proto)
            answer.modelList.append(self.models[entry.resource.model_key].proto)
        return answer


def _reportable(device: DeviceResource) -> frozenset[str]:
    """Property names a twin may carry: the device's own that pass edgecore's twin-name rule."""
    return frozenset(p.name for p in device.properties if TWIN_NAME_RE.match(p.name))


def diff(old: Inventory, new: Inventory) -> list[Op]:
    """The calls that take mappers from ``old`` to ``new``.

    Order: models created/updated, then devices removed, then devices
    registered/updated, then models removed, so a mapper always knows a model
    before a device that uses it and never loses a model a device still uses.
    """
    model_up: list[Op] = []
    model_down: list[Op] = []
    for key, entry in new.models.items():
        before = old.models.get(key)
        if before is not None and before.protocol != entry.protocol:
            model_down.append(_remove_model(before))
            before = None
        if before is None:
            model_up.append(
                Op(entry.protocol, "CreateDeviceModel", key, pb.CreateDeviceModelRequest(model=entry.proto))
            )
        elif before.wire != entry.wire:
            model_up.append(
                Op(entry.protocol, "UpdateDeviceModel", key, pb.UpdateDeviceModelRequest(model=entry.proto))
            )
    for key, before in old.models.items():
        if key not in new.models:
            model_down.append(_remove_model(before))

    device_down: list[Op] = []
    device_up: list[Op] = []
    for key, dentry in new.devices.items():
        prev = old.devices.get(key)
        was = prev is not None and prev.proto is not None
        if dentry.proto is None:
            if was:
                assert prev is not None
                device_down.append(_remove_device(prev))
            continue
        if was and prev is not None and prev.protocol != dentry.protocol:
            device_down.append(_remove_device(prev))
            was = False
        if not was:
            device_up.append(Op(dentry.protocol, "RegisterDevice", key, pb.RegisterDeviceRequest(device=dentry.proto)))
        elif prev is not None and prev.wire != dentry.wire:
            device_up.append(Op(dentry.protocol, "UpdateDevice", key, pb.UpdateDeviceRequest(device=dentry.proto)))
    for key, prev in old.devices.items():
        if key not in new.devices and prev.proto is not None:
            device_down.append(_remove_device(prev))
    return [op for op in model_up + device_down + device_up + model_down if op.protocol]


def _remove_model(entry: ModelEntry) -> Op:
    key = entry.resource.key
    return Op(
        entry.protocol,
        "RemoveDeviceModel",
        key,
        pb.RemoveDeviceModelRequest(modelName=key.name, modelNamespace=key.namespace),
    )


def _remove_device(entry: DeviceEntry) -> Op:
    key = entry.resource.key
    return Op(
        entry.protocol,
        "RemoveDevice",
        key,
        pb.RemoveDeviceRequest(deviceName=key.name, deviceNamespace=key.namespace),
    )
