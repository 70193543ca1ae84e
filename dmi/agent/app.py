"""The edge agent process: store + CR source + dispatcher + DeviceManagerService on a Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc

from dmi import sockets
from dmi.agent.dispatcher import MAX_MESSAGE, Dispatcher
from dmi.agent.folder_source import Contents, FolderSource
from dmi.agent.inventory import Inventory, diff
from dmi.agent.ratelimit import TokenBucket
from dmi.agent.service import DeviceManager
from dmi.agent.store import AgentStore, ResourceRow
from dmi.anypack import Packing
from dmi.resources import ObjectKey, is_kind, parse_device, parse_model

FOLDER_ORIGINS = "folder_origins"  # store meta: the CR file each served document came from

log = logging.getLogger(__name__)

StatusTarget = Literal["devicestatus", "device"]


@dataclass(frozen=True)
class AgentConfig:
    socket: Path = sockets.DEFAULT_DMI_SOCKET
    state_dir: Path = Path("/var/lib/kubeedge-mapper")
    devices_dir: Path | None = None
    packing: Packing = "edgecore"
    rate_limit: tuple[float, int] | None = None
    poll_interval: float = 1.0
    # How long a removed device or property must stay away before its twins are deleted (see _sync_cache).
    forget_after_s: float = 30.0
    call_timeout: float = 5.0
    # Where reported twins show: a DeviceStatus object (KubeEdge >= 1.23) or the Device's .status (older).
    status_target: StatusTarget = "devicestatus"
    # The cluster: Devices of ``node`` come from its API (kubeconfig file, or in-cluster when in_cluster).
    kubeconfig: Path | None = None
    in_cluster: bool = False
    node: str = ""
    # Only Devices and DeviceModels of this namespace ("": every namespace, which needs a ClusterRole).
    namespace: str = ""
    status_interval_s: float = 1.0
    status_qps: float = 600.0
    status_burst: int = 1000
    cluster_wait_s: float = 10.0  # at start, how long to wait for the first list before serving from the cache

    @property
    def cluster(self) -> bool:
        return self.kubeconfig is not None or self.in_cluster

    @property
    def db_path(self) -> Path:
        return self.state_dir / "agent.db"


class Agent:
    """Create, ``await start()``, then ``await stop()``; ``inventory`` is the current snapshot."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.started = asyncio.Event()  # set once the socket serves
        self.socket_path = sockets.resolve_socket(config.socket)
        self.store = AgentStore(config.db_path)
        self.dispatcher = Dispatcher(call_timeout=config.call_timeout)
        self.inventory = Inventory()
        self.limiter = TokenBucket(*config.rate_limit) if config.rate_limit else None
        self.service = DeviceManager(self.store, self.dispatcher, lambda: self.inventory, self.limiter, self._changed)
        self._server: grpc.aio.Server | None = None
        self._source: FolderSource | None = None
        self.kube_source: Any = None
        self.status_writer: Any = None
        self._kube_client: Any = None
        self._listeners: list[Callable[[], None]] = []
        self._sync_tasks: set[asyncio.Task[None]] = set()
        self._forget_tasks: set[asyncio.Task[None]] = set()
        self._origins_written: tuple[tuple[str, str, str, str], ...] | None = None

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (on the loop) after any change of twins, states, mappers or inventory."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in self._listeners:
            callback()

    async def start(self) -> None:
        # First of all: a second agent refused the socket must leave the running one's state alone (it wrote the
        # status target, replaced the served inventory and attached to its mappers before finding out).
        sockets.claim_socket(self.socket_path)
        self.store.start()
        await self.store.set_meta("status_target", self.config.status_target)
        # Start from what was served last time: changes made while the agent was down reach the mappers.
        served = self.store.resources()  # read once: the cached inventory and the folder's last good versions
        self.inventory = self._cached_inventory(served)
        for record in self.store.mappers():
            if record.with_data and record.address:
                await self.dispatcher.attach(record)
        if self.config.devices_dir is not None:
            self._source = FolderSource(
                self.config.devices_dir,
                self._apply,
                self.config.poll_interval,
                last_served=[row.doc for row in served],
                origins=self._folder_origins(),
            )
            self._apply(await asyncio.to_thread(self._source.load))
        if self.config.cluster:
            await self._start_cluster()
        await self._serve()
        if self._source is not None:
            self._source.start()
        self.started.set()

    async def _start_cluster(self) -> None:
        from dmi.agent.kube import make_client, make_status_patcher
        from dmi.agent.kube_source import KubeSource
        from dmi.agent.kube_status import StatusWriter

        self._kube_client = make_client(None if self.config.in_cluster else self.config.kubeconfig)
        self.kube_source = KubeSource(self._kube_client, self.config.node, self._apply, namespace=self.config.namespace)
        self.kube_source.start()
        try:
            await asyncio.wait_for(self.kube_source.synced.wait(), self.config.cluster_wait_s)
        except TimeoutError:
            # Edge autonomy: the cluster is away, the mappers get the devices this agent served last time.
            log.warning(
                "cluster API not reachable within %.0f s (%s): serving the %d device(s) cached from last time",
                self.config.cluster_wait_s,
                self.kube_source.last_error or "no answer yet",
                len(self.inventory.devices),
            )
        self.status_writer = StatusWriter(
            self._kube_client,
            self.store,
            lambda: self.inventory,
            self.config.status_target,
            self.config.status_interval_s,
            self.config.status_qps,
            self.config.status_burst,
            patcher=make_status_patcher(None if self.config.in_cluster else self.config.kubeconfig),
        )
        self.status_writer.start()

    def _cached_inventory(self, rows: list[ResourceRow]) -> Inventory:
        models, devices = [], []
        for row in rows:
            if is_kind(row.doc, "DeviceModel"):
                models.append(parse_model(row.doc))
            elif is_kind(row.doc, "Device"):
                devices.append(parse_device(row.doc))
        return Inventory.build(models, devices, self.config.packing)

    def _folder_origins(self) -> dict[tuple[str, str, str], str] | None:
        text = self.store.meta(FOLDER_ORIGINS)
        if text is None:
            return None
        try:
            return {(k, ns, name): file for k, ns, name, file in json.loads(text)}
        except (ValueError, TypeError):
            return None

    def _apply(self, contents: Contents) -> None:
        new = Inventory.build(contents.models, contents.devices, self.config.packing)
        if contents.origins != self._origins_written:
            self._origins_written = contents.origins
            task = asyncio.get_running_loop().create_task(
                self.store.set_meta(FOLDER_ORIGINS, json.dumps(contents.origins))
            )
            self._sync_tasks.add(task)
            task.add_done_callback(self._sync_tasks.discard)
        old, self.inventory = self.inventory, new
        ops = diff(old, new)
        for entry in new.undeliverable():
            log.warning(
                "device %s waits for DeviceModel %s: not sent to any mapper until it exists",
                entry.resource.key,
                entry.resource.model_key,
            )
        if ops:
            log.info("CR change: %s", "; ".join(str(op) for op in ops))
        self.dispatcher.submit(ops)
        task = asyncio.get_running_loop().create_task(self._sync_cache(old, new))
        self._sync_tasks.add(task)
        task.add_done_callback(self._sync_tasks.discard)
        self._changed()

    async def _sync_cache(self, old: Inventory, new: Inventory) -> None:
        upserts: list[tuple[str, ObjectKey, dict[str, object]]] = []
        deletes: list[tuple[str, ObjectKey]] = []
        for key, m in new.models.items():
            if key not in old.models or old.models[key].resource.document != m.resource.document:
                upserts.append(("DeviceModel", key, dict(m.resource.document)))
        for key, d in new.devices.items():
            if key not in old.devices or old.devices[key].resource.document != d.resource.document:
                upserts.append(("Device", key, dict(d.resource.document)))
        deletes += [("DeviceModel", k) for k in old.models if k not in new.models]
        deletes += [("Device", k) for k in old.devices if k not in new.devices]
        if upserts or deletes:
            try:
                await self.store.sync_resources(upserts, deletes, int(time.time() * 1000))
            except Exception:  # the served inventory is right; only the restart cache is behind
                log.exception("recording the served CRs in %s failed", self.store.path)
        # What a device no longer has is no longer reported: the twins of removed properties and devices go, once
        # they have stayed away for forget_after_s. A snapshot can lack them for a moment (a cluster list of one
        # kind answered before the other, a CR file caught mid-write), and deleting at once would lose them for good.
        drops: list[tuple[ObjectKey, frozenset[str] | None]] = [(k, None) for k in old.devices if k not in new.devices]
        for key, entry in new.devices.items():
            before = old.devices.get(key)
            if before is not None and before.property_names - entry.property_names:
                drops.append((key, before.property_names - entry.property_names))
        if drops:
            task = asyncio.get_running_loop().create_task(self._forget_later(drops))
            self._forget_tasks.add(task)
            task.add_done_callback(self._forget_tasks.discard)

    async def _forget_later(self, drops: list[tuple[ObjectKey, frozenset[str] | None]]) -> None:
        await asyncio.sleep(self.config.forget_after_s)
        for key, props in drops:
            entry = self.inventory.devices.get(key)
            if props is None and entry is not None:
                continue  # it came back
            if props is not None:
                if entry is None:
                    continue  # the device went as a whole: its own drop covers it
                props = props - entry.property_names
                if not props:
                    continue
            try:
                await self.store.drop(key, props)
            except Exception:
                log.exception(
                    "deleting the twins of %s%s failed", key, f" ({', '.join(sorted(props))})" if props else ""
                )

    async def _serve(self) -> None:
        sockets.claim_socket(self.socket_path)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ]
        )
        server.add_generic_rpc_handlers((self.service.handler(),))
        with sockets.private_umask():
            server.add_insecure_port(f"unix:{self.socket_path}")
            await server.start()
        sockets.restrict(self.socket_path)
        self._server = server
        log.info("DeviceManagerService listening on %s", self.socket_path)

    async def reload(self) -> None:
        """Re-read the CR folder now (tests and SIGHUP)."""
        if self._source is not None:
            self._apply(await asyncio.to_thread(self._source.load))

    async def settle(self) -> None:
        """Wait until every queued mapper call and cache write is done (tests)."""
        await self.dispatcher.wait_idle()
        if self._sync_tasks:
            await asyncio.gather(*self._sync_tasks)

    async def stop(self) -> None:
        for task in list(self._forget_tasks):
            task.cancel()
        if self._source is not None:
            await self._source.stop()
        if self.kube_source is not None:
            await self.kube_source.stop()
        if self.status_writer is not None:
            await self.status_writer.stop()
        if self._kube_client is not None:
            with contextlib.suppress(Exception):
                await self._kube_client.close()
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None
            # Only the agent that created the socket removes it (a refused second agent must not).
            self.socket_path.unlink(missing_ok=True)
        await self.dispatcher.close()
        if self._sync_tasks:
            await asyncio.gather(*self._sync_tasks, return_exceptions=True)
        await self.store.close()
