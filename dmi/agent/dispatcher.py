"""Calls mappers' ``DeviceMapperService`` when models or devices change.

One link per protocol (the last mapper to register a protocol owns it, as with
edgecore). Each link has its own queue and worker task, so a mapper that is down
or slow delays only its own calls. Calls that fail because the mapper cannot
be reached are retried with exponential backoff, in order; other failures are
logged with the mapper's answer and dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc

from dmi.agent.inventory import Op
from dmi.agent.store import MapperRecord
from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc

log = logging.getLogger(__name__)

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_MESSAGE = 64 * 1024 * 1024


def channel_target(address: str) -> str:
    """A gRPC target for what a mapper sends as ``MapperInfo.address`` (a socket path, or a URI)."""
    if address.startswith(("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")):
        return address
    if address.startswith("/"):
        return f"unix:{address}"
    return address


@dataclass
class LinkStats:
    ok: int = 0
    failed: int = 0
    retries: int = 0
    coalesced: int = 0
    calls: collections.Counter[str] = field(default_factory=collections.Counter)


class MapperLink:
    """The agent's client side of one mapper."""

    def __init__(self, record: MapperRecord, call_timeout: float, max_backoff: float) -> None:
        self.record = record
        self.stats = LinkStats()
        self._call_timeout = call_timeout
        self._max_backoff = max_backoff
        self._queue: collections.deque[Op] = collections.deque()
        self._inflight: Op | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._channel = grpc.aio.insecure_channel(
            channel_target(record.address),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                # gRPC's own reconnect backoff grows to 120 s: a mapper back after an outage would wait that long.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", int(max_backoff * 1000)),
            ],
        )
        self._stub = api_pb2_grpc.DeviceMapperServiceStub(self._channel)
        self._task = asyncio.create_task(self._run(), name=f"mapper-link-{record.name}")

    def submit(self, ops: list[Op]) -> None:
        if not ops:
            return
        for op in ops:
            self._enqueue(op)
        self._idle.clear()
        self._wakeup.set()

    def _enqueue(self, op: Op) -> None:
        """Queue ``op``, folding it into a queued call for the same object (never the one in flight).

        While a mapper is down, ten edits of a device become one call, not ten. A folded device call goes to the
        end, so it still follows any model call queued with it; a folded model call keeps its place, so it still
        precedes the device calls queued after it (a model depends on nothing).
        """
        kind = op.method.endswith("Model")
        pending = next(
            (
                p
                for p in self._queue
                if p is not self._inflight and p.key == op.key and p.method.endswith("Model") == kind
            ),
            None,
        )
        if pending is not None:
            created = pending.method in ("RegisterDevice", "CreateDeviceModel")
            removing = op.method in ("RemoveDevice", "RemoveDeviceModel")
            updating = op.method in ("UpdateDevice", "UpdateDeviceModel")
            if created and removing:
                self._queue.remove(pending)  # created and removed before the mapper heard of it
                self.stats.coalesced += 2
                return
            folded: Op | None = None
            if created and updating:
                folded = _as_create(op)
            elif pending.method in ("UpdateDevice", "UpdateDeviceModel") and (updating or removing):
                folded = op
            if folded is not None:
                self.stats.coalesced += 1
                if kind and not removing:  # a removal keeps following the device calls queued before it
                    at = next(i for i, queued in enumerate(self._queue) if queued is pending)
                    self._queue[at] = folded
                    return
                self._queue.remove(pending)
                op = folded
        self._queue.append(op)

    def clear(self) -> None:
        """Drop queued calls: a fresh registration answer already carries the current state."""
        self._queue.clear()
        self._idle.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._channel.close()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            op = self._queue[0]
            self._inflight = op
            try:
                await self._call(op)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RETRYABLE:
                    self.stats.retries += 1
                    if self.stats.retries == 1 or self.stats.retries % 20 == 0:
                        log.warning(
                            "mapper %s unreachable at %s (%s); %d call(s) queued, retrying",
                            self.record.name,
                            self.record.address,
                            exc.code().name,
                            len(self._queue),
                        )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                self.stats.failed += 1
                log.error("mapper %s rejected %s: %s %s", self.record.name, op, exc.code().name, exc.details())
            except Exception:  # never let one bad call end this mapper's worker
                self.stats.failed += 1
                log.exception("calling mapper %s for %s failed; dropping the call", self.record.name, op)
            else:
                self.stats.ok += 1
                self.stats.calls[op.method] += 1
                log.info("mapper %s: %s", self.record.name, op)
            backoff = 0.1
            self._inflight = None
            if self._queue and self._queue[0] is op:
                self._queue.popleft()

    async def _call(self, op: Op) -> Any:
        method = getattr(self._stub, op.method)
        return await method(op.request, timeout=self._call_timeout, wait_for_ready=False)


def _as_create(op: Op) -> Op:
    """An update folded into a pending create is still a create, carrying the newest object."""
    if op.method == "UpdateDevice":
        return Op(op.protocol, "RegisterDevice", op.key, pb.RegisterDeviceRequest(device=op.request.device))  # type: ignore[union-attr]
    return Op(op.protocol, "CreateDeviceModel", op.key, pb.CreateDeviceModelRequest(model=op.request.model))  # type: ignore[union-attr]


class Dispatcher:
    """Routes :class:`Op` s to the link of their protocol."""

    def __init__(self, call_timeout: float = 5.0, max_backoff: float = 5.0) -> None:
        self._links: dict[str, MapperLink] = {}
        self._call_timeout = call_timeout
        self._max_backoff = max_backoff

    def links(self) -> dict[str, MapperLink]:
        return dict(self._links)

    async def attach(self, record: MapperRecord) -> MapperLink:
        """Make ``record`` the owner of its protocol (replacing a previous mapper or incarnation)."""
        old = self._links.get(record.protocol)
        if old is not None:
            if old.record.address == record.address:
                old.record = record
                old.clear()
                return old
            if old.record.name != record.name:
                log.warning(
                    "mapper %s now owns protocol %r; %s will get no more device updates",
                    record.name,
                    record.protocol,
                    old.record.name,
                )
            await old.close()
        link = MapperLink(record, self._call_timeout, self._max_backoff)
        self._links[record.protocol] = link
        return link

    def submit(self, ops: list[Op]) -> None:
        by_protocol: dict[str, list[Op]] = {}
        for op in ops:
            by_protocol.setdefault(op.protocol, []).append(op)
        for protocol, group in by_protocol.items():
            link = self._links.get(protocol)
            if link is None:
                # Nobody serves it yet; the mapper gets everything when it registers.
                log.debug("no mapper for protocol %r: %d change(s) wait for its registration", protocol, len(group))
                continue
            link.submit(group)

    async def wait_idle(self) -> None:
        for link in list(self._links.values()):
            await link.wait_idle()

    async def close(self) -> None:
        for link in list(self._links.values()):
            await link.close()
        self._links.clear()
