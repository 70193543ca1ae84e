"""Redis: one sorted set per device property, scored by the device's timestamp (ms).

Key ``kubeedge:{namespace}:{device}:{property}``; member ``{"timestamp":..,"type":..,"value":..}`` (compact JSON).
A sorted set rather than a stream: a retried batch (a reply lost after the server applied it) re-adds the same
members, so nothing is stored twice, and a time range is one ``ZRANGEBYSCORE``. A batch is one MULTI/EXEC
pipeline: all of it or none.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dmi.v1beta1 import api_pb2 as pb
from mapper_framework.config import RedisSettings
from mapper_framework.sinks.base import SeriesKey, Sink, SinkError, StoredPoint, read_secret, split_addr

if TYPE_CHECKING:
    from mapper_framework.push import Record


def series_key(namespace: str, device: str, prop: str) -> str:
    """The sorted set of one property."""
    return f"kubeedge:{namespace}:{device}:{prop}"


def member(rec: Record) -> str:
    """A stored value; the timestamp makes every member of a series unique."""
    return f'{{"timestamp":{rec.timestamp},"type":{json.dumps(rec.type)},"value":{json.dumps(rec.value)}}}'


class RedisSink(Sink):
    kind = "redis"
    readable = True

    def __init__(self, config: pb.RedisClientConfig, settings: RedisSettings) -> None:
        self.host, self.port = split_addr(config.addr, 6379)
        super().__init__(f"redis {self.host}:{self.port} db {config.db}")
        self._db = config.db
        # One worker writes one batch at a time: the pool rarely needs more than a connection or two.
        self._poolsize = config.poolsize or 10
        # go-redis's MinIdleConns: connections opened up front and kept, so a burst does not wait for handshakes.
        self._min_idle = max(0, min(config.minIdleConns, self._poolsize))
        self._settings = settings
        self._client: Any = None

    async def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio as aioredis  # only mappers with a Redis sink load it

            s = self._settings
            password = read_secret(s.password_env, s.password_file, "redis.password")
            self._client = aioredis.Redis(
                host=self.host,
                port=self.port,
                db=self._db,
                username=s.username or None,
                password=password,
                max_connections=self._poolsize,
                socket_connect_timeout=3,
                socket_timeout=10,
            )
            if self._min_idle:
                pool = self._client.connection_pool
                warm = [await pool.get_connection() for _ in range(self._min_idle)]
                for conn in warm:
                    await pool.release(conn)
        return self._client

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to release
                await client.aclose()

    def _error(self, exc: Exception) -> SinkError:
        import redis.exceptions as rx

        text = str(exc) or type(exc).__name__
        if isinstance(exc, rx.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
            return SinkError(
                f"redis refused the login: {text}",
                "check push.redis.password_file / password_env (and username) in the mapper config",
            )
        if "DB index is out of range" in text:
            return SinkError(
                f"redis has no database {self._db}: {text}",
                "redisClientConfig.db must be below the server's 'databases' setting (16 by default)",
            )
        if isinstance(exc, (rx.ConnectionError, rx.TimeoutError, OSError)):
            return SinkError(
                f"cannot reach redis at {self.host}:{self.port}: {text}",
                "check redisClientConfig.addr in the Device CR and that the server runs",
            )
        return SinkError(f"redis: {text}", "see the Redis server's log")

    async def write(self, batch: Sequence[Record]) -> None:
        groups: dict[str, dict[str, int]] = {}
        for rec in batch:
            groups.setdefault(series_key(rec.namespace, rec.device, rec.property), {})[member(rec)] = rec.timestamp
        client = await self._redis()
        try:
            async with client.pipeline(transaction=True) as pipe:
                for key, members in groups.items():
                    pipe.zadd(key, members)
                await pipe.execute()
        except Exception as exc:
            await self._reset()  # the next try starts from a fresh connection (and re-reads the secret)
            raise self._error(exc) from None

    async def read(self, key: SeriesKey, limit: int) -> list[StoredPoint]:
        client = await self._redis()
        try:
            raw = await client.zrange(series_key(*key), -limit, -1)
        except Exception as exc:
            await self._reset()
            raise self._error(exc) from None
        out = []
        for item in raw:
            doc = json.loads(item)
            out.append(StoredPoint(int(doc["timestamp"]), str(doc["value"]), str(doc["type"])))
        return out

    async def close(self) -> None:
        await self._reset()
