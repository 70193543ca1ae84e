"""Push methods: every collected value of a property also goes to MQTT, HTTP, a database or OTEL, as its CR says.

Each destination (an MQTT broker address, an HTTP endpoint, a database server, an OTLP endpoint) has its own
bounded queue and worker, so a slow or dead endpoint never slows collection or the other destinations. A full
queue drops its oldest record and counts it; a failed send is retried with backoff, in order. Database and OTEL
sinks (:mod:`mapper_framework.sinks`) write in batches: ``push.batch_size`` points, or once per report cycle of
the fastest property feeding them, whichever comes first. Credentials and TLS files come from the mapper's config
(``push.mqtt``, ``push.influxdb2``, ``push.redis``, ``push.mysql``), never from the CR.

Payload (JSON, both methods): ``{"namespace", "device", "property", "value",
"type", "timestamp"}`` with ``timestamp`` in milliseconds since the epoch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dmi.v1beta1 import api_pb2 as pb
from mapper_framework.config import MqttSettings, PushSettings
from mapper_framework.sinks.base import SeriesKey, Sink, SinkError, config_problem

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    namespace: str
    device: str
    property: str
    value: str
    type: str
    timestamp: int

    def payload(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


@dataclass
class DestinationStats:
    sent: int = 0  # records (points) written
    batches: int = 0  # successful writes
    failed: int = 0  # failed writes
    dropped: int = 0  # records dropped: queue full, or refused for good by the destination
    retries: int = 0
    # Recent successful writes: seconds the write took, and ms from the oldest point's reading to its storage.
    write_s: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=4096))
    age_ms: collections.deque[int] = field(default_factory=lambda: collections.deque(maxlen=4096))


@dataclass
class _Destination:
    name: str
    send: Callable[[list[Record]], Awaitable[None]]
    limit: int
    batch_size: int = 100
    flush_s: float = 0.0  # 0: send what is queued at once (MQTT, HTTP); else wait for a batch this long at most
    sink: Sink | None = None
    queue: collections.deque[Record] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    stats: DestinationStats = field(default_factory=DestinationStats)
    task: asyncio.Task[None] | None = None
    error: str = ""
    inflight: int = 0  # records at the head of the queue being written now
    feeds: list[SeriesKey] = field(default_factory=list)  # the properties pushing here (for error messages)

    def who(self) -> str:
        """The properties feeding this destination, as errors name them."""
        if not self.feeds:
            return ""
        ns, dev, prop = self.feeds[0]
        more = f" (and {len(self.feeds) - 1} more)" if len(self.feeds) > 1 else ""
        return f"device {ns}/{dev} property {prop}{more}: "


_Route = tuple[pb.PushMethod, list[_Destination]]


class PartialSend(Exception):
    """A sender delivered the first ``done`` records of its batch, then failed with ``cause``: those are not sent
    again (an HTTP receiver or an MQTT subscriber would get them twice)."""

    def __init__(self, done: int, cause: Exception) -> None:
        super().__init__(str(cause))
        self.done = done
        self.cause = cause


class PushManager:
    """Routes records to destinations named by each property's ``pushMethod``."""

    def __init__(
        self,
        mqtt_settings: MqttSettings | None = None,
        queue_limit: int = 10_000,
        settings: PushSettings | None = None,
    ) -> None:
        self.settings = settings or PushSettings(queue_limit=queue_limit, mqtt=mqtt_settings or MqttSettings())
        self._mqtt_settings = mqtt_settings or self.settings.mqtt
        self._limit = self.settings.queue_limit if settings is not None else queue_limit
        self.destinations: dict[str, _Destination] = {}
        self._session: aiohttp.ClientSession | None = None
        self._mqtt: dict[str, _MqttLink] = {}
        # Per property: its PushMethod (by identity: a restarted device brings a new one) and its destinations.
        self._routes: dict[SeriesKey, _Route] = {}
        self._refused: set[SeriesKey] = set()
        self._setup_errors: set[str] = set()
        self._retiring: set[asyncio.Task[None]] = set()  # sinks closing after their last property left
        self._closing = False

    # ------------------------------------------------------------------ routing
    def submit(self, method: pb.PushMethod, record: Record, cycle_ms: int = 0) -> None:
        """Queue ``record`` for every destination ``method`` names. Never blocks.

        ``cycle_ms`` is the property's report cycle: database and OTEL sinks write at least that often.
        """
        key = (record.namespace, record.device, record.property)
        route = self._routes.get(key)
        if route is None or route[0] is not method:
            before = route
            try:
                route = (method, self._resolve(key, method, cycle_ms))
            except Exception as exc:  # a bad address, a missing password file...: this property's push only
                if str(exc) not in self._setup_errors:  # once per cause: a mapper-wide one would say it per property
                    self._setup_errors.add(str(exc))
                    log.error(
                        "device %s/%s property %s: its push method cannot be set up, so its values are not pushed"
                        " (they are still collected and reported): %s. Hint: fix the pushMethod in the Device CR"
                        " or the mapper config's push section",
                        *key,
                        exc,
                    )
                route = (method, [])
            self._routes[key] = route
            if before is not None:
                self._release(key, before[1], keep=route[1])
        for dest in route[1]:
            self._enqueue(dest, record)

    def forget_device(self, namespace: str, device: str) -> None:
        """A device removed: its properties stop feeding their destinations (see :meth:`_release`)."""
        for key in [k for k in self._routes if k[0] == namespace and k[1] == device]:
            self._release(key, self._routes.pop(key)[1], keep=[])
            self._refused.discard(key)

    def _release(self, key: SeriesKey, dests: list[_Destination], keep: list[_Destination]) -> None:
        """``key`` no longer pushes to ``dests`` (but ``keep``). A destination nobody pushes to any more is retired:
        its worker stops and what it still queued is dropped, said once; else it would retry forever (an address
        corrected in the CR left the old one retrying, its records never delivered)."""
        for dest in dests:
            if dest in keep:
                continue
            if key in dest.feeds:
                dest.feeds.remove(key)
            if dest.feeds or self.destinations.get(dest.name) is not dest:
                continue
            del self.destinations[dest.name]
            if dest.queue:
                ns, dev, prop = key
                log.warning(
                    "push %s: no property pushes here any more (last: device %s/%s property %s); %d queued"
                    " record(s) dropped",
                    dest.name,
                    ns,
                    dev,
                    prop,
                    len(dest.queue),
                )
                dest.stats.dropped += len(dest.queue)
                dest.queue.clear()
            if dest.task is not None:
                dest.task.cancel()
            if dest.sink is not None:
                closing = asyncio.get_running_loop().create_task(dest.sink.close())
                self._retiring.add(closing)
                closing.add_done_callback(self._retiring.discard)

    def sinks_of(self, namespace: str, device: str, prop: str) -> list[Sink]:
        """The database/OTEL sinks a property has pushed to so far."""
        route = self._routes.get((namespace, device, prop))
        return [d.sink for d in route[1] if d.sink is not None] if route is not None else []

    def _resolve(self, key: SeriesKey, method: pb.PushMethod, cycle_ms: int) -> list[_Destination]:
        out: list[_Destination] = []
        if method.HasField("mqtt") and method.mqtt.address:
            m = method.mqtt
            name = f"mqtt {m.address} {m.topic} qos{m.qos}{' retained' if m.retained else ''}"
            out.append(self._destination(name, lambda: self._mqtt_sender(m.address, m.topic, m.qos, m.retained)))
        if method.HasField("http") and method.http.hostname:
            h = method.http
            url = _http_url(h.hostname, h.port, h.requestpath)
            out.append(self._destination(f"http {url}", lambda: self._http_sender(url, h.timeout)))
        if method.HasField("dbMethod") or method.HasField("otel"):
            problem = config_problem(method)
            if problem is not None:
                # Validation and device registration refuse this already; a device started anyway is told once.
                if key not in self._refused:
                    self._refused.add(key)
                    log.error("device %s/%s property %s: %s", *key, problem)
            else:
                for sink in self._sinks(method):
                    dest = self._destination(sink.name, lambda s=sink: s.write, sink)  # type: ignore[misc]
                    if dest.sink is not None:
                        dest.sink.bind(key, method)
                    if cycle_ms > 0:
                        dest.flush_s = min(dest.flush_s, cycle_ms / 1000) if dest.flush_s else cycle_ms / 1000
                    out.append(dest)
        for dest in out:
            if key not in dest.feeds:
                dest.feeds.append(key)
        return out

    def _sinks(self, method: pb.PushMethod) -> list[Sink]:
        """New sink objects for ``method``; one that is already running (same name) is reused by the caller."""
        out: list[Sink] = []
        db = method.dbMethod
        s = self.settings
        if method.HasField("dbMethod") and db.HasField("influxdb2"):
            from mapper_framework.sinks.influx_sink import InfluxSink

            out.append(InfluxSink(db.influxdb2.influxdb2ClientConfig, s.influxdb2))
        if method.HasField("dbMethod") and db.HasField("redis"):
            from mapper_framework.sinks.redis_sink import RedisSink

            out.append(RedisSink(db.redis.redisClientConfig, s.redis))
        if method.HasField("dbMethod") and db.HasField("mysql"):
            from mapper_framework.sinks.mysql_sink import MysqlSink

            out.append(MysqlSink(db.mysql.mysqlClientConfig, s.mysql))
        if method.HasField("otel"):
            from mapper_framework.sinks.otel_sink import OtelSink

            out.append(OtelSink(method.otel.endpointURL))
        return out

    def _destination(
        self, name: str, make: Callable[[], Callable[[list[Record]], Awaitable[None]]], sink: Sink | None = None
    ) -> _Destination:
        dest = self.destinations.get(name)
        if dest is None:
            batch = self.settings.batch_size if sink is not None else 100
            dest = _Destination(name, make(), self._limit, batch_size=batch, sink=sink)
            dest.task = asyncio.create_task(self._drain(dest), name=f"push {name}")
            self.destinations[name] = dest
        return dest

    def _enqueue(self, dest: _Destination, rec: Record) -> None:
        queue = dest.queue
        if len(queue) >= dest.limit:
            # Drop the oldest record that is not being written right now (those are delivered or retried).
            if dest.inflight < len(queue):
                del queue[dest.inflight]
            else:  # everything queued is in flight: the new record is the one lost
                dest.stats.dropped += 1
                self._warn_dropped(dest)
                return
            dest.stats.dropped += 1
            self._warn_dropped(dest)
        queue.append(rec)
        if len(queue) == 1:
            dest.wake.set()
        if len(queue) - dest.inflight >= dest.batch_size:
            dest.full.set()

    def _warn_dropped(self, dest: _Destination) -> None:
        if dest.stats.dropped == 1 or dest.stats.dropped % 1000 == 0:
            log.warning(
                "%spush %s: queue full (%d); dropped %d oldest record(s) so far; hint: raise push.queue_limit or"
                " bring the destination back",
                dest.who(),
                dest.name,
                dest.limit,
                dest.stats.dropped,
            )

    async def _drain(self, dest: _Destination) -> None:
        delay = 0.2
        while True:
            if not dest.queue:
                dest.wake.clear()
                if not dest.queue:
                    await dest.wake.wait()
                continue
            if dest.flush_s and len(dest.queue) < dest.batch_size and not self._closing and not dest.error:
                # Gather a batch: a report cycle's worth of points, or batch_size of them if that comes first.
                dest.full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dest.full.wait(), dest.flush_s)
            batch = list(itertools.islice(dest.queue, dest.batch_size))
            dest.inflight = len(batch)
            started = time.monotonic()
            try:
                await dest.send(batch)
            except Exception as exc:
                if isinstance(exc, PartialSend):
                    for _ in range(min(exc.done, dest.inflight)):
                        dest.queue.popleft()
                    dest.stats.sent += exc.done
                    if exc.done:
                        delay = 0.2  # it moves: a receiver refusing one request in a few is not backed off to 10 s
                    exc = exc.cause
                dest.inflight = 0
                dest.stats.failed += 1
                if isinstance(exc, SinkError) and not exc.retryable:
                    self._drop_batch(dest, len(batch), exc)
                    continue
                dest.stats.retries += 1
                if dest.error != str(exc):
                    log.warning(
                        "%spush %s failed: %s; %d record(s) queued, retrying with backoff",
                        dest.who(),
                        dest.name,
                        exc,
                        len(dest.queue),
                    )
                dest.error = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            finished = time.monotonic()
            for _ in range(dest.inflight):
                dest.queue.popleft()
            dest.inflight = 0
            dest.stats.sent += len(batch)
            dest.stats.batches += 1
            dest.stats.write_s.append(finished - started)
            dest.stats.age_ms.append(int(time.time() * 1000) - batch[0].timestamp)
            if dest.error:
                log.info("push %s works again; %d record(s) still queued", dest.name, len(dest.queue))
                dest.error = ""
            delay = 0.2

    def _drop_batch(self, dest: _Destination, count: int, exc: Exception) -> None:
        for _ in range(count):
            if dest.queue:
                dest.queue.popleft()
        dest.stats.dropped += count
        log.error("%spush %s: %s; %d record(s) dropped", dest.who(), dest.name, exc, count)

    async def _sink_sender_close(self) -> None:
        for dest in self.destinations.values():
            if dest.sink is not None:
                with contextlib.suppress(Exception):
                    await dest.sink.close()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every queue is empty, ``timeout_s`` at most; True when everything was delivered."""
        deadline = time.monotonic() + timeout_s
        for dest in self.destinations.values():
            dest.full.set()  # no waiting for a fuller batch
        while any(d.queue for d in self.destinations.values()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self, flush_s: float = 0.0) -> None:
        """Stop the workers; with ``flush_s``, first give queued records that long to be delivered."""
        self._closing = True
        if flush_s > 0 and not await self.flush(flush_s):
            for dest in self.destinations.values():
                if dest.queue:
                    log.warning("%spush %s: %d record(s) not delivered at stop", dest.who(), dest.name, len(dest.queue))
        for dest in self.destinations.values():
            if dest.task is not None:
                dest.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dest.task
        await self._sink_sender_close()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        for link in self._mqtt.values():
            await asyncio.to_thread(link.close)
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ HTTP
    def _http_sender(self, url: str, timeout_ms: int) -> Callable[[list[Record]], Awaitable[None]]:
        import aiohttp  # only mappers that push over HTTP pay for it (about 12 MB)

        timeout = aiohttp.ClientTimeout(total=(timeout_ms or 5000) / 1000)

        async def send(batch: list[Record]) -> None:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            for done, rec in enumerate(batch):  # one POST per value: what an HTTP endpoint of the Go mapper expects
                try:
                    async with self._session.post(
                        url, data=rec.payload(), headers={"Content-Type": "application/json"}, timeout=timeout
                    ) as resp:
                        if resp.status >= 300:
                            raise RuntimeError(f"HTTP {resp.status} from {url}")
                except Exception as exc:
                    raise PartialSend(done, exc) from None

        return send

    # ------------------------------------------------------------------ MQTT
    def _mqtt_sender(
        self, address: str, topic: str, qos: int, retained: bool
    ) -> Callable[[list[Record]], Awaitable[None]]:
        link = self._mqtt.get(address)
        if link is None:
            link = _MqttLink(address, self._mqtt_settings)
            self._mqtt[address] = link

        # QoS 1/2 publishes paho accepted and still holds (it sends them again itself until the broker answers),
        # by record: a retried batch waits for these instead of publishing them a second time.
        held: dict[int, tuple[Record, Any]] = {}

        async def send(batch: list[Record]) -> None:
            in_batch = {id(rec) for rec in batch}
            for key in [k for k, (_rec, info) in held.items() if k not in in_batch]:
                del held[key]  # its record left the queue (delivered, or dropped by the queue bound)
            await link.ready()
            for done, rec in enumerate(batch):
                try:
                    entry = held.get(id(rec))
                    if entry is not None and entry[0] is rec and (entry[1].rc != 0 or entry[1].is_published()):
                        del held[id(rec)]  # acknowledged after its wait gave up, or paho's own: delivered
                        continue
                    if entry is None or entry[0] is not rec:
                        info = link.publish(topic, rec.payload(), qos, retained)
                        if qos == 0:
                            continue
                        held[id(rec)] = (rec, info)
                    else:
                        info = entry[1]
                    await link.acknowledged(info)
                    held.pop(id(rec), None)
                except Exception as exc:
                    raise PartialSend(done, exc) from None

        return send


def _http_url(hostname: str, port: int, path: str) -> str:
    """The URL of an HTTP push method: ``hostName`` (a host, or a URL with a scheme and maybe a path prefix),
    ``port`` when the host names none, then ``requestPath``."""
    if "://" not in hostname and hostname.count(":") > 1 and not hostname.startswith("["):
        hostname = f"[{hostname}]"  # a bare IPv6 address
    base = hostname if "://" in hostname else f"http://{hostname}"
    parts = urlsplit(base)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6: urlsplit drops the brackets, a URL needs them
    netloc = parts.netloc if parts.port or not port else f"{host}:{port}"
    if path and not path.startswith("/"):
        path = "/" + path
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}{path}"


class _MqttLink:
    """One long-lived connection per broker address (paho runs its network loop in its own thread)."""

    def __init__(self, address: str, settings: MqttSettings) -> None:
        import paho.mqtt.client as mqtt  # only mappers that push over MQTT load it
        from paho.mqtt.enums import CallbackAPIVersion

        self._mqtt = mqtt
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        self.address = address
        self.tls = parts.scheme in ("ssl", "tls", "mqtts")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if self.tls else 1883)
        self._connected = threading.Event()
        self._answered = threading.Event()  # the broker answered a connect (yes or no), or we are closing
        self._error = ""
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{settings.client_id_prefix}-{id(self):x}",
        )
        if settings.username:
            password = None
            if settings.password_file:
                with open(settings.password_file, encoding="utf-8") as f:
                    password = f.read().strip()
            client.username_pw_set(settings.username, password)
        if self.tls:
            context = ssl.create_default_context(cafile=settings.ca_file or None)
            if settings.cert_file:
                context.load_cert_chain(settings.cert_file, settings.key_file or None)
            client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client = client
        self._started = False

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._error = f"broker {self.address} refused the connection: {reason}"
            self._connected.clear()
            if "not authorized" in str(reason).lower() or "bad user" in str(reason).lower():
                self._error += " (check push.mqtt.username and password_file in the mapper config)"
        else:
            self._error = ""
            self._connected.set()
        self._answered.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()

    async def ready(self) -> None:
        if not self._started:
            self._started = True
            try:
                await asyncio.to_thread(self.client.connect, self.host, self.port, 30)
            except Exception as exc:
                self._started = False
                raise ConnectionError(f"cannot connect to broker {self.address}: {exc}") from None
            self.client.loop_start()
        if self._connected.is_set():
            return
        await asyncio.to_thread(self._answered.wait, 5.0)
        if not self._connected.is_set():
            self._answered.clear()  # wait for the answer to paho's next reconnect attempt next time
            raise ConnectionError(self._error or f"broker {self.address} is not connected")

    def publish(self, topic: str, payload: bytes, qos: int, retained: bool) -> Any:
        """Hand a message to paho; its MessageInfo. QoS 1/2 messages paho keeps even while disconnected (it sends
        them on reconnect); anything else it refused raises."""
        info = self.client.publish(topic, payload, qos=qos, retain=retained)
        kept = info.rc == self._mqtt.MQTT_ERR_NO_CONN and qos > 0
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS and not kept:
            raise ConnectionError(f"publish to {self.address} failed: {self._mqtt.error_string(info.rc)}")
        return info

    async def acknowledged(self, info: Any) -> None:
        """Until the broker acknowledged a QoS 1/2 message (raises after 5 s; the message stays with paho)."""
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            # Queued while the connection was down: paho sends it on reconnect, and never reports on it again
            # (its MessageInfo keeps that error code). It is paho's now; publishing it again would duplicate it.
            return
        if not info.is_published():
            await asyncio.to_thread(info.wait_for_publish, 5.0)
        if not info.is_published():
            raise ConnectionError(f"broker {self.address} did not acknowledge the publish")

    def close(self) -> None:
        self._answered.set()
        self.client.loop_stop()
        self.client.disconnect()
