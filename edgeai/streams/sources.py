"""The source contract, and the source a :class:`StreamSpec` asks for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from edgeai.streams.frames import FrameSource
from edgeai.streams.mqtt import MqttSource
from edgeai.streams.records import StreamRecord, StreamStats
from edgeai.streams.rest import RestPollSource
from edgeai.streams.spec import StreamSpec, parse_mqtt_url, url_kind


class Source(Protocol):
    """A stream of records: ``records()`` runs until ``close()``, surviving network failures (see ``stats``)."""

    stats: StreamStats

    def records(self) -> AsyncIterator[StreamRecord]:
        """The records, as an async generator; iterate it once."""
        ...

    async def close(self) -> None:
        """Stop: end ``records()`` and release connections and child processes."""
        ...


def open_source(spec: StreamSpec) -> MqttSource | RestPollSource | FrameSource:
    """The source for ``spec.url``: ``mqtt://HOST:PORT/TOPIC`` -> :class:`MqttSource`, ``http(s)://HOST:PORT``
    -> :class:`RestPollSource`, ``rtsp://``, ``file://`` or a plain path -> :class:`FrameSource`.

    MQTT and REST sources deliver the feature properties and the label; nothing is connected until the
    records are iterated. An unknown scheme raises :class:`StreamConfigError` naming the URL and the supported
    ones.
    """
    kind = url_kind(spec.url)
    if kind == "mqtt":
        host, port, topic = parse_mqtt_url(spec.url)
        return MqttSource(host, port, topic, list(spec.wanted))
    if kind == "rest":
        return RestPollSource(spec.url, list(spec.wanted), spec.poll_seconds)
    return FrameSource(spec.url, spec.properties[0], spec.every_nth_frame, spec.frame_size)
