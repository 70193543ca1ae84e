"""One device at run time: collect, keep twins, report, apply desired values, probe state.

Properties that share a collect cycle are read together (``Driver.read_many``),
so a protocol that can coalesce requests gets the chance. Twins are reported
per report cycle, all due properties of the device in one ``ReportDeviceStatus``
(through the outbox: latest value wins under back-pressure). A failed read
marks that property stale (its last good value stays); when every read of a
round fails ``failures_offline`` rounds in a row the device is reported
``offline``, and the first good round brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from dmi.v1beta1 import api_pb2 as pb
from mapper_framework.config import StateSettings
from mapper_framework.device import DeviceSpec, PropertySpec
from mapper_framework.driver import ConfigError, Driver, StreamNotSupported, parse_config
from mapper_framework.push import Record
from mapper_framework.twin_report import TwinReport, add_twins
from mapper_framework.values import PropertyValueError, formatter, parse_value, reportable

log = logging.getLogger(__name__)

STATES = ("ok", "online", "offline", "unhealthy", "unknown")
_FREE_TEXT = frozenset(("string", "bytes", "stream"))


class DeviceNotStarted(RuntimeError):
    """The device's configData was refused (or is still being read): nothing can be written to it."""


@dataclass(slots=True)
class Twin:
    """The latest known value of one property."""

    value: str = ""
    timestamp_ms: int = 0
    observed_desired: str = ""
    error: str = ""  # the last read error; the value above is then stale
    error_kind: str = ""  # its exception type (a change of kind is logged again)
    failures: int = 0  # consecutive
    reads: int = 0
    errors: int = 0  # total


# One property of a collect loop: its spec, its twin, its value formatter, whether its text is free (string...).
_Slot = tuple[PropertySpec, Twin, Callable[[Any], str], bool]


def now_ms() -> int:
    return int(time.time() * 1000)


def normalise_state(state: str) -> str:
    lowered = state.lower()
    if lowered == "disconnected":  # mapper-framework's word; edgecore ignores it
        return "offline"
    return lowered if lowered in STATES else "unknown"


