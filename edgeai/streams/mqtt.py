"""Property values from a mapper's MQTT push, through any MQTT broker.

Two payloads are understood:

* ours (``mapper_framework`` push), JSON ``{"namespace", "device", "property", "value", "type", "timestamp"}``,
  timestamp in ms; the Go mapper-framework's ``DataModel`` JSON (``DeviceName``, ``PropertyName``, ``Namespace``,
  ``Value``, ``TimeStamp``) is read the same way;
* KubeEdge Go mapper-framework's plain text ``"time is 2006-01-02 15:04:05  <topic>: <value>"``. It names no
  device or property, so the property is taken from the *topic*: its last three levels must be
  ``namespace/device/property`` (publish to e.g. ``kubeedge/default/thermo/temperature``); other topics are
  ignored with a reason in ``stats.last_error``. Its time has whole seconds in the mapper's unnamed local zone,
  so such a record carries the time it was received instead.

paho-mqtt's network loop runs in paho's own thread (``loop_start``); each message is handed to the asyncio loop
with ``call_soon_threadsafe`` and parsed there. Connecting is ours rather than paho's automatic reconnect, so
the reason of every failed attempt (connection refused, unknown host, not authorized) reaches ``stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from edgeai.streams._backoff import Backoff, Stopper
from edgeai.streams.records import DEFAULT_NAMESPACE, PropertyRef, StreamRecord, StreamStats, value_text
from edgeai.streams.spec import check_topic_filter

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

_GO_TEXT = re.compile(r"time is \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  (.*)", re.DOTALL)


class PayloadError(ValueError):
    """A payload that carries no usable record; the message says why."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class MqttSource:
    """Records of ``properties`` (None: every property) published on ``topic`` (a filter: ``+``/``#`` allowed).

    ``records()`` runs until :meth:`close`: a lost or refused connection is retried with backoff (``first_backoff_s``
    doubling up to ``max_backoff_s``) and recorded in ``stats``, never raised. Messages wait in a queue of
    ``queue_limit``; a consumer that falls that far behind loses the oldest (counted in ``stats.dropped``).
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        topic: str = "#",
        properties: Sequence[PropertyRef] | None = None,
        *,
        qos: int = 1,
        keepalive: int = 30,
        client_id: str | None = None,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
        queue_limit: int = 10_000,
    ) -> None:
        check_topic_filter(topic, f"MQTT topic {topic!r}")
        self.host = host
        self.port = port
        self.topic = topic
        self.properties = None if properties is None else frozenset(properties)
        self.qos = qos
        self.keepalive = keepalive
        self.client_id = client_id or f"edgeai-stream-{os.getpid()}-{id(self):x}"
        self.queue_limit = queue_limit
        self.address = f"{host}:{port}"
        self.stats = StreamStats()
        self._backoff = Backoff(first_backoff_s, max_backoff_s)
        self._stopper = Stopper()
        # Taken by the worker threads that connect and stop the client, never by paho's callbacks: it keeps a
        # connect finishing after close() from leaving a live connection behind.
        self._lock = threading.Lock()
        self._shut = False
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, bytes, int] | None] | None = None
        self._lost = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._session_ok = False
        self._iterating = False

    # ------------------------------------------------------------------ public
    async def records(self) -> AsyncIterator[StreamRecord]:
        """Connect, subscribe and yield each record of a selected property, until :meth:`close`."""
        if self._iterating:
            raise RuntimeError("MqttSource.records() is already being iterated: one consumer per source")
        if self._stopper.stopped:
            return
        self._iterating = True
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        client = self._make_client()
        self._client = client
        self._keeper = asyncio.create_task(self._keep_connected(client), name=f"mqtt-source {self.address}")
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    return
                record = self._parse(*item)
                if record is not None:
                    yield record
        finally:
            await self._shutdown()

    async def close(self) -> None:
        """Disconnect and end ``records()``."""
        self._stopper.stop()
        if self._queue is not None:
            self._queue.put_nowait(None)
        await self._shutdown()

    # ------------------------------------------------------------------ connection
    def _make_client(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt  # loaded only by workers that read MQTT
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, reconnect_on_failure=False)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    async def _keep_connected(self, client: mqtt.Client) -> None:
        while not self._stopper.stopped:
            self._lost.clear()
            self._session_ok = False
            try:
                started = await asyncio.to_thread(self._connect_blocking, client)
            except (OSError, ValueError) as exc:  # paho raises ValueError for an unusable host or port
                self.stats.failed(f"cannot connect to MQTT broker {self.address}: {exc}")
                await self._stopper.pause(self._backoff.next())
                continue
            if not started:
                return
            self.stats.restarts += 1
            await self._wait_lost(client)
            await asyncio.to_thread(self._join_network_thread, client)
            if self._session_ok:
                self._backoff.reset()
            await self._stopper.pause(self._backoff.next())

    def _connect_blocking(self, client: mqtt.Client) -> bool:
        with self._lock:
            if self._shut:
                return False
            client.connect(self.host, self.port, self.keepalive)
            client.loop_start()
            return True

    def _join_network_thread(self, client: mqtt.Client) -> None:
        with self._lock:
            if not self._shut:
                client.loop_stop()

    def _stop_client(self, client: mqtt.Client) -> None:
        with self._lock:
            self._shut = True
            client.disconnect()
            client.loop_stop()

    async def _wait_lost(self, client: mqtt.Client) -> None:
        # paho reports a lost connection through on_disconnect; the check below is a safety net for a session
        # that never came up and never went down (no CONNACK), so the source cannot hang on it.
        unconnected = 0
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), 5.0)
                return
            except TimeoutError:
                if client.is_connected():
                    unconnected = 0
                    continue
                unconnected += 1
                if unconnected >= 2:
                    self.stats.failed(f"MQTT broker {self.address}: no session after 10 s; reconnecting")
                    return

    async def _shutdown(self) -> None:
        self._stopper.stop()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(self._stop_client, client)
        self.stats.connected = False

    # ------------------------------------------------------------------ paho's thread
    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            loop.call_soon_threadsafe(callback, *args)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._post(self._refused, str(reason))
            return
        client.subscribe(self.topic, qos=self.qos)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
        failed = [r for r in reasons if r.is_failure]
        self._post(self._subscribed, str(failed[0]) if failed else None)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._post(self._disconnected, str(reason))

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._post(self._deliver, str(message.topic), bytes(message.payload), _now_ms())

    # ------------------------------------------------------------------ back on the asyncio loop
    def _refused(self, reason: str) -> None:
        self.stats.failed(f"MQTT broker {self.address} refused the connection: {reason}")
        self._lost.set()

    def _subscribed(self, failure: str | None) -> None:
        if failure is not None:
            self.stats.failed(f"MQTT broker {self.address} refused the subscription to {self.topic!r}: {failure}")
            self._lost.set()
            return
        self._session_ok = True
        self.stats.connected = True

    def _disconnected(self, reason: str) -> None:
        self.stats.connected = False
        if not self._stopper.stopped:
            self.stats.failed(f"lost the connection to MQTT broker {self.address}: {reason}")
        self._lost.set()

    def _deliver(self, topic: str, payload: bytes, received_ms: int) -> None:
        queue = self._queue
        if queue is None or self._stopper.stopped:
            return
        self.stats.received += 1
        if queue.qsize() >= self.queue_limit:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
                self.stats.dropped += 1
        queue.put_nowait((topic, payload, received_ms))

    # ------------------------------------------------------------------ payloads
    def _parse(self, topic: str, payload: bytes, received_ms: int) -> StreamRecord | None:
        try:
            record = parse_payload(topic, payload, received_ms)
        except PayloadError as exc:
            self.stats.ignored += 1
            self.stats.last_error = f"MQTT topic {topic!r}: {exc}"
            return None
        if self.properties is not None and record.ref not in self.properties:
            self.stats.ignored += 1
            return None
        self.stats.last_record_ms = record.timestamp
        return record


def parse_payload(topic: str, payload: bytes, received_ms: int) -> StreamRecord:
    """The record in one MQTT message (see the module's docstring for the forms). Raises :class:`PayloadError`."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(f"payload of {len(payload)} bytes is not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise PayloadError(f"payload is not valid JSON ({exc}): {text[:80]!r}") from None
        return _from_json(document, received_ms)
    match = _GO_TEXT.fullmatch(text)
    if match is None:
        raise PayloadError(
            f"payload {text[:80]!r} is neither a JSON record nor the Go mapper's 'time is ...  TOPIC: VALUE' text"
        )
    return _from_go_text(topic, match[1], received_ms)


def _from_json(document: Any, received_ms: int) -> StreamRecord:
    if not isinstance(document, dict):
        raise PayloadError(f"JSON payload is a {type(document).__name__}, not an object")

    def pick(*keys: str) -> Any:
        return next((document[k] for k in keys if k in document), None)

    device, prop = pick("device", "DeviceName"), pick("property", "PropertyName")
    namespace = pick("namespace", "Namespace") or DEFAULT_NAMESPACE
    value = value_text(pick("value", "Value"))
    if not isinstance(device, str) or not device or not isinstance(prop, str) or not prop:
        raise PayloadError("JSON payload without 'device' and 'property' (or DeviceName and PropertyName)")
    if value is None:
        raise PayloadError(f"JSON payload for {namespace}/{device}/{prop} has no 'value'")
    stamp = pick("timestamp", "TimeStamp")
    if isinstance(stamp, str) and stamp.isdigit():
        stamp = int(stamp)
    if stamp is None or stamp == 0:
        stamp = received_ms  # a publisher that does not stamp its values: the time we got it is the best we know
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or stamp < 0:
        raise PayloadError(f"JSON payload for {namespace}/{device}/{prop}: timestamp {stamp!r} is not milliseconds")
    return StreamRecord(str(namespace), device, prop, value, int(stamp))


def _from_go_text(topic: str, rest: str, received_ms: int) -> StreamRecord:
    levels = topic.split("/")
    if len(levels) < 3 or not all(levels[-3:]):
        raise PayloadError(
            "the Go mapper's text payload names no property: publish it on a topic ending in NAMESPACE/DEVICE/PROPERTY"
        )
    prefix = f"{topic}: "
    # The text repeats the topic; with it known, a value that itself holds ': ' is cut in the right place.
    value = rest[len(prefix) :] if rest.startswith(prefix) else rest.partition(": ")[2]
    namespace, device, prop = levels[-3:]
    return StreamRecord(namespace, device, prop, value, received_ms)
