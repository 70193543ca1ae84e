"""The mapper's client of the agent's ``DeviceManagerService`` (edgecore, or our agent).

Reports never block collection: runtimes put twins and states into an
:class:`Outbox` that keeps the *latest* value per device and property, and one
sender task sends one ``ReportDeviceStatus`` per device with all its pending
twins. Real edgecore admits one DMI call per second (burst 100) and answers
``too many request`` beyond that; that answer, and an unreachable agent, are
back-pressure: values stay in the outbox (newer ones replace older ones), the
sender backs off, and is told about it once with counts.

When the agent was unreachable, the client registers again before sending
(the agent may have restarted and forgotten the mapper) and hands the fresh
device list to ``on_registered`` so the mapper can resynchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc
from mapper_framework.config import MapperConfig
from mapper_framework.register_answer import RegisterAnswer
from mapper_framework.spool import Spool
from mapper_framework.twin_report import DeviceKey, TwinReport, add_twins

log = logging.getLogger(__name__)

RATE_LIMITED = "too many request"


@dataclass
class OutboxStats:
    reports_sent: int = 0
    twins_sent: int = 0
    states_sent: int = 0
    retries: int = 0
    rate_limited: int = 0
    dropped: int = 0
    registrations: int = 0


class Outbox:
    """Pending twins and states, latest value wins. Bounded by devices x properties, never by time."""

    def __init__(self) -> None:
        self.twins: dict[DeviceKey, dict[str, TwinReport]] = {}
        self.states: dict[DeviceKey, str] = {}
        self.wake = asyncio.Event()

    def put_twins(self, key: DeviceKey, twins: list[TwinReport]) -> None:
        pending = self.twins.setdefault(key, {})
        for twin in twins:
            pending[twin.name] = twin
        self.wake.set()

    def put_state(self, key: DeviceKey, state: str) -> None:
        self.states[key] = state
        self.wake.set()

    def take_back(self, key: DeviceKey, twins: dict[str, TwinReport]) -> None:
        """Return unsent twins without overwriting newer ones that arrived meanwhile."""
        pending = self.twins.setdefault(key, {})
        for name, twin in twins.items():
            pending.setdefault(name, twin)

    def forget(self, key: DeviceKey) -> None:
        self.twins.pop(key, None)
        self.states.pop(key, None)

    @property
    def depth(self) -> int:
        return sum(len(t) for t in self.twins.values()) + len(self.states)


class AgentClient:
    def __init__(
        self,
        config: MapperConfig,
        on_registered: Callable[[RegisterAnswer], Awaitable[None]],
    ) -> None:
        self.config = config
        self.outbox = Outbox()
        self.stats = OutboxStats()
        self._on_registered = on_registered
        max_bytes = config.report.max_message_mb * 1024 * 1024
        self._channel = grpc.aio.insecure_channel(
            f"unix:{config.edgecore_sock}",
            options=[
                # One MapperRegister answer carries every device of the protocol: ~3.4 KB each.
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", int(config.report.retry_max_s * 1000)),
            ],
        )
        self._stub = api_pb2_grpc.DeviceManagerServiceStub(self._channel)
        # The answer stays bytes until each device is used (RegisterAnswer): no deserializer here.
        self._register_raw = self._channel.unary_unary(
            "/v1beta1.DeviceManagerService/MapperRegister",
            request_serializer=pb.MapperRegisterRequest.SerializeToString,
        )
        self._task: asyncio.Task[None] | None = None
        self._needs_register = True
        self._quiet = False  # one log line per back-pressure episode
        report = config.report
        self.spool = (
            Spool(Path(report.spool_file), report.spool_limit, report.spool_interval_s) if report.spool_file else None
        )
        if self.spool is not None:
            twins, states = self.spool.load()
            for key, pending in twins.items():
                self.outbox.take_back(key, pending)
            for key, state in states.items():
                self.outbox.states.setdefault(key, state)

    def register_request(self) -> pb.MapperRegisterRequest:
        c = self.config
        # withData=false would make edgecore never call this mapper back: always true.
        return pb.MapperRegisterRequest(
            withData=True,
            mapper=pb.MapperInfo(
                name=c.name,
                version=c.version,
                api_version=c.api_version,
                protocol=c.protocol,
                address=str(c.socket_path).encode(),
                state="ok",
            ),
        )

    async def register(self) -> RegisterAnswer:
        """Register until the agent answers (backoff between tries); returns its device list."""
        delay = self.config.report.retry_initial_s
        while True:
            try:
                raw: bytes = await self._register_raw(self.register_request(), timeout=10)
                answer = RegisterAnswer(raw)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise RuntimeError(f"the agent refused registration: {exc.details()}") from None
                if self.spool is not None and (self.outbox.twins or self.outbox.states) and self.spool.due():
                    self._save_spool()
                log.warning(
                    "registering with the agent at %s failed (%s); retrying in %.1fs",
                    self.config.edgecore_sock,
                    exc.code().name,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.report.retry_max_s)
                continue
            self.stats.registrations += 1
            self._needs_register = False
            log.info("registered with the agent: %d device(s)", len(answer.deviceList))
            return answer

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_loop(), name="agent-client-sender")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._channel.close()
        if self.spool is not None and (self.outbox.twins or self.outbox.states):
            self._save_spool()

    def _save_spool(self) -> None:
        assert self.spool is not None
        try:
            self.spool.save(self.outbox.twins, self.outbox.states)
        except OSError as exc:
            log.error("store-and-forward: cannot write %s: %s; values stay in memory", self.spool.path, exc)

    async def _send_loop(self) -> None:
        delay = self.config.report.retry_initial_s
        while True:
            if not self.outbox.twins and not self.outbox.states:
                self.outbox.wake.clear()
                await self.outbox.wake.wait()
            try:
                if self._needs_register:
                    await self._on_registered(await self.register())
                await self._flush()
            except _BackPressure as pressure:
                self.stats.retries += 1
                if self.spool is not None and self.spool.due():
                    self._save_spool()
                if not self._quiet:
                    log.warning(
                        "agent %s (%s); %d value(s) kept, latest per property, retrying",
                        pressure.reason,
                        pressure.code,
                        self.outbox.depth,
                    )
                    self._quiet = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.report.retry_max_s)
                continue
            except Exception:  # a sender that dies silently would stop every report of this mapper
                log.exception("reporting to the agent failed unexpectedly; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.report.retry_max_s)
                continue
            if self._quiet:
                log.info("agent accepts reports again")
                self._quiet = False
            if self.spool is not None and not self.outbox.twins and not self.outbox.states:
                with contextlib.suppress(OSError):
                    self.spool.clear()
            delay = self.config.report.retry_initial_s

    async def _flush(self) -> None:
        for key in list(self.outbox.states):
            state = self.outbox.states.pop(key)
            states_request = pb.ReportDeviceStatesRequest(deviceNamespace=key[0], deviceName=key[1], state=state)
            try:
                await self._stub.ReportDeviceStates(states_request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if self._retryable(exc):
                    self.outbox.states.setdefault(key, state)
                    raise _BackPressure.of(exc) from None
                self.stats.dropped += 1
                log.error("device %s/%s: state %r refused: %s", key[0], key[1], state, exc.details())
                continue
            self.stats.states_sent += 1
        # Devices are independent: keep several reports in flight, or one slow commit delays everyone behind it.
        # A few workers taking devices from one queue, not a task per device (a thousand tasks per flush cost
        # CPU and memory) and not fixed chunks (a chunk would wait for its slowest call).
        pending = iter(list(self.outbox.twins))
        halted: list[BaseException] = []

        async def worker() -> None:
            for key in pending:
                if halted:
                    return  # back-pressure seen: leave the rest in the outbox
                try:
                    await self._send_twins(key)
                except BaseException as exc:
                    halted.append(exc)
                    return

        workers = min(self.config.report.concurrency, len(self.outbox.twins))
        await asyncio.gather(*(worker() for _ in range(workers)))
        if halted:
            raise halted[0]

    async def _send_twins(self, key: DeviceKey) -> None:
        twins = self.outbox.twins.pop(key, None)
        if not twins:
            return
        request = pb.ReportDeviceStatusRequest(deviceNamespace=key[0], deviceName=key[1])
        add_twins(request.reportedDevice.twins, twins.values())
        try:
            await self._stub.ReportDeviceStatus(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if self._retryable(exc):
                self.outbox.take_back(key, twins)
                raise _BackPressure.of(exc) from None
            self.stats.dropped += len(twins)
            log.error("device %s/%s: report of %d twin(s) refused: %s", key[0], key[1], len(twins), exc.details())
            return
        self.stats.reports_sent += 1
        self.stats.twins_sent += len(twins)

    def _retryable(self, exc: grpc.aio.AioRpcError) -> bool:
        code = exc.code()
        if code == grpc.StatusCode.UNKNOWN and RATE_LIMITED in (exc.details() or ""):
            self.stats.rate_limited += 1
            return True
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            # The agent may have restarted: register again before the next send.
            self._needs_register = True
            return True
        return False


class _BackPressure(Exception):
    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    @classmethod
    def of(cls, exc: grpc.aio.AioRpcError) -> _BackPressure:
        if RATE_LIMITED in (exc.details() or ""):
            return cls("is rate-limiting", RATE_LIMITED)
        return cls("is unreachable", exc.code().name)
