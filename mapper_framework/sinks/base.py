"""The sink interface and what every sink shares: errors with a hint, secrets, addresses."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from dmi.v1beta1 import api_pb2 as pb

if TYPE_CHECKING:
    from mapper_framework.push import Record

SeriesKey = tuple[str, str, str]  # namespace, device, property


class SinkError(Exception):
    """A write or read a sink could not do. ``hint`` says what to fix; ``retryable`` False drops the batch."""

    def __init__(self, message: str, hint: str = "", retryable: bool = True) -> None:
        super().__init__(message)
        self.hint = hint
        self.retryable = retryable

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}; hint: {self.hint}" if self.hint else text


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """One value as a sink stored it (what ``GET /api/v1/database/...`` answers)."""

    timestamp: int  # ms since the epoch: the device's timestamp
    value: str
    type: str


class Sink(ABC):
    """One destination server. The push manager calls ``write`` from a single task, one batch at a time."""

    kind: ClassVar[str]
    #: True when the sink can give back what it stored (``read``).
    readable: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    def bind(self, key: SeriesKey, method: pb.PushMethod) -> None:  # noqa: B027 - optional hook
        """Remember per-property settings of ``method`` (called once per property before its first record)."""

    @abstractmethod
    async def write(self, batch: Sequence[Record]) -> None:
        """Store ``batch`` (in order) or raise :class:`SinkError`; a retried batch must not be stored twice."""

    async def read(self, key: SeriesKey, limit: int) -> list[StoredPoint]:
        """The newest ``limit`` points of one series, oldest first."""
        raise SinkError(f"sink {self.name} cannot be read back by the mapper", retryable=False)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def read_secret(env: str, file: str, setting: str) -> str | None:
    """The secret named in the mapper config (``push.<setting>_file`` wins over ``_env``); None when none is named.

    The value never appears in an error.
    """
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            raise SinkError(
                f"cannot read the secret file {file}: {exc.strerror}",
                f"mount the Secret there or fix push.{setting}_file in the mapper config",
            ) from None
    if env:
        value = os.environ.get(env)
        if value is None:
            raise SinkError(
                f"environment variable {env} is not set",
                f"set it in the mapper's Deployment or fix push.{setting}_env in the mapper config",
            )
        return value
    return None


def split_addr(addr: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (or ``host``, ``[v6]:port``, ``scheme://host:port``) -> (host, port)."""
    text = addr.split("://", 1)[-1].split("/", 1)[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"address {addr!r} has no host")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"address {addr!r}: port {port!r} is not a number") from None


def _addr_problem(addr: str) -> str | None:
    try:
        _host, port = split_addr(addr, 1)
    except ValueError as exc:
        return str(exc)
    return None if 0 < port < 65536 else f"address {addr!r}: port {port} is out of range 1-65535"


def unsupported(method: pb.PushMethod) -> str | None:
    """Why this mapper cannot serve ``method``, or None. TDengine: no server could be tested here, so no sink."""
    if method.HasField("dbMethod") and method.dbMethod.HasField("tdengine"):
        return (
            "dbMethod.TDEngine is not supported by this mapper (no TDengine server can be tested with it);"
            " hint: use dbMethod influxdb2, redis or mysql instead"
        )
    return None


def config_problem(method: pb.PushMethod) -> str | None:
    """A database/OTEL push method this mapper cannot use as given (a missing address...), or None."""
    if (why := unsupported(method)) is not None:
        return why
    db = method.dbMethod
    if method.HasField("dbMethod"):
        if db.HasField("influxdb2"):
            c = db.influxdb2.influxdb2ClientConfig
            if not c.url or not c.bucket:
                return "dbMethod.influxdb2 needs influxdb2ClientConfig.url and bucket; hint: set both in the Device CR"
        if db.HasField("redis"):
            if not db.redis.redisClientConfig.addr:
                return "dbMethod.redis needs redisClientConfig.addr; hint: set it (host:port) in the Device CR"
            if (bad := _addr_problem(db.redis.redisClientConfig.addr)) is not None:
                return f"dbMethod.redis redisClientConfig.addr: {bad}; hint: host:port, e.g. 127.0.0.1:6379"
        if db.HasField("mysql"):
            c2 = db.mysql.mysqlClientConfig
            if not c2.addr or not c2.database or not c2.userName:
                return (
                    "dbMethod.mysql needs mysqlClientConfig.addr, database and userName;"
                    " hint: set them in the Device CR (the password goes in the mapper config)"
                )
            if (bad := _addr_problem(c2.addr)) is not None:
                return f"dbMethod.mysql mysqlClientConfig.addr: {bad}; hint: host:port, e.g. 127.0.0.1:3306"
    if method.HasField("otel") and not method.otel.endpointURL:
        return "otel needs endpointURL; hint: set it (http://host:4318/v1/metrics) in the Device CR"
    return None
