"""Reported twins and device state, written back to the cluster.

Target ``devicestatus`` (KubeEdge >= 1.23): the DeviceStatus object of the same name and namespace, created with
a controller ownerReference to its Device when missing, then updated by JSON merge patch of its ``status``.
Target ``device`` (older clusters): a merge patch of the Device's own ``status``.

Writes are driven by the store: a device whose twins or state were committed is marked dirty. A device is
written at most once per ``interval``, always with what the store holds at that moment (so the latest values win
and nothing older can overwrite something newer), and every write takes a token from one budget shared by all
devices, so a thousand busy devices cannot flood the API server. While the API server is away the dirty set
simply waits; after an agent restart every known device is written once.

Which device gets the next token: the one whose cluster view the write makes newest, i.e. the longest span
between the report it would carry and the report its last write carried; among equals, the freshest report.
When the budget covers every report this is plain "write what came in"; when it does not (1,000 devices
reporting every second against 600 writes/s), devices that were skipped once win over devices written a
moment ago, so every device is written every second or second report and always just after a report,
instead of round-robin at random moments with values up to a second old. A write that brings less than 1.5
intervals of news is optional and takes only tokens above half the burst: the rest stays for the devices whose
view is falling behind, so their writes never queue for a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
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
_NEVER = 1e9  # the gain of a device never written (or whose write did not land): before any other
_BOOST = 1e8  # the gain of an overdue device, less its view's report time: before all but the never-written
_OVERDUE = 3.0  # intervals of a cluster view's age that make a dirty device overdue
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


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
        clock: Callable[[], float] = time.monotonic,
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
        self._last_write: dict[ObjectKey, float] = {}  # key -> when its last write started
        self._reported: dict[ObjectKey, float] = {}  # key -> when its latest report was committed
        self._written_report: dict[ObjectKey, float] = {}  # key -> when the report its last write carried came
        # Dirty devices that may be written now, best first: (-gain, -report time, seq, key). Entries go stale
        # when a newer report comes or the device is written; they are skipped when popped (and compacted).
        self._ready: list[tuple[float, float, int, ObjectKey]] = []
        self._waiting: list[tuple[float, int, ObjectKey]] = []  # dirty, written < interval ago: (due, seq, key)
        self._waiting_keys: set[ObjectKey] = set()
        self._seq = itertools.count()
        self._overdue: set[ObjectKey] = set()  # dirty devices queued ahead of the others (see _sweep)
        self._writing: set[ObjectKey] = set()  # a write in flight: none other for it until that one is answered
        self._current: dict[ObjectKey, int] = {}  # key -> seq of its one live entry in _ready
        self._next_sweep = 0.0
        self._clock = clock
        # A write carrying less news than this (s) is optional: it takes only tokens above the reserve.
        self._urgent_gain = 1.5 * interval_s
        self._reserve = burst // 2
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
        self._delay = BACKOFF_START_S
        self._in_flight: set[asyncio.Task[None]] = set()

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
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self.patcher is not None:
            await self.patcher.close()

    def mark(self, key: ObjectKey) -> None:
        now = self._clock()
        self._dirty.setdefault(key, now)
        self._reported[key] = now
        self._overdue.discard(key)  # news again: its gain counts (and the sweep may boost it again later)
        self._queue(key, now)
        self._wake.set()

    # ------------------------------------------------------------------ which device next
    def _queue(self, key: ObjectKey, now: float) -> None:
        if key in self._waiting_keys or key in self._writing:
            return  # queued when its interval is up / its write is answered, with the report latest then
        due = self._last_write.get(key, -math.inf) + self.interval_s
        if due > now:
            self._waiting_keys.add(key)
            heapq.heappush(self._waiting, (due, next(self._seq), key))
            return
        reported = self._reported.get(key, now)
        self._push(key, reported - self._written_report.get(key, -_NEVER), reported)
        if len(self._ready) > 2 * len(self._dirty) + 64:
            self._compact()

    def _push(self, key: ObjectKey, gain: float, reported: float) -> None:
        seq = next(self._seq)
        self._current[key] = seq  # any older entry of this key is dead from now on
        heapq.heappush(self._ready, (-gain, -reported, seq, key))

    def _compact(self) -> None:
        # Under a short budget most reports are superseded before they are written: drop their dead entries.
        self._ready = [e for e in self._ready if self._valid(e)]
        heapq.heapify(self._ready)

    def _valid(self, entry: tuple[float, float, int, ObjectKey]) -> bool:
        key = entry[3]
        return self._current.get(key) == entry[2] and key in self._dirty and key not in self._waiting_keys

    def _promote(self, now: float) -> float | None:
        """Move the devices whose interval is up to the ready queue; the seconds until the next one, if any."""
        while self._waiting and self._waiting[0][0] <= now:
            _due, _seq, key = heapq.heappop(self._waiting)
            self._waiting_keys.discard(key)
            if key in self._dirty:
                self._queue(key, now)
        if now >= self._next_sweep:
            self._sweep(now)
        return self._waiting[0][0] - now if self._waiting else None

    def _sweep(self, now: float) -> None:
        # A device that stopped reporting keeps the gain of its last report, and loses every tie to devices that
        # report on (fresher): without this its last values could wait for ever under a short budget. Once the
        # cluster's view of it is _OVERDUE intervals old it goes before all but never-written devices, oldest
        # view first.
        self._next_sweep = now + self.interval_s
        limit = _OVERDUE * self.interval_s
        for key in self._dirty:
            written = self._written_report.get(key)
            if written is None or key in self._waiting_keys or key in self._writing or key in self._overdue:
                continue
            if now - written >= limit:
                self._overdue.add(key)
                # The older the view, the sooner; fixed by what the view holds, so a boost never goes stale.
                self._push(key, _BOOST - written, self._reported[key])

    def _pop_best(self) -> ObjectKey | None:
        while self._ready:
            entry = heapq.heappop(self._ready)
            if self._valid(entry):
                return entry[3]
        return None

    def _take_next(self) -> tuple[ObjectKey, float | None] | None:
        """The device to write now, marked as being written; with the report time its previous write carried."""
        self._promote(self._clock())
        key = self._pop_best()
        if key is None:
            return None
        now = self._clock()
        self._dirty.pop(key, None)
        self._overdue.discard(key)
        self._current.pop(key, None)
        self._writing.add(key)
        self._last_write[key] = now
        carried = self._written_report.get(key)
        self._written_report[key] = self._reported.get(key, now)
        return key, carried

    def _answered(self, key: ObjectKey, ok: bool | None, carried: float | None) -> None:
        """A write is over: landed (``ok``), refused (False) or unanswered/cancelled (None)."""
        self._writing.discard(key)
        if not ok:
            self._requeue(key, carried)
        elif key in self._dirty:  # reports came while it was in flight: queue their write
            self._queue(key, self._clock())
        self._wake.set()  # the loop may be asleep with nothing else to write

    def _requeue(self, key: ObjectKey, carried: float | None) -> None:
        """A write that did not land: dirty again, with the priority it had (what it carried is not there)."""
        if carried is None:
            self._written_report.pop(key, None)
        else:
            self._written_report[key] = carried
        self._dirty.setdefault(key, self._clock())
        self._reported.setdefault(key, self._clock())
        self._queue(key, self._clock())

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        while True:
            now = self._clock()
            next_due = self._promote(now)
            gain = self._best_gain()
            if gain is None:  # nothing may be written now
                await self._sleep(next_due)
                continue
            level = self._budget.level()
            if not self._may_spend(gain, level):
                short = (self._reserve + 1 - level) / self._budget.rate
                short = min(short, max(0.0, self._next_sweep - now))  # an overdue device must not wait for tokens
                await self._sleep(short if next_due is None else min(short, next_due))
                continue
            wait = self._budget.wait_time()  # takes a token when one is there
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await self._slots.acquire()  # a few writes in flight: one round trip each would cap the rate
            # Chosen only now, with the token and the slot in hand: reports that came meanwhile count.
            taken = self._take_next()
            if taken is None:
                self._slots.release()
                self._budget.refund()
                continue
            task = asyncio.create_task(self._write_one(*taken))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            if not self.reachable:
                # While the API server is away, one write at a time probes it; the others wait for its answer.
                await asyncio.wait({task})
            if self._down:
                if self._in_flight:
                    await asyncio.gather(*self._in_flight, return_exceptions=True)
                if self.reachable:
                    log.warning("cluster API unreachable: %d device status(es) kept, latest values", len(self._dirty))
                self.reachable = False
                self._down = False
                await asyncio.sleep(self._delay)
                self._delay = min(self._delay * 2, BACKOFF_MAX_S)
                continue
            await asyncio.sleep(0)  # let reports in between writes

    def _may_spend(self, gain: float, level: float) -> bool:
        """Whether the best write (bringing ``gain`` s of news) may take a token with ``level`` tokens there.

        A write that brings less than ~one report of news may take only a token above the reserve, which is kept
        for devices whose cluster view is falling behind (so their writes never wait for a token).
        """
        return gain >= self._urgent_gain or level >= self._reserve + 1

    def _best_gain(self) -> float | None:
        """The gain of the best write that may be made now (dead entries heading the queue are dropped)."""
        while self._ready and not self._valid(self._ready[0]):
            heapq.heappop(self._ready)
        return -self._ready[0][0] if self._ready else None

    async def _sleep(self, seconds: float | None) -> None:
        """Until a report is marked, or ``seconds`` (None: no limit)."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if seconds is None else max(0.002, seconds)):
                await self._wake.wait()

    async def _write_one(self, key: ObjectKey, carried: float | None) -> None:
        ok: bool | None = None
        try:
            ok = await self._write(key)
        finally:
            self._slots.release()
            self._answered(key, ok, carried)
        if ok is None:
            self._down = True
        elif ok:
            if not self.reachable:
                log.info("cluster API back: writing %d device status(es)", len(self._dirty))
            self.reachable = True
            self._delay = BACKOFF_START_S

    async def _write(self, key: ObjectKey) -> bool | None:
        """True written; False refused (retried later); None the API server did not answer."""
        device = self._inventory().devices.get(key)
        if device is None:
            self._forget(key)
            return True  # no longer ours: nothing to write
        twins, state = self.store.twins(key), self.store.state(key)
        try:
            patch = {"status": status_body(twins, state)}
        except Exception as exc:  # this device's data, not the API server: the others go on
            return self._refused(key, 0, "cannot build the status", repr(exc))
        try:
            code, reason, message = await self._send(key, patch, device, twins, state)
        except asyncio.CancelledError:
            raise
        except Exception:
            return None
        if code == 409:
            self.conflicts += 1
            return False
        if code >= 300 or code == 0:  # 0: refused before it was sent (its DeviceStatus could not be built)
            return self._refused(key, code, reason, message)
        self.writes += 1
        return True

    def _refused(self, key: ObjectKey, code: int, reason: str, message: str) -> bool:
        self.failures += 1
        text = f"{code} {reason}: {message}" if code else f"{reason}: {message}"
        if (key, text) not in self._logged:
            self._logged.add((key, text))
            log.error("cluster refused the status of device %s: %s", key, text)
        return False

    def _forget(self, key: ObjectKey) -> None:
        """A device that is no longer ours: drop what the scheduler kept of it."""
        for table in (self._dirty, self._reported, self._written_report, self._last_write, self._current):
            table.pop(key, None)
        self._overdue.discard(key)
        self._logged = {entry for entry in self._logged if entry[0] != key}
        self.store.forget(key)

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
                doc = device_status_doc(dict(device.resource.document), twins, state)
            except Exception as exc:  # this device's data, not the API server
                return 0, "cannot build its DeviceStatus", repr(exc)
            try:
                await self._create(key, doc)
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
