"""Reported twins and device state, written back to the cluster.

Target ``devicestatus`` (KubeEdge >= 1.23): the DeviceStatus object of the same name and namespace, created with
a controller ownerReference to its Device when missing, then updated by JSON merge patch of its ``status``.
Target ``device`` (older clusters): a merge patch of the Device's own ``status``.

Writes are driven by the store: a device whose twins or state were committed is marked dirty. A device is
written at most once per ``interval``, always with what the store holds at that moment (so the latest values win
and nothing older can overwrite something newer), and every write takes a token from one budget shared by all
devices, so a thousand busy devices cannot flood the API server. While the API server is away the dirty set
simply waits; after an agent restart every known device is written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from lightkube import ApiError
from lightkube.types import PatchType

from dmi.agent.inventory import Inventory
from dmi.agent.kube import resources
from dmi.agent.kube_http import StatusPatcher
from dmi.agent.ratelimit import TokenBucket
from dmi.agent.status import device_status_doc, status_body
from dmi.agent.store import AgentStore
from dmi.resources import ObjectKey

log = logging.getLogger(__name__)

MERGE = PatchType.MERGE


class StatusWriter:
    """Start with ``start()``; ``stats`` counts writes, conflicts, failures."""

    def __init__(
        self,
        client: Any,
        store: AgentStore,
        inventory: Callable[[], Inventory],
        target: str = "devicestatus",
        interval_s: float = 1.0,
        qps: float = 600.0,
        burst: int = 1000,
        concurrency: int = 16,
        patcher: StatusPatcher | None = None,
    ) -> None:
        self.client = client
        #: the fast path for patches (aiohttp); None: every request through lightkube
        self.patcher = patcher
        self.store = store
        self._inventory = inventory
        self.target = target
        self.interval_s = interval_s
        self._budget = TokenBucket(qps, burst)
        self._device_res, _model_res, self._status_res = resources()
        self._dirty: dict[ObjectKey, float] = {}  # key -> when it became dirty (monotonic)
        self._last_write: dict[ObjectKey, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._logged: set[tuple[ObjectKey, str]] = set()
        self.writes = 0
        self.creates = 0
        self.conflicts = 0
        self.failures = 0
        self.reachable = True
        self._slots = asyncio.Semaphore(concurrency)
        self._down = False

    def start(self) -> None:
        self.store.on_written.append(self.mark)
        for key in self._inventory().devices:
            self.mark(key)  # after a restart, what the cluster holds may be older than the store
        self._task = asyncio.create_task(self._run(), name="kube-status-writer")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.store.on_written.remove(self.mark)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.patcher is not None:
            await self.patcher.close()

    def mark(self, key: ObjectKey) -> None:
        self._dirty.setdefault(key, time.monotonic())
        self._wake.set()

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        delay = 0.5
        in_flight: set[asyncio.Task[None]] = set()
        while True:
            if not self._dirty:
                self._wake.clear()
                await self._wake.wait()
            now = time.monotonic()
            due = [
                k for k, since in sorted(self._dirty.items(), key=lambda kv: kv[1])
                if now - self._last_write.get(k, 0.0) >= self.interval_s
            ]  # fmt: skip
            if not due:
                soonest = min(self._last_write.get(k, 0.0) + self.interval_s for k in self._dirty)
                await asyncio.sleep(max(0.01, soonest - now))
                continue
            for key in due:
                if self._down:
                    break
                wait = self._budget.wait_time()
                while wait > 0:
                    await asyncio.sleep(wait)
                    wait = self._budget.wait_time()
                await self._slots.acquire()  # a few writes in flight: one round trip each would cap the rate
                self._dirty.pop(key, None)
                self._last_write[key] = time.monotonic()
                task = asyncio.create_task(self._write_one(key))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if self._down:
                if in_flight:
                    await asyncio.gather(*in_flight, return_exceptions=True)
                if self.reachable:
                    log.warning("cluster API unreachable: %d device status(es) kept, latest values", len(self._dirty))
                self.reachable = False
                self._down = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if not self.reachable:
                log.info("cluster API back: writing %d device status(es)", len(self._dirty))
            self.reachable = True
            delay = 0.5
            await asyncio.sleep(0)  # let reports in between rounds

    async def _write_one(self, key: ObjectKey) -> None:
        try:
            ok = await self._write(key)
        finally:
            self._slots.release()
        if ok is None:  # the API server is away: keep it dirty, pause the round
            self._dirty.setdefault(key, time.monotonic())
            self._down = True
        elif not ok:
            self._dirty.setdefault(key, time.monotonic())

    async def _write(self, key: ObjectKey) -> bool | None:
        """True written; False refused (retried later); None the API server did not answer."""
        device = self._inventory().devices.get(key)
        if device is None:
            return True  # no longer ours: nothing to write
        twins, state = self.store.twins(key), self.store.state(key)
        try:
            code, reason, message = await self._send(key, {"status": status_body(twins, state)}, device, twins, state)
        except asyncio.CancelledError:
            raise
        except Exception:
            return None
        if code == 409:
            self.conflicts += 1
            return False
        if code >= 300:
            self.failures += 1
            text = f"{code} {reason}: {message}"
            if (key, text) not in self._logged:
                self._logged.add((key, text))
                log.error("cluster refused the status of device %s: %s", key, text)
            return False
        self.writes += 1
        return True

    async def _send(
        self, key: ObjectKey, patch: dict[str, Any], device: Any, twins: Any, state: Any
    ) -> tuple[int, str, str]:
        """The patch (and the DeviceStatus's creation when it is missing): the answer's code, reason, message."""
        try:
            if self.patcher is not None:
                res = await self.patcher.patch(self.target, key.namespace, key.name, patch)
                code, reason, message = res.code, res.reason, res.message
            elif self.target == "device":
                await self.client.patch(self._device_res, key.name, patch, namespace=key.namespace, patch_type=MERGE)
                code, reason, message = 200, "", ""
            else:
                await self.client.patch(self._status_res, key.name, patch, namespace=key.namespace, patch_type=MERGE)
                code, reason, message = 200, "", ""
        except ApiError as exc:
            code, reason, message = exc.status.code or 500, exc.status.reason or "", exc.status.message or ""
        if code == 404 and self.target != "device":
            try:
                await self._create(key, device_status_doc(dict(device.resource.document), twins, state))
            except ApiError as exc:
                return exc.status.code or 500, exc.status.reason or "", exc.status.message or ""
            return 200, "", ""
        return code, reason, message

    async def _create(self, key: ObjectKey, doc: dict[str, Any]) -> None:
        try:
            await self.client.create(self._status_res(doc), namespace=key.namespace)
            self.creates += 1
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            # Created meanwhile (another writer, a retry): patch it.
            await self.client.patch(
                self._status_res, key.name, {"status": doc["status"]}, namespace=key.namespace, patch_type=MERGE
            )
