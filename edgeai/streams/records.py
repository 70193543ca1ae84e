"""The values every stream source and window shares: property references, records, counters, errors."""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_NAMESPACE = "default"


class StreamConfigError(ValueError):
    """A stream parameter, URL or property reference is malformed; the message names it and the expected form."""


class StreamStalled(Exception):
    """No sample arrived for the idle time. Raised by :class:`SampleStream`'s iterator; iterating may go on."""

    def __init__(self, url: str, idle_seconds: float, last_error: str | None = None) -> None:
        self.url = url
        self.idle_seconds = idle_seconds
        self.last_error = last_error
        message = f"no sample from {url} for {idle_seconds:g} s"
        if last_error:
            message += f" (last error: {last_error})"
        super().__init__(message)


@dataclass(frozen=True)
class PropertyRef:
    """One property of one device: ``namespace/device/property``."""

    namespace: str
    device: str
    property: str

    @classmethod
    def parse(cls, text: str) -> PropertyRef:
        """``ns/device/property``, or ``device/property`` in the ``default`` namespace.

        Raises :class:`StreamConfigError` naming the text and the expected form.
        """
        parts = [p.strip() for p in text.strip().split("/")]
        if len(parts) == 2:
            parts.insert(0, DEFAULT_NAMESPACE)
        if len(parts) != 3 or not all(parts) or any(_SPACE.search(p) for p in parts):
            raise StreamConfigError(
                f"property reference {text!r}: expected NAMESPACE/DEVICE/PROPERTY or DEVICE/PROPERTY"
                " (namespace 'default'), each part non-empty and without spaces"
            )
        return cls(parts[0], parts[1], parts[2])

    def __str__(self) -> str:
        return f"{self.namespace}/{self.device}/{self.property}"


_SPACE = re.compile(r"\s")

Frame = NDArray[np.uint8]
"""A decoded video frame: shape (height, width, 3), RGB, uint8."""


@dataclass(frozen=True)
class StreamRecord:
    """One value of one property as it came over the wire.

    ``value`` is the text the mapper sent (MQTT, REST) or a decoded frame (:data:`Frame`); ``timestamp`` is in
    milliseconds since the epoch. Records holding frames do not compare meaningfully with ``==``.
    """

    namespace: str
    device: str
    property: str
    value: str | Frame
    timestamp: int

    @builtins.property  # the field named ``property`` hides the builtin in this class body
    def ref(self) -> PropertyRef:
        """The property this record belongs to."""
        return PropertyRef(self.namespace, self.device, self.property)


@dataclass
class StreamStats:
    """What a source has seen so far; read it from any thread (plain counters, updated by the source's loop).

    ``received``: messages, REST answers or decoded frames that arrived (some never become records: see the
    other counters). ``ignored``: records of properties nobody asked for and payloads that could not be parsed.
    ``rejected``: values a numeric window could not use. ``errors`` / ``last_error``: connection, HTTP and
    decoder failures, and the latest problem of any kind (it is kept after recovery, as a history of one).
    ``last_record_ms``: the timestamp of the latest record handed on. ``connected``: the peer is reachable now.
    ``dropped``: records or samples thrown away because a consumer was slower than the stream.
    ``stale``: REST answers flagged stale by the mapper. ``restarts``: connections or decoder processes started.
    """

    received: int = 0
    ignored: int = 0
    rejected: int = 0
    errors: int = 0
    last_error: str | None = None
    last_record_ms: int | None = None
    connected: bool = False
    dropped: int = 0
    stale: int = 0
    restarts: int = 0

    def failed(self, message: str) -> None:
        """Count a failure and keep its text."""
        self.errors += 1
        self.last_error = message


_CREDENTIALS = re.compile(r"(?<=//)[^/@\s]+@")


def scrub(text: str) -> str:
    """``text`` with any ``//user:password@`` in URLs masked: ffmpeg and HTTP errors quote the URL verbatim."""
    return _CREDENTIALS.sub("***@", text)


def value_text(value: Any) -> str | None:
    """A JSON value as the text a mapper would have sent, or None when it carries no value."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
