"""Devices of this node and the models they use, listed and watched on the cluster, fed to the dispatcher.

Each resource is kept by list + watch: the list gives the full state and a resourceVersion, the watch follows
from there, and a broken stream resumes from the last version seen. When the server says that version is gone
(410), the resource is listed again and the difference (including deletions the watch never told) is applied:
the dispatcher compares whole snapshots, so replays and relists never dispatch a change twice.

A Device whose ``spec.nodeName`` is another node is not ours: moved away, it is removed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from dmi.agent.folder_source import Contents
from dmi.agent.kube import clean, resources, to_dict
from dmi.resources import DeviceModelResource, DeviceResource, ObjectKey, parse_device, parse_model
from dmi.validate import ValidationReport

ALL_NAMESPACES = "*"  # lightkube's word for a cluster-wide list or watch

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


class KubeSource:
    """Keeps ``devices`` (this node's) and ``models`` current; calls ``on_update`` with a snapshot on change."""

    def __init__(
        self,
        client: Any,
        node: str,
        on_update: Callable[[Contents], object],
        debounce_s: float = 0.05,
        namespace: str = "",
    ) -> None:
        self.client = client
        self.node = node
        self.namespace = namespace or ALL_NAMESPACES  # "": every namespace
        self._on_update = on_update
        self._debounce_s = debounce_s
        self.devices: dict[ObjectKey, dict[str, Any]] = {}
        self.models: dict[ObjectKey, dict[str, Any]] = {}
        self.synced = asyncio.Event()  # both resources listed once and the snapshot handed over
        self.connected = False
        self.last_error = ""  # why the API server could not be reached, the last time it could not
        self.relists = 0
        self.watch_restarts = 0
        self._listed: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: asyncio.TimerHandle | None = None
        self._bad: set[tuple[str, str, str]] = set()

    def start(self) -> None:
        device, model, _status = resources()
        self._tasks = [
            asyncio.create_task(self._follow("Device", device, self.devices), name="kube-devices"),
            asyncio.create_task(self._follow("DeviceModel", model, self.models), name="kube-models"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pending is not None:
            self._pending.cancel()

    # ------------------------------------------------------------------ list + watch
    def _mine(self, kind: str, doc: dict[str, Any]) -> bool:
        if kind != "Device":
            return True
        return ((doc.get("spec") or {}).get("nodeName") or "") == self.node

    @staticmethod
    def _key(doc: dict[str, Any]) -> ObjectKey:
        meta = doc.get("metadata") or {}
        return ObjectKey(meta.get("namespace") or "default", meta.get("name") or "")

    async def _list(self, kind: str, res: Any, into: dict[ObjectKey, dict[str, Any]]) -> str:
        # Every namespace unless told otherwise: the client's default one (the kubeconfig context's, or the service
        # account's in a pod) says where the agent runs, not where the Devices of this node live.
        listing = self.client.list(res, namespace=self.namespace)
        fresh: dict[ObjectKey, dict[str, Any]] = {}
        async for obj in listing:
            doc = to_dict(obj)
            if self._mine(kind, doc):
                fresh[self._key(doc)] = clean(doc)
        version = str(listing.resourceVersion)
        if fresh != into:
            into.clear()
            into.update(fresh)
            self._changed()
        self._listed.add(kind)
        self._changed()  # the first snapshot also marks the source synced
        return version

    async def _follow(self, kind: str, res: Any, into: dict[ObjectKey, dict[str, Any]]) -> None:
        from lightkube import ApiError

        version: str | None = None
        delay = BACKOFF_FIRST_S
        while True:
            try:
                if version is None:
                    version = await self._list(kind, res, into)
                    self.relists += 1
                    if not self.connected:
                        log.info("cluster: %s listed (%d of this node's)", kind, len(into))
                    self.connected = True
                async for event, obj in self.client.watch(res, namespace=self.namespace, resource_version=version):
                    doc = to_dict(obj)
                    version = str((doc.get("metadata") or {}).get("resourceVersion") or version)
                    self._apply(kind, event, doc, into)
                    delay = BACKOFF_FIRST_S
                # A clean end (server timeout): go on from where we are.
                self.watch_restarts += 1
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.status.code == 410:
                    log.info("cluster: %s watch expired (410 Gone); listing again", kind)
                    version = None
                    continue
                log.warning("cluster: %s watch failed: %s; retrying in %.1f s", kind, exc.status.message, delay)
                self.connected = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            except Exception as exc:  # connection refused, reset, timeout, TLS: the API server is away
                reason = f"{type(exc).__name__}: {exc}"[:300]
                if self.connected or reason != self.last_error:
                    # Once per outage and per new reason: a wrong address, CA or token must be visible from the
                    # first attempt, not only after a first success.
                    log.warning(
                        "cluster API unreachable (%s); serving the last known devices, retrying with backoff. "
                        "Hint: check the server address, its CA and the token of the kubeconfig or service account",
                        reason,
                    )
                self.last_error = reason
                self.connected = False
                self.watch_restarts += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _apply(self, kind: str, event: str, doc: dict[str, Any], into: dict[ObjectKey, dict[str, Any]]) -> None:
        if event in ("BOOKMARK", "ERROR"):
            return
        key = self._key(doc)
        if event == "DELETED" or not self._mine(kind, doc):
            if into.pop(key, None) is not None:
                self._changed()
            return
        cleaned = clean(doc)
        if into.get(key) != cleaned:
            into[key] = cleaned
            self._changed()

    # ------------------------------------------------------------------ snapshots
    def _changed(self) -> None:
        # Many events arrive together (a list, a replay): hand one snapshot over for all of them.
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self._debounce_s, self._emit)

    def _emit(self) -> None:
        self._pending = None
        self._on_update(self.snapshot())
        if self._listed >= {"Device", "DeviceModel"}:
            self.synced.set()  # both listed and handed over: the agent may serve

    def snapshot(self) -> Contents:
        devices: list[DeviceResource] = []
        wanted: set[ObjectKey] = set()
        for key, doc in sorted(self.devices.items(), key=_by_key):
            try:
                device = parse_device(doc)
            except Exception as exc:  # the API server checked the schema; our parser may still refuse
                self._log_bad("Device", key, exc)
                continue
            devices.append(device)
            wanted.add(ObjectKey(key.namespace, device.model_ref))
        models: list[DeviceModelResource] = []
        for key, doc in sorted(self.models.items(), key=_by_key):
            if key not in wanted:
                continue  # models of other nodes' devices are not ours to hand out
            try:
                models.append(parse_model(doc))
            except Exception as exc:
                self._log_bad("DeviceModel", key, exc)
        return Contents(tuple(models), tuple(devices), ValidationReport())

    def _log_bad(self, kind: str, key: ObjectKey, exc: Exception) -> None:
        mark = (kind, key.namespace, key.name)
        if mark not in self._bad:
            self._bad.add(mark)
            log.error("cluster %s %s cannot be used: %s", kind, key, exc)


def _by_key(item: tuple[ObjectKey, dict[str, Any]]) -> tuple[str, str]:
    return item[0].namespace, item[0].name
