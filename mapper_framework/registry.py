"""The devices and models a mapper runs: start, restart and stop runtimes as the agent says."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from dmi.v1beta1 import api_pb2 as pb
from mapper_framework.agent_client import Outbox
from mapper_framework.config import StateSettings
from mapper_framework.device import DeviceSpec, DeviceSpecError, device_spec
from mapper_framework.driver import Driver
from mapper_framework.push import PushManager
from mapper_framework.register_answer import RegisterAnswer
from mapper_framework.runtime import DeviceRuntime

log = logging.getLogger(__name__)

DriverFactory = Callable[[DeviceSpec], Driver[Any, Any]]
Key = tuple[str, str]


def _key(namespace: str, name: str) -> Key:
    return (namespace or "default", name)


class DeviceRegistry:
    def __init__(
        self,
        driver_factory: DriverFactory,
        outbox: Outbox,
        state: StateSettings,
        push: PushManager | None = None,
    ) -> None:
        self._factory = driver_factory
        self._push = push
        self._outbox = outbox
        self._state = state
        self.models: dict[Key, pb.DeviceModel] = {}
        # Devices as sent, serialised: a parsed message would keep the whole MapperRegister answer's arena alive
        # (megabytes with a thousand devices) for the sake of equality checks and GetDevice.
        self.devices: dict[Key, bytes] = {}
        self.runtimes: dict[Key, DeviceRuntime] = {}
        self._previous_twins: dict[Key, dict[str, Any]] = {}
        self._previous_specs: dict[Key, DeviceSpec] = {}

    # ------------------------------------------------------------------ models
    def set_model(self, model: pb.DeviceModel) -> None:
        """Models affect devices started after this; running devices get their own UpdateDevice."""
        own = pb.DeviceModel()
        own.CopyFrom(model)  # detached from the message it came in (see ``devices``)
        self.models[_key(model.namespace, model.name)] = own

    def remove_model(self, namespace: str, name: str) -> None:
        self.models.pop(_key(namespace, name), None)

    # ------------------------------------------------------------------ devices
    async def put_device(self, device: pb.Device, model: pb.DeviceModel | None = None) -> None:
        """Start the device, or restart it if it changed; other devices are not touched."""
        key = _key(device.namespace, device.name)
        if model is not None:
            self.set_model(model)
        old = self.devices.get(key)
        wire = device.SerializeToString(deterministic=True)
        if old is not None and old == wire and key in self.runtimes:
            return
        await self._stop(key)
        self.devices[key] = wire
        model = self.models.get(_key(device.namespace, device.spec.deviceModelReference))
        try:
            spec = device_spec(device, model)
        except DeviceSpecError as exc:
            log.error("%s; the device is not started", exc)
            self._outbox.put_state(key, "unhealthy")
            return
        runtime = DeviceRuntime(
            spec,
            self._factory(spec),
            self._outbox.put_twins,
            self._outbox.put_state,
            self._state,
            self._push.submit if self._push is not None else None,
        )
        if old is not None:
            # Keep what was applied and read: a restart must not re-write desired values already in place. But a
            # property that now lives elsewhere (its visitor or the device's address changed) has its desired
            # value written again: the old place held it, the new one does not.
            previous = self._previous_twins.pop(key, {})
            before = self._previous_specs.pop(key, None)
            old_props = {p.name: p for p in before.properties} if before is not None else {}
            for name, twin in previous.items():
                prop = spec.property(name)
                if prop is None:
                    continue
                was = old_props.get(name)
                moved = (
                    before is None
                    or was is None
                    or dict(was.visitor_data) != dict(prop.visitor_data)
                    or dict(before.protocol_data) != dict(spec.protocol_data)
                )
                runtime.twins[name] = dataclasses.replace(twin, observed_desired="") if moved else twin
        self.runtimes[key] = runtime
        runtime.start()
        log.info("device %s/%s %s", key[0], key[1], "restarted" if old is not None else "started")

    async def _stop(self, key: Key) -> None:
        runtime = self.runtimes.pop(key, None)
        if runtime is not None:
            self._previous_twins[key] = runtime.twins
            self._previous_specs[key] = runtime.spec
            await runtime.stop()

    async def remove_device(self, namespace: str, name: str) -> None:
        key = _key(namespace, name)
        await self._stop(key)
        self._previous_twins.pop(key, None)
        self._previous_specs.pop(key, None)
        self.devices.pop(key, None)
        self._outbox.forget(key)
        if self._push is not None:
            self._push.forget_device(*key)
        log.info("device %s/%s removed", key[0], key[1])

    async def sync(self, answer: pb.MapperRegisterResponse | RegisterAnswer) -> None:
        """Make the running set exactly the agent's list (after a (re-)registration).

        Two passes over the answer, one device parsed at a time (see :mod:`register_answer`).
        """
        for model in answer.modelList:
            self.set_model(model)
        wanted = {_key(d.namespace, d.name) for d in answer.deviceList}
        for key in list(self.devices):
            if key not in wanted:
                await self.remove_device(*key)
        for device in answer.deviceList:
            await self.put_device(device)

    async def close(self) -> None:
        for key in list(self.runtimes):
            await self._stop(key)

    def current(self, namespace: str, name: str) -> pb.Device | None:
        """The device as received, with the latest twins in its status (what GetDevice answers)."""
        key = _key(namespace, name)
        wire = self.devices.get(key)
        if wire is None:
            return None
        out = pb.Device()
        out.ParseFromString(wire)
        runtime = self.runtimes.get(key)
        if runtime is not None:
            out.status.twins.extend(runtime.twin_messages(list(runtime.spec.properties)))
        return out