class DeviceRuntime:
    """Runs one device with its driver. ``report`` and ``report_state`` feed the outbox."""

    def __init__(
        self,
        spec: DeviceSpec,
        driver: Driver[Any, Any],
        report: Callable[[tuple[str, str], list[TwinReport]], None],
        report_state: Callable[[tuple[str, str], str], None],
        state_settings: StateSettings | None = None,
        push: Callable[[pb.PushMethod, Record, int], None] | None = None,
    ) -> None:
        self.spec = spec
        self.driver = driver
        self._report = report
        self._report_state = report_state
        self._settings = state_settings or StateSettings()
        self.twins: dict[str, Twin] = {p.name: Twin() for p in spec.properties}
        self.state = "unknown"
        self.error = ""
        self._visitors: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._main: asyncio.Task[None] | None = None
        self._failed_rounds = 0
        self._warned_values: set[str] = set()
        self._warned_push: set[str] = set()
        self._write_lock = asyncio.Lock()
        self._push = push
        self._desired_pending = False
        self._refused_desired: dict[str, str] = {}  # property -> a desired value that can never be written
        self._stopping = False
        # Property reads whose round could not start within one cycle of being due (skipped, never made).
        self.missed_reads = 0
        self._state_sent_at = -math.inf  # loop time of the last state report (the first probe always sends)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name=f"device-{self.spec}")

    async def stop(self) -> None:
        self._stopping = True
        pending = {t for t in [self._main, *self._tasks] if t is not None and not t.done()}
        # A cancel can be swallowed: on Python 3.11, asyncio.wait_for (pymodbus awaits every answer with it)
        # drops the cancellation when the answer lands at the same moment. So cancel again until the loops are
        # gone; the _stopping flag ends any loop that survived a cancel at its next round.
        for attempt in range(20):
            if not pending:  # nothing ran (a device whose configData was refused never started its loops)
                break
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=0.25)
            if not pending:
                break
            if attempt == 0:
                log.debug("device %s: %d task(s) ignored a cancel; cancelling again", self.spec, len(pending))
        if pending:
            log.error("device %s: %d task(s) would not stop; leaving them", self.spec, len(pending))
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.driver.close()

    def _set_state(self, state: str, force: bool = False) -> None:
        state = normalise_state(state)
        if state != self.state or force:
            if state != self.state:
                log.info("device %s: state %s -> %s", self.spec, self.state, state)
            self.state = state
            self._report_state(self.spec.key, state)

    async def _run(self) -> None:
        try:
            protocol = parse_config(
                self.driver.protocol_config, self.spec.protocol_data, f"device {self.spec} protocol"
            )
            for prop in self.spec.properties:
                visitor = parse_config(
                    self.driver.visitor_config, prop.visitor_data, f"device {self.spec} property {prop.name} visitors"
                )
                if hasattr(visitor, "property_name"):
                    # Drivers that act by property name (ONVIF's getURI, saveFrame...) declare this field.
                    object.__setattr__(visitor, "property_name", prop.name)
                self._visitors[prop.name] = visitor
        except ConfigError as exc:
            self.error = str(exc)
            for twin in self.twins.values():  # what the REST API shows for each property
                twin.error = f"the device is not started: {exc}"
            log.error("%s; the device is not started. Hint: fix the Device CR's configData", exc)
            self._set_state("unhealthy")
            return
        await self._connect(protocol)
        groups: dict[int, list[PropertySpec]] = {}
        for prop in self.spec.properties:
            groups.setdefault(prop.collect_cycle_ms, []).append(prop)
        reports: dict[int, list[PropertySpec]] = {}
        for prop in self.spec.properties:
            if prop.report_to_cloud:
                reports.setdefault(prop.report_cycle_ms, []).append(prop)
        # A report group whose cycle is also a collect cycle goes out right after that collect round (a value
        # waits for its RPC only, not for a separate tick up to a cycle later); the others get their own loop.
        # With a driver that allows it (Driver.probe_after_reads), the state probe rides on the collect loop of its
        # own cycle: the same schedule, one wake-up instead of two per device and cycle (at a thousand Modbus
        # devices, a tenth of the mapper's CPU), and a failed round is seen at once.
        probe_ms = self.spec.state_report_cycle_ms or self._settings.probe_ms
        ride = probe_ms if getattr(self.driver, "probe_after_reads", False) and probe_ms in groups else None
        self._tasks += [
            asyncio.create_task(self._collect(c, ps, reports.get(c, []), probe=c == ride))
            for c, ps in sorted(groups.items())
        ]
        self._tasks += [
            asyncio.create_task(self._reporting(c, ps)) for c, ps in sorted(reports.items()) if c not in groups
        ]
        if ride is None:
            self._tasks.append(asyncio.create_task(self._probe_state(probe_ms)))
        await self.apply_desired()

    async def _connect(self, protocol: Any) -> None:
        delay = 0.5
        while True:
            try:
                await self.driver.connect(protocol)
                return
            except Exception as exc:
                if self.error != str(exc):
                    log.warning("device %s: connect failed: %s; retrying", self.spec, exc)
                self.error = str(exc)
                self._set_state("offline")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------------ loops
    async def _every(self, cycle_ms: int, reads_per_round: int = 0) -> Any:
        """Yield at once, then on a fixed schedule; a late round is not made up (no bursts after a stall).

        After the first round each device keeps its own phase within the cycle (a stable hash of its name),
        so a thousand devices started together do not all read and report in the same instant.
        """
        loop = asyncio.get_running_loop()
        period = cycle_ms / 1000
        phase = (zlib.crc32(str(self.spec).encode()) % 1000) / 1000 * period
        deadline = loop.time() + phase - period  # the second round falls on this device's phase
        overrun = 0.0
        yield
        while not self._stopping:
            deadline += period
            delay = deadline - loop.time()
            if delay < 0:
                # Time overrun adds up: each whole cycle of it is a round that never happens. Count its reads
                # as missed (an operator's sign of an overloaded mapper or a slow device), then take the
                # schedule up from now.
                overrun += -delay
                whole = int(overrun // period)
                overrun -= whole * period
                self.missed_reads += whole * reads_per_round
                deadline = loop.time()
                delay = 0
            await asyncio.sleep(delay)
            if self._stopping:
                return
            yield

    async def _collect(
        self, cycle_ms: int, props: list[PropertySpec], report: list[PropertySpec], probe: bool = False
    ) -> None:
        sent: dict[str, tuple[int, str]] = {}
        visitors = [self._visitors[p.name] for p in props]
        # What each property's result needs, looked up once: this loop runs for every device every cycle.
        slots = [(p, self.twins[p.name], formatter(p.type), p.type in _FREE_TEXT) for p in props]
        async for _ in self._every(cycle_ms, len(props)):
            await self._collect_round(slots, visitors)
            if probe:  # before the report: a device's state goes out ahead of its first values, as it always did
                await self._probe_once()
            if report:
                twins = self.twin_values(report, sent)
                if twins:
                    self._report(self.spec.key, twins)

    async def _collect_round(self, slots: list[_Slot], visitors: list[Any]) -> None:
        try:
            results = await self.driver.read_many(visitors)
        except Exception as exc:
            results = [exc] * len(slots)
        stamp = now_ms()
        good = 0
        push = self._push
        for (prop, twin, fmt, free_text), result in zip(slots, results, strict=True):
            if isinstance(result, BaseException):
                twin.failures += 1
                twin.errors += 1
                kind = type(result).__name__
                # Once per run of failures, and again when the cause changes kind (unreachable -> no answer).
                if twin.failures == 1 or kind != twin.error_kind:
                    log.warning("device %s property %s: read failed: %s", self.spec, prop.name, result)
                twin.error, twin.error_kind = str(result), kind
                continue
            try:
                text = fmt(result)
            except (PropertyValueError, TypeError, ValueError) as exc:
                twin.failures += 1
                twin.errors += 1
                twin.error = f"value {result!r} does not fit type {prop.type}: {exc}"
                if twin.failures == 1:
                    log.warning("device %s property %s: %s", self.spec, prop.name, twin.error)
                continue
            # Only free text can break edgecore's twin rule: numbers and booleans are formatted to fit it.
            if free_text and not reportable(text) and prop.name not in self._warned_values:
                self._warned_values.add(prop.name)
                log.warning(
                    "device %s property %s: value %r breaks edgecore's twin rule ^[a-zA-Z0-9-_.,:/@#]{1,512}$;"
                    " edgecore will drop it",
                    self.spec,
                    prop.name,
                    text[:60],
                )
            if twin.failures:
                log.info("device %s property %s: reads recovered", self.spec, prop.name)
            if twin.error:  # also one kept from before a restart (a refused configData, now fixed)
                twin.error, twin.error_kind, twin.failures = "", "", 0
            twin.value = text
            twin.timestamp_ms = stamp
            twin.reads += 1
            good += 1
            if push is not None and prop.push_method is not None:
                try:
                    push(
                        prop.push_method,
                        Record(self.spec.namespace, self.spec.name, prop.name, text, prop.type, stamp),
                        prop.report_cycle_ms,
                    )
                except Exception:  # pushing is a side road: it must never end the device's collection
                    if prop.name not in self._warned_push:
                        self._warned_push.add(prop.name)
                        log.exception("device %s property %s: pushing its value failed", self.spec, prop.name)
        self._failed_rounds = 0 if good else self._failed_rounds + 1

    def twin_values(
        self, props: list[PropertySpec], sent: dict[str, tuple[int, str]] | None = None
    ) -> list[TwinReport]:
        """The twins of ``props`` that have been read, as the outbox keeps them.

        With ``sent``, only what changed since the last call with it (a new read, or a new observedDesired): a
        value that could not be read again is not re-sent, or the agent (which stamps twins with its receive
        time, as edgecore does) would show a stale value as fresh.
        """
        out = []
        for prop in props:
            twin = self.twins[prop.name]
            if not twin.timestamp_ms:
                continue  # nothing read yet
            if sent is not None:
                mark = (twin.timestamp_ms, twin.observed_desired)
                if sent.get(prop.name) == mark:
                    continue
                sent[prop.name] = mark
            out.append(TwinReport(prop.name, twin.value, prop.type, twin.timestamp_ms, twin.observed_desired))
        return out

    def twin_messages(self, props: list[PropertySpec]) -> list[pb.Twin]:
        """The same as protobuf ``Twin`` messages (GetDevice)."""
        holder = pb.DeviceStatus()
        add_twins(holder.twins, self.twin_values(props))
        return list(holder.twins)

    async def _reporting(self, cycle_ms: int, props: list[PropertySpec]) -> None:
        sent: dict[str, tuple[int, str]] = {}
        async for _ in self._every(cycle_ms):
            twins = self.twin_values(props, sent)
            if twins:
                self._report(self.spec.key, twins)

    async def _probe_state(self, cycle_ms: int) -> None:
        async for _ in self._every(cycle_ms):
            await self._probe_once()

    async def _probe_once(self) -> None:
        try:
            state = normalise_state(await self.driver.state())
        except Exception as exc:
            log.warning("device %s: state probe failed: %s", self.spec, exc)
            state = "unknown"
        if self._failed_rounds >= self._settings.failures_offline and state in ("ok", "online"):
            # Every read failing for rounds on end: offline, unless the driver knows better (unhealthy).
            state = "offline"
        if state in ("ok", "online") and self.state == "offline":
            # The device was away: it may have restarted and lost what was written (a set point reverts to
            # its power-on value), so the desired values are written again.
            await self.apply_desired(force=True)
        elif self._desired_pending and state in ("ok", "online"):
            await self.apply_desired()
        now = asyncio.get_running_loop().time()
        heartbeat = now - self._state_sent_at >= self._settings.heartbeat_s
        before = self.state
        self._set_state(state, force=heartbeat)
        if heartbeat or before != self.state:
            self._state_sent_at = now

    # ------------------------------------------------------------------ writes
    async def apply_desired(self, force: bool = False) -> None:
        """Write desired values that differ from what was last applied (all of them with ``force``; ReadWrite only).

        A write that fails is retried on every state probe until it succeeds, unless the value itself is refused
        (:class:`PropertyValueError`: wrong type, out of range, does not fit): that is said once, not retried.
        """
        self._desired_pending = False
        for prop in self.spec.properties:
            if prop.desired is None:
                continue
            if not prop.writable:
                log.warning(
                    "device %s property %s: desired value ignored: the property is %s",
                    self.spec,
                    prop.name,
                    prop.access_mode or "not ReadWrite in the model",
                )
                continue
            if self.twins[prop.name].observed_desired == prop.desired and not force:
                continue
            if self._refused_desired.get(prop.name) == prop.desired:
                continue  # it can never be written; said once (a new desired value restarts the device)
            try:
                await self.write(prop.name, prop.desired)
            except PropertyValueError as exc:
                # The value itself is wrong (type, range, does not fit the registers): retrying cannot help.
                self._refused_desired[prop.name] = prop.desired
                log.error(
                    "device %s property %s: desired value %r refused, not retried until it changes: %s",
                    self.spec,
                    prop.name,
                    prop.desired,
                    exc,
                )
                continue
            except Exception as exc:
                self._desired_pending = True
                log.error(
                    "device %s property %s: writing desired value %r failed (will retry): %s",
                    self.spec,
                    prop.name,
                    prop.desired,
                    exc,
                )
                continue
            self.twins[prop.name].observed_desired = prop.desired

    def frames(self, name: str) -> AsyncIterator[bytes]:
        """The driver's live frame stream of property ``name`` (raises StreamNotSupported, KeyError)."""
        if self.spec.property(name) is None:
            raise KeyError(f"device {self.spec} has no property {name!r}")
        visitor = self._visitors.get(name)
        if visitor is None:
            raise StreamNotSupported(f"device {self.spec} is not started ({self.error or 'connecting'})")
        return self.driver.frames(visitor)

    async def write(self, name: str, text: str) -> None:
        """Write ``text`` (parsed to the property's type, checked against min/max) to the device."""
        prop = self.spec.property(name)
        if prop is None:
            raise KeyError(f"device {self.spec} has no property {name!r}")
        if not prop.writable:
            raise PermissionError(f"device {self.spec} property {name} is {prop.access_mode or 'not ReadWrite'}")
        value = parse_value(text, prop.type)
        _check_range(prop, value)
        visitor = self._visitors.get(name)
        if visitor is None:
            raise DeviceNotStarted(
                f"device {self.spec} is not started: {self.error or 'its configuration is still being read'}"
            )
        async with self._write_lock:
            await self.driver.write(visitor, value)
        log.info("device %s property %s: wrote %r", self.spec, name, text)


def _limit(bound: str) -> float | None:
    try:
        return float(bound) if bound else None
    except ValueError:
        return None


def _check_range(prop: PropertySpec, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    low, high = _limit(prop.minimum), _limit(prop.maximum)
    if isinstance(value, float) and math.isnan(value) and (low is not None or high is not None):
        # NaN compares false with everything: it would pass any range unnoticed.
        raise PropertyValueError(f"nan is not within the range of property {prop.name}")
    if low is not None and value < low:
        raise PropertyValueError(f"{value} is below the minimum {prop.minimum} of property {prop.name}")
    if high is not None and value > high:
        raise PropertyValueError(f"{value} is above the maximum {prop.maximum} of property {prop.name}")
