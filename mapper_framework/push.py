"""Push methods: every collected value of a property also goes to MQTT or HTTP, as its Device CR says.

Each destination (an MQTT broker address, an HTTP endpoint) has its own bounded
queue and worker, so a slow or dead endpoint never slows collection or the
other destinations. A full queue drops its oldest record and counts it; a
failed send is retried with backoff, in order. Credentials and TLS files come
from the mapper's config (``push.mqtt``), never from the CR.

Payload (JSON, both methods): ``{"namespace", "device", "property", "value",
"type", "timestamp"}`` with ``timestamp`` in milliseconds since the epoch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dmi.v1beta1 import api_pb2 as pb
from mapper_framework.config import MqttSettings

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
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0


@dataclass
class _Destination:
    name: str
    send: Callable[[list[Record]], Awaitable[None]]
    limit: int
    queue: collections.deque[Record] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stats: DestinationStats = field(default_factory=DestinationStats)
    task: asyncio.Task[None] | None = None
    error: str = ""


class PushManager:
    """Routes records to destinations named by each property's ``pushMethod``."""

    def __init__(self, mqtt_settings: MqttSettings | None = None, queue_limit: int = 10_000) -> None:
        self._mqtt_settings = mqtt_settings or MqttSettings()
        self._limit = queue_limit
        self.destinations: dict[str, _Destination] = {}
        self._session: aiohttp.ClientSession | None = None
        self._mqtt: dict[str, _MqttLink] = {}

    # ------------------------------------------------------------------ routing
    def submit(self, method: pb.PushMethod, record: Record) -> None:
        """Queue ``record`` for every destination ``method`` names. Never blocks."""
        if method.HasField("mqtt") and method.mqtt.address:
            m = method.mqtt
            name = f"mqtt {m.address} {m.topic} qos{m.qos}{' retained' if m.retained else ''}"
            self._enqueue(name, lambda: self._mqtt_sender(m.address, m.topic, m.qos, m.retained), record)
        if method.HasField("http") and method.http.hostname:
            h = method.http
            url = _http_url(h.hostname, h.port, h.requestpath)
            name = f"http {url}"
            self._enqueue(name, lambda: self._http_sender(url, h.timeout), record)

    def _enqueue(self, name: str, make: Callable[[], Callable[[list[Record]], Awaitable[None]]], rec: Record) -> None:
        dest = self.destinations.get(name)
        if dest is None:
            dest = _Destination(name, make(), self._limit)
            dest.task = asyncio.create_task(self._drain(dest), name=f"push {name}")
            self.destinations[name] = dest
        if len(dest.queue) >= dest.limit:
            dest.queue.popleft()
            dest.stats.dropped += 1
            if dest.stats.dropped == 1 or dest.stats.dropped % 1000 == 0:
                log.warning(
                    "push %s: queue full (%d); dropped %d oldest record(s) so far", name, dest.limit, dest.stats.dropped
                )
        dest.queue.append(rec)
        dest.wake.set()

    async def _drain(self, dest: _Destination) -> None:
        delay = 0.2
        while True:
            if not dest.queue:
                dest.wake.clear()
                await dest.wake.wait()
                continue
            batch = list(dest.queue)[:100]
            try:
                await dest.send(batch)
            except Exception as exc:
                dest.stats.failed += 1
                dest.stats.retries += 1
                if dest.error != str(exc):
                    log.warning("push %s failed: %s; %d record(s) queued, retrying", dest.name, exc, len(dest.queue))
                dest.error = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            for _ in batch:
                if dest.queue:
                    dest.queue.popleft()
            dest.stats.sent += len(batch)
            if dest.error:
                log.info("push %s works again", dest.name)
                dest.error = ""
            delay = 0.2

    async def close(self) -> None:
        for dest in self.destinations.values():
            if dest.task is not None:
                dest.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dest.task
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
            for rec in batch:  # one POST per value: what an HTTP endpoint of the Go mapper expects
                async with self._session.post(
                    url, data=rec.payload(), headers={"Content-Type": "application/json"}, timeout=timeout
                ) as resp:
                    if resp.status >= 300:
                        raise RuntimeError(f"HTTP {resp.status} from {url}")

        return send

    # ------------------------------------------------------------------ MQTT
    def _mqtt_sender(
        self, address: str, topic: str, qos: int, retained: bool
    ) -> Callable[[list[Record]], Awaitable[None]]:
        link = self._mqtt.get(address)
        if link is None:
            link = _MqttLink(address, self._mqtt_settings)
            self._mqtt[address] = link

        async def send(batch: list[Record]) -> None:
            await link.ready()
            for rec in batch:
                await link.publish(topic, rec.payload(), qos, retained)

        return send


def _http_url(hostname: str, port: int, path: str) -> str:
    base = hostname if "://" in hostname else f"http://{hostname}"
    parts = urlsplit(base)
    netloc = parts.netloc if parts.port or not port else f"{parts.hostname}:{port}"
    if path and not path.startswith("/"):
        path = "/" + path
    return f"{parts.scheme}://{netloc}{path}"


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

    async def publish(self, topic: str, payload: bytes, qos: int, retained: bool) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retained)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {self.address} failed: {self._mqtt.error_string(info.rc)}")
        if qos > 0:
            await asyncio.to_thread(info.wait_for_publish, 5.0)
            if not info.is_published():
                raise ConnectionError(f"broker {self.address} did not acknowledge the publish")

    def close(self) -> None:
        self._answered.set()
        self.client.loop_stop()
        self.client.disconnect()
