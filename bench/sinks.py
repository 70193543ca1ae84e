"""Database sinks under load: 1,000 devices x 10 properties at 1 s (10,000 points/s) through the mapper's push path
(PushManager: queue, batches, one pooled connection per sink) into real Redis, MariaDB and VictoriaMetrics (InfluxDB
v2 write API), and the OTLP exporter into a local receiver. Beside each, in the same run, the client library's own
bulk write with no mapper (the limit).

Collection is not in this bench (`report_path.py` measures the read/report path at the same scale): the records
are made as the runtime makes them, once per property per second, so the CPU figure is the sink work alone.

    .venv/bin/python bench/sinks.py [--seconds 10] [--sinks redis,mysql,influxdb2,otel]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmi.convert import push_method_to_proto
from mapper_framework.config import MysqlSettings, PushSettings, RedisSettings
from mapper_framework.push import PushManager, Record
from tests.db_peers import (
    PASSWORD,
    USER,
    OtlpReceiver,
    Server,
    mariadb,
    redis_server,
    victoria_metrics,
)

DEVICES, PROPS = 1000, 10


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


def records(second: int) -> list[Record]:
    stamp = int(time.time() * 1000)
    return [
        Record("default", f"dev-{d}", f"p{p}", str(second * 7 + d + p), "int", stamp)
        for d in range(DEVICES)
        for p in range(PROPS)
    ]


async def through_mapper(push: dict[str, Any], settings: PushSettings, seconds: int) -> dict[str, float]:
    manager = PushManager(settings=settings)
    method = push_method_to_proto(push)
    cpu0, t0 = cpu_s(), time.monotonic()
    for second in range(seconds):
        tick = t0 + second
        for rec in records(second):
            manager.submit(method, rec, 1000)
        await asyncio.sleep(max(0.0, tick + 1 - time.monotonic()))
    offered = seconds * DEVICES * PROPS
    await manager.flush(60)
    elapsed, cpu = time.monotonic() - t0, cpu_s() - cpu0
    (dest,) = manager.destinations.values()
    ages = [float(a) for a in dest.stats.age_ms]
    out = {
        "points_s": dest.stats.sent / elapsed,
        "delivered": dest.stats.sent / offered,
        "p50_ms": pct(ages, 50),
        "p99_ms": pct(ages, 99),
        "cpu_pct": 100 * cpu / elapsed,
        "rss_mb": rss_mb(),
        "batches": dest.stats.batches,
        "dropped": dest.stats.dropped,
    }
    await manager.close()
    return out


async def native(kind: str, server: Server | OtlpReceiver, n: int) -> float:
    """Points/s of the client library's own batched write (no mapper), 1,000-point batches."""
    base = records(0)
    recs = base * (n // len(base))  # timestamps and members are made unique below by the batch offset
    n = len(recs)
    t0 = time.monotonic()
    if kind == "redis":
        import redis.asyncio as aioredis

        r = aioredis.Redis(port=server.port, password=PASSWORD)
        for i in range(0, n, 1000):
            async with r.pipeline(transaction=True) as pipe:
                for rec in recs[i : i + 1000]:
                    pipe.zadd(f"native:{rec.device}:{rec.property}", {f"{rec.timestamp}:{rec.value}:{i}": i})
                await pipe.execute()
        await r.aclose()
    elif kind == "mysql":
        import aiomysql

        conn = await aiomysql.connect(host="127.0.0.1", port=server.port, user=USER, password=PASSWORD, db="plant")
        async with conn.cursor() as cur:
            await cur.execute("CREATE TABLE IF NOT EXISTS native (a VARCHAR(64), b VARCHAR(64), ts BIGINT, v TEXT)")
            for i in range(0, n, 1000):
                await cur.executemany(
                    "INSERT INTO native VALUES (%s, %s, %s, %s)",
                    [(r.device, r.property, r.timestamp + i, r.value) for r in recs[i : i + 1000]],
                )
                await conn.commit()
        conn.close()
    elif kind == "influxdb2":
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        async with InfluxDBClientAsync(url=f"http://127.0.0.1:{server.port}", token="", org="acme") as client:
            api = client.write_api()
            for i in range(0, n, 1000):
                body = "\n".join(
                    f"native,device={r.device},property={r.property} v={r.value}i {r.timestamp + i}"
                    for r in recs[i : i + 1000]
                )
                await api.write(bucket="plant", org="acme", record=body, write_precision="ms")
    else:
        from mapper_framework.sinks.otel_sink import OtelSink

        sink = OtelSink(f"http://127.0.0.1:{server.port}")
        sink._setup()
        for i in range(0, n, 1000):
            data = sink.metrics_data(recs[i : i + 1000])
            await asyncio.to_thread(sink._exporter.export, data)
    return n / (time.monotonic() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--sinks", default="redis,influxdb2,mysql,otel")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sinks-") as tmp:
        folder = Path(tmp)
        secret = folder / "pw"
        secret.write_text(PASSWORD)
        for kind in args.sinks.split(","):
            receiver: OtlpReceiver | None = None
            if kind == "redis":
                ctx: Any = redis_server(folder / "redis")
            elif kind == "mysql":
                ctx = mariadb(folder / "mysql")
            elif kind == "influxdb2":
                ctx = victoria_metrics(folder / "vm")
            else:
                ctx = None
            server: Any
            if ctx is not None:
                server = ctx.__enter__()
            else:
                receiver = OtlpReceiver()
                await receiver.start()
                server = receiver
            try:
                addr = f"127.0.0.1:{server.port}"
                push = {
                    "redis": {"dbMethod": {"redis": {"redisClientConfig": {"addr": addr}}}},
                    "mysql": {
                        "dbMethod": {
                            "mysql": {"mysqlClientConfig": {"addr": addr, "database": "plant", "userName": USER}}
                        }
                    },
                    "influxdb2": {
                        "dbMethod": {
                            "influxdb2": {
                                "influxdb2ClientConfig": {"url": f"http://{addr}", "org": "acme", "bucket": "plant"},
                                "influxdb2DataConfig": {"measurement": "bench", "fieldKey": "v"},
                            }
                        }
                    },
                    "otel": {"otel": {"endpointURL": f"http://{addr}"}},
                }[kind]
                settings = PushSettings(
                    queue_limit=100_000,
                    batch_size=5000,
                    redis=RedisSettings(password_file=str(secret)),
                    mysql=MysqlSettings(password_file=str(secret)),
                )
                got = await through_mapper(push, settings, args.seconds)
                got["native_s"] = await native(kind, server, 50_000 if kind != "otel" else 20_000)
                rows.append((kind, got))
            finally:
                if ctx is not None:
                    ctx.__exit__(None, None, None)
                if receiver is not None:
                    await receiver.stop()
    print(f"\n{DEVICES} devices x {PROPS} properties at 1 s = {DEVICES * PROPS} points/s offered, {args.seconds} s")
    print(
        f"{'sink':<10} {'points/s':>9} {'delivered':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU %':>6} {'RSS MB':>7}"
        f" {'batches':>7} {'dropped':>7} {'native points/s':>16}"
    )
    for kind, g in rows:
        print(
            f"{kind:<10} {g['points_s']:>9.0f} {100 * g['delivered']:>8.1f}% {g['p50_ms']:>7.0f} {g['p99_ms']:>7.0f}"
            f" {g['cpu_pct']:>6.1f} {g['rss_mb']:>7.0f} {g['batches']:>7.0f} {g['dropped']:>7.0f}"
            f" {g['native_s']:>16.0f}"
        )
    print("latency: from the reading's timestamp to the end of the batch write that stored it (oldest point).")


if __name__ == "__main__":
    asyncio.run(main())
