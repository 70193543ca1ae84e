"""The Redis sink against a real redis-server (password from a secret file): values, types and timestamps read back,
GET /api/v1/database, /metrics, an outage with no loss, and bad configurations named clearly."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.db_peers import PASSWORD, Server, assert_counted, redis_server, rest_get, seq_device, seq_mapper
from tests.sdk_driver import until

OUTAGE_S = 30  # the outage: about 300 points per property queue up meanwhile
TYPES = ["INT", "FLOAT", "BOOLEAN", "STRING"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with redis_server(tmp_path / "redis") as s:
        yield s


def stored(server: Server, key: str) -> list[tuple[dict[str, Any], float]]:
    client = redis.Redis(port=server.port, password=PASSWORD)
    try:
        return [(json.loads(m), s) for m, s in client.zrange(key, 0, -1, withscores=True)]
    finally:
        client.close()


def redis_push(server: Server, db: int = 0) -> dict[str, Any]:
    return {"dbMethod": {"redis": {"redisClientConfig": {"addr": f"127.0.0.1:{server.port}", "db": db}}}}


def settings(secret: Path) -> dict[str, Any]:
    return {"redis": {"password_file": str(secret)}}


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "redis-password"
    path.write_text(PASSWORD + "\n")
    return path


async def test_values_types_and_timestamps_read_back(
    server: Server, secret: Path, make_agent: Any, sockdir: Path
) -> None:
    devices = [seq_device("dev-r", TYPES, redis_push(server))]
    async with seq_mapper(make_agent, sockdir, devices, TYPES, settings(secret)) as (mapper, _fleet):
        await until(lambda: len(stored(server, "kubeedge:default:dev-r:p3")) >= 3, what="points in redis")
        # What the mapper reported for each property (value and device timestamp) must be in Redis as it is.
        reported = {}
        for i in range(4):
            _, twin = await rest_get(mapper, f"/api/v1/device/default/dev-r/p{i}")
            reported[f"p{i}"] = twin
        await until(
            lambda: all(
                any(m["timestamp"] == t["timestamp"] for m, _ in stored(server, f"kubeedge:default:dev-r:{p}"))
                for p, t in reported.items()
            ),
            what="the reported values stored",
        )
        for prop, twin in reported.items():
            all_points = stored(server, f"kubeedge:default:dev-r:{prop}")
            match = [(m, s) for m, s in all_points if m["timestamp"] == twin["timestamp"]]
            assert len(match) == 1
            member, score = match[0]
            assert member == {"timestamp": twin["timestamp"], "type": twin["type"], "value": twin["value"]}
            assert score == twin["timestamp"]
        types = {p: t["type"] for p, t in reported.items()}
        assert types == {"p0": "int", "p1": "float", "p2": "boolean", "p3": "string"}
        assert reported["p1"]["value"].endswith(".25") and reported["p3"]["value"].startswith("s")

        status, body = await rest_get(mapper, "/api/v1/database/default/dev-r")
        assert status == 200, body
        series = {s["property"]: s for s in body["series"]}
        assert set(series) == {"p0", "p1", "p2", "p3"}
        assert series["p0"]["sink"] == f"redis 127.0.0.1:{server.port} db 0"
        points = series["p0"]["points"]
        assert [p["value"] for p in points] == [str(n) for n in range(1, len(points) + 1)][: len(points)]
        assert all(p["type"] == "int" for p in points)
        stamps = [p["timestamp"] for p in points]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)

        _, metrics = await rest_get(mapper, "/metrics")
        sink = f'sink="redis 127.0.0.1:{server.port} db 0"'
        for name in ("points_total", "batches_total", "retries_total", "queue_depth", "dropped_total"):
            assert f"mapper_push_{name}{{{sink}}}" in metrics
        assert "not-it" not in metrics and PASSWORD not in metrics


async def test_outage_loses_nothing_and_collection_goes_on(
    server: Server, secret: Path, make_agent: Any, sockdir: Path
) -> None:
    """10 properties at 100 ms; the server is stopped for OUTAGE_S (30 s, as the issue asks) and restarted."""
    types = ["INT"] * 10
    async with seq_mapper(make_agent, sockdir, [seq_device("dev-o", types, redis_push(server))], types,
                          settings(secret)) as (mapper, fleet):  # fmt: skip
        await until(lambda: len(stored(server, "kubeedge:default:dev-o:p9")) >= 3, what="first points")
        dest = next(iter(mapper.push.destinations.values()))
        server.stop()
        before = dict(fleet.counts["dev-o"])
        await asyncio.sleep(OUTAGE_S)
        during = {k: v - before[k] for k, v in fleet.counts["dev-o"].items()}
        assert min(during.values()) > 10, during  # collection went on
        assert dest.stats.retries >= 1 and len(dest.queue) > 0
        server.start()
        await until(lambda: not dest.queue, timeout=30, what="queue drained")
    reads = fleet.counts["dev-o"]
    for i in range(10):
        values = [int(m["value"]) for m, _ in stored(server, f"kubeedge:default:dev-o:p{i}")]
        assert_counted(values, reads[i], f"p{i}")
        stamps = [m["timestamp"] for m, _ in stored(server, f"kubeedge:default:dev-o:p{i}")]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert dest.stats.dropped == 0


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("wrong password", "redis refused the login"),
        ("missing secret", "cannot read the secret file"),
        ("unreachable", "cannot reach redis at 127.0.0.1:9"),
        ("wrong database", "redis has no database 99"),
    ],
)
async def test_bad_configuration_is_one_clear_error_and_the_rest_goes_on(
    case: str,
    expect: str,
    server: Server,
    secret: Path,
    tmp_path: Path,
    make_agent: Any,
    sockdir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = redis_push(server)
    bad_settings: dict[str, Any] = settings(secret)
    bad = redis_push(server, db=1)  # a second sink: another database of the same server
    if case == "wrong password":
        wrong = tmp_path / "wrong"
        wrong.write_text("not-it\n")
        # One redis password per mapper: the bad sink is another server with another password.
        bad_settings = {"redis": {"password_file": str(wrong)}}
        good = {"mqtt": {}}  # nothing else pushes; collection must go on
    elif case == "missing secret":
        bad_settings = {"redis": {"password_file": str(tmp_path / "absent")}}
        good = {"mqtt": {}}
    elif case == "unreachable":
        bad = {"dbMethod": {"redis": {"redisClientConfig": {"addr": "127.0.0.1:9"}}}}
    else:
        bad = redis_push(server, db=99)
    bad_settings["flush_on_stop_s"] = 0.5  # what cannot be delivered is not waited for at the end
    caplog.set_level(logging.WARNING)
    devices = [seq_device("dev-bad", ["INT"], bad), seq_device("dev-good", ["INT"], good)]
    async with seq_mapper(make_agent, sockdir, devices, ["INT"], bad_settings) as (_mapper, fleet):
        await until(lambda: any(expect in r.getMessage() for r in caplog.records), timeout=15, what=expect)
        lines = [r.getMessage() for r in caplog.records if expect in r.getMessage()]
        assert len(lines) == 1, lines  # once, not once per retry
        line = lines[0]
        assert "device default/dev-bad property p0" in line and "redis 127.0.0.1:" in line and "hint:" in line
        assert PASSWORD not in line and "not-it" not in line
        reads = fleet.counts["dev-bad"][0]
        await until(lambda: fleet.counts["dev-bad"][0] > reads + 10, what="dev-bad keeps collecting")
        if case in ("unreachable", "wrong database"):
            await until(lambda: len(stored(server, "kubeedge:default:dev-good:p0")) > 5, what="good sink works")


async def test_min_idle_conns_are_opened_up_front(server: Server, secret: Path, make_agent: Any, sockdir: Path) -> None:
    push = redis_push(server)
    push["dbMethod"]["redis"]["redisClientConfig"].update({"poolsize": 8, "minIdleConns": 5})
    admin = redis.Redis(port=server.port, password=PASSWORD)
    before = len(admin.client_list())  # the admin connection itself
    async with seq_mapper(make_agent, sockdir, [seq_device("dev-i", ["INT"], push)], ["INT"], settings(secret)) as _:
        await until(lambda: len(stored(server, "kubeedge:default:dev-i:p0")) >= 2, what="points in redis")
        # minIdleConns connections stay open beside the one each write uses.
        assert len(admin.client_list()) - before >= 5
    admin.close()
