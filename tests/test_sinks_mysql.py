"""The MySQL sink against a real MariaDB (private datadir, socket and port): the table and its index, values, types
and timestamps read back, an outage with no loss and arrival in order, wrong password and wrong database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapper_framework.sinks.mysql_sink import TABLE
from tests.db_peers import PASSWORD, USER, Server, assert_counted, mariadb, rest_get, seq_device, seq_mapper, sql
from tests.sdk_driver import until

OUTAGE_S = 30  # the outage: about 300 points per property queue up meanwhile


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with mariadb(tmp_path_factory.mktemp("mariadb")) as s:
        yield s


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "mysql-password"
    path.write_text(PASSWORD + "\n")
    return path


def mysql_push(server: Server, database: str = "plant") -> dict[str, Any]:
    addr = f"127.0.0.1:{server.port}"
    return {"dbMethod": {"mysql": {"mysqlClientConfig": {"addr": addr, "database": database, "userName": USER}}}}


def rows(server: Server, device: str, prop: str) -> list[tuple[Any, ...]]:
    """(id, ts, type, value) in arrival order; none before the mapper created the table."""
    if not sql(server, f"SHOW TABLES FROM plant LIKE '{TABLE}'"):
        return []
    return sql(
        server,
        f"SELECT id, ts, type, value FROM plant.{TABLE} WHERE namespace='default' AND device='{device}'"
        f" AND property='{prop}' ORDER BY id",
    )


async def test_values_types_timestamps_and_the_table(
    server: Server, secret: Path, make_agent: Any, sockdir: Path
) -> None:
    types = ["INT", "FLOAT", "BOOLEAN", "STRING"]
    settings = {"mysql": {"password_file": str(secret)}}
    async with seq_mapper(make_agent, sockdir, [seq_device("dev-m", types, mysql_push(server))], types, settings) as (
        mapper,
        _,
    ):
        await until(lambda: len(rows(server, "dev-m", "p3")) >= 3, what="rows in mariadb")
        reported = {f"p{i}": (await rest_get(mapper, f"/api/v1/device/default/dev-m/p{i}"))[1] for i in range(4)}
        await until(
            lambda: all(any(r[1] == t["timestamp"] for r in rows(server, "dev-m", p)) for p, t in reported.items()),
            what="the reported values stored",
        )
        for prop, twin in reported.items():
            (row,) = [r for r in rows(server, "dev-m", prop) if r[1] == twin["timestamp"]]
            assert (row[1], row[2], row[3]) == (twin["timestamp"], twin["type"], twin["value"])
        status, body = await rest_get(mapper, "/api/v1/database/default/dev-m")
        assert status == 200, body
        p0 = next(s for s in body["series"] if s["property"] == "p0")
        assert [p["value"] for p in p0["points"]][:3] == ["1", "2", "3"]
    columns = sql(server, f"SHOW INDEX FROM plant.{TABLE} WHERE Key_name = 'series_ts'")
    assert [c[4] for c in columns] == ["namespace", "device", "property", "ts"]


async def test_outage_loses_nothing_and_rows_arrive_in_order(
    server: Server, secret: Path, make_agent: Any, sockdir: Path
) -> None:
    """10 properties at 100 ms; MariaDB is stopped for OUTAGE_S (30 s, as the issue asks) and restarted."""
    types = ["INT"] * 10
    settings = {"mysql": {"password_file": str(secret)}}
    async with seq_mapper(make_agent, sockdir, [seq_device("dev-o", types, mysql_push(server))], types, settings) as (
        mapper,
        fleet,
    ):
        await until(lambda: len(rows(server, "dev-o", "p9")) >= 3, what="first rows")
        dest = next(iter(mapper.push.destinations.values()))
        server.stop()
        before = dict(fleet.counts["dev-o"])
        await asyncio.sleep(OUTAGE_S)
        during = {k: v - before[k] for k, v in fleet.counts["dev-o"].items()}
        assert min(during.values()) > 10, during
        assert dest.stats.retries >= 1 and len(dest.queue) > 0
        await asyncio.to_thread(server.start)
        await until(lambda: not dest.queue, timeout=30, what="queue drained")
    for i in range(10):
        got = rows(server, "dev-o", f"p{i}")
        assert_counted([int(r[3]) for r in got], fleet.counts["dev-o"][i], f"p{i}")
        assert [r[1] for r in got] == sorted(r[1] for r in got)  # by arrival (id), timestamps only go up
    assert dest.stats.dropped == 0


@pytest.mark.parametrize(
    ("case", "expect"),
    [("wrong password", "mysql refused the login"), ("wrong database", "mysql has no database 'nosuch'")],
)
async def test_bad_configuration_is_one_clear_error(
    case: str,
    expect: str,
    server: Server,
    secret: Path,
    tmp_path: Path,
    make_agent: Any,
    sockdir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret_file = secret
    push = mysql_push(server)
    if case == "wrong password":
        secret_file = tmp_path / "wrong"
        secret_file.write_text("not-it\n")
    else:
        push = mysql_push(server, "nosuch")
    caplog.set_level(logging.WARNING)
    settings = {"mysql": {"password_file": str(secret_file)}, "flush_on_stop_s": 0.5}
    async with seq_mapper(make_agent, sockdir, [seq_device("dev-bad", ["INT"], push)], ["INT"], settings) as (
        _,
        fleet,
    ):
        await until(lambda: any(expect in r.getMessage() for r in caplog.records), timeout=15, what=expect)
        lines = [r.getMessage() for r in caplog.records if expect in r.getMessage()]
        assert len(lines) == 1, lines
        assert "device default/dev-bad property p0" in lines[0] and f"mysql {USER}@127.0.0.1:" in lines[0]
        assert "hint:" in lines[0] and "not-it" not in lines[0] and PASSWORD not in lines[0]
        reads = fleet.counts["dev-bad"][0]
        await until(lambda: fleet.counts["dev-bad"][0] > reads + 10, what="dev-bad keeps collecting")
