"""MySQL / MariaDB: every value a row of one table, created if missing.

Schema (``TABLE``)::

    id        BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY   -- arrival order
    namespace VARCHAR(253), device VARCHAR(253), property VARCHAR(128)
    ts        BIGINT        -- the device's timestamp, ms since the epoch
    type      VARCHAR(16)   -- the model's property type, lower case (int, float, ...)
    value     TEXT          -- the value as reported (a string, as in twins)
    UNIQUE KEY series_ts (namespace, device, property, ts)

The unique key is the index reads use, and it makes a retried batch (a commit whose answer was lost) a no-op
(``ON DUPLICATE KEY UPDATE id = id``): nothing is stored twice. A batch is one multi-row INSERT in one transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dmi.v1beta1 import api_pb2 as pb
from mapper_framework.config import MysqlSettings
from mapper_framework.sinks.base import SeriesKey, Sink, SinkError, StoredPoint, read_secret, split_addr

if TYPE_CHECKING:
    from mapper_framework.push import Record

TABLE = "kubeedge_device_data"
CREATE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  namespace VARCHAR(253) NOT NULL,
  device VARCHAR(253) NOT NULL,
  property VARCHAR(128) NOT NULL,
  ts BIGINT NOT NULL COMMENT 'the device timestamp, ms since the epoch',
  type VARCHAR(16) NOT NULL,
  value TEXT NOT NULL,
  UNIQUE KEY series_ts (namespace, device, property, ts)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
INSERT = (
    f"INSERT INTO {TABLE} (namespace, device, property, ts, type, value) VALUES (%s, %s, %s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE id = id"
)
SELECT = (
    f"SELECT ts, value, type FROM {TABLE} WHERE namespace = %s AND device = %s AND property = %s"
    " ORDER BY ts DESC LIMIT %s"
)

# MySQL client error codes worth a specific hint.
_DB_ACCESS_DENIED, _ACCESS_DENIED, _UNKNOWN_DB, _CANNOT_CONNECT, _NO_HOST = 1044, 1045, 1049, 2003, 2005


class MysqlSink(Sink):
    kind = "mysql"
    readable = True

    def __init__(self, config: pb.MySQLClientConfig, settings: MysqlSettings) -> None:
        self.host, self.port = split_addr(config.addr, 3306)
        self.database = config.database
        self.user = config.userName
        super().__init__(f"mysql {self.user}@{self.host}:{self.port}/{self.database}")
        self._settings = settings
        self._pool: Any = None

    async def _connect(self) -> Any:
        if self._pool is None:
            # Only mappers with a MySQL sink load it. No type stubs; the ignore also holds in `mapper new` projects.
            import aiomysql  # type: ignore[import-untyped,unused-ignore]

            s = self._settings
            password = read_secret(s.password_env, s.password_file, "mysql.password")
            pool = await aiomysql.create_pool(
                host=self.host,
                port=self.port,
                user=self.user,
                password=password or "",
                db=self.database,
                minsize=1,
                maxsize=2,
                autocommit=False,
                connect_timeout=3,
                charset="utf8mb4",
            )
            try:
                async with pool.acquire() as conn, conn.cursor() as cur:
                    # Asked first: CREATE TABLE IF NOT EXISTS on an existing table raises a Python warning.
                    await cur.execute("SHOW TABLES LIKE %s", (TABLE,))
                    if not await cur.fetchall():
                        await cur.execute(CREATE)
                    await conn.commit()
            except BaseException:
                pool.close()
                await pool.wait_closed()
                raise
            self._pool = pool
        return self._pool

    async def _reset(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            with contextlib.suppress(Exception):
                await pool.wait_closed()

    def _error(self, exc: Exception) -> SinkError:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc) or type(exc).__name__
        if isinstance(exc, SinkError):
            return exc
        if code == _ACCESS_DENIED:
            return SinkError(
                f"mysql refused the login: {text}",
                "check mysqlClientConfig.userName in the Device CR and push.mysql.password_file / password_env"
                " in the mapper config",
            )
        if code in (_UNKNOWN_DB, _DB_ACCESS_DENIED):
            # A user without rights on a database that does not exist gets 1044, not 1049.
            return SinkError(
                f"mysql has no database {self.database!r} that user {self.user!r} may use: {text}",
                "create it and GRANT the user access, or fix mysqlClientConfig.database in the Device CR",
            )
        if code in (_CANNOT_CONNECT, _NO_HOST) or isinstance(exc, OSError):
            return SinkError(
                f"cannot reach mysql at {self.host}:{self.port}: {text}",
                "check mysqlClientConfig.addr in the Device CR and that the server runs",
            )
        return SinkError(f"mysql: {text}", "see the database server's log")

    async def write(self, batch: Sequence[Record]) -> None:
        rows = [(r.namespace, r.device, r.property, r.timestamp, r.type, r.value) for r in batch]
        try:
            pool = await self._connect()
            async with pool.acquire() as conn:
                try:
                    async with conn.cursor() as cur:
                        await cur.executemany(INSERT, rows)  # one multi-row INSERT
                    await conn.commit()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await conn.rollback()
                    raise
        except Exception as exc:
            await self._reset()
            raise self._error(exc) from None

    async def read(self, key: SeriesKey, limit: int) -> list[StoredPoint]:
        try:
            pool = await self._connect()
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(SELECT, (*key, limit))
                rows = await cur.fetchall()
                await conn.commit()  # end the read transaction: the next read sees new rows
        except Exception as exc:
            await self._reset()
            raise self._error(exc) from None
        return [StoredPoint(int(ts), str(value), str(type_)) for ts, value, type_ in reversed(rows)]

    async def close(self) -> None:
        await self._reset()
