"""Database sinks behind a real mapper: 1,000 devices x 10 properties at 1 s, one `mapper run` process.

The devices are read by the no-I/O driver of bench/_drivers.py (so what is measured is the SDK, not a protocol),
reported to a real agent, and every property is pushed (`pushMethod.dbMethod`) to a real Redis or to
VictoriaMetrics through the InfluxDB v2 write API. Printed per sink, in one run: points/s written (the mapper's own
counter on /metrics) against the 10,000 points/s collected, what the server holds (Redis: points stored), queue
depth and drops in the window, the mapper's CPU and peak RSS; and the baseline, the same mapper and fleet without push
(collection and reporting only), so the difference is the sink work. bench/sinks.py measures the push path alone
and each client's native bulk rate.

    .venv/bin/python bench/sinks_mapper.py [--seconds 20] [--sinks redis,influxdb2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._fleet import ROOT, start_agent, write_fleet
from bench._measure import CpuWindow, peak_rss_mb, wait_for_socket
from tests.brokers import free_port
from tests.db_peers import PASSWORD, redis_server, victoria_metrics

DEVICES, PROPS = 1000, 10


def push_of(kind: str, port: int) -> dict[str, Any] | None:
    if kind == "redis":
        return {"dbMethod": {"redis": {"redisClientConfig": {"addr": f"127.0.0.1:{port}", "db": 0}}}}
    if kind == "influxdb2":
        return {
            "dbMethod": {
                "influxdb2": {
                    "influxdb2ClientConfig": {"url": f"http://127.0.0.1:{port}", "org": "acme", "bucket": "plant"},
                    "influxdb2DataConfig": {"measurement": "bench", "tag": {"site": "bench"}, "fieldKey": "v"},
                }
            }
        }
    return None


def start_mapper(work: Path, http_port: int, push: dict[str, Any]) -> subprocess.Popen[bytes]:
    config = work / "mapper.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "grpc_server": {"socket_path": str(work / "bench.sock")},
                "common": {"name": "bench-mapper", "protocol": "bench", "edgecore_sock": str(work / "dmi.sock"),
                           "http_port": str(http_port)},
                "rest": {"enabled": True},
                "push": push,
            }
        )
    )  # fmt: skip
    argv = [sys.executable, "-m", "mapper_cli.main", "run", "-c", str(config), "--driver",
            "bench._drivers:CounterDriver", "--log-level", "error"]  # fmt: skip
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "BENCH_INFLUX_TOKEN": "bench-token"})


def metrics(port: int) -> dict[str, float]:
    """Sums of the push counters and gauges over every destination, and the reads done."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"(mapper_push_\w+|mapper_property_reads_total)(\{[^}]*\})? ([0-9.e+]+)$", line)
        if m:
            out[m[1]] = out.get(m[1], 0.0) + float(m[3])
    return out


def run(kind: str, seconds: float, stack: ExitStack, base: Path) -> dict[str, Any]:
    work = base / kind
    (work / "crs").mkdir(parents=True)
    server = None
    if kind == "redis":
        server = stack.enter_context(redis_server(work / "redis"))
        settings: dict[str, Any] = {"redis": {"password_env": "BENCH_REDIS_PASSWORD"}}
        os.environ["BENCH_REDIS_PASSWORD"] = PASSWORD
    elif kind == "influxdb2":
        server = stack.enter_context(victoria_metrics(work / "vm"))
        settings = {"influxdb2": {"token_env": "BENCH_INFLUX_TOKEN"}}
    else:
        settings = {}
    # 10 s of this fleet's points (the default bound, 10,000, is one second of it: start-up alone overflows it).
    settings["queue_limit"] = 100_000
    write_fleet(work / "crs", DEVICES, PROPS, 1000)
    push = push_of(kind, server.port) if server is not None else None
    if push is not None:
        fleet = work / "crs" / "fleet.yaml"
        docs = list(yaml.safe_load_all(fleet.read_text()))
        for doc in docs:
            if doc["kind"] == "Device":
                for prop in doc["spec"]["properties"]:
                    prop["pushMethod"] = push
        fleet.write_text(yaml.safe_dump_all(docs))
    agent = start_agent(work, work / "crs")
    mapper = None
    try:
        wait_for_socket(work / "dmi.sock", agent)
        http_port = free_port()
        mapper = start_mapper(work, http_port, settings)
        deadline = time.monotonic() + 60
        while True:
            try:
                if metrics(http_port).get("mapper_property_reads_total", 0) >= DEVICES * PROPS * 3:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or mapper.poll() is not None:
                raise SystemExit(f"{kind}: the mapper did not come up")
            time.sleep(0.5)
        cpu = CpuWindow(mapper.pid)
        m0, t0 = metrics(http_port), time.monotonic()
        cpu.start()
        time.sleep(seconds)
        cpu.stop()
        m1, elapsed = metrics(http_port), time.monotonic() - t0
        out: dict[str, Any] = {
            "reads_s": (m1.get("mapper_property_reads_total", 0) - m0.get("mapper_property_reads_total", 0)) / elapsed,
            "points_s": (m1.get("mapper_push_points_total", 0) - m0.get("mapper_push_points_total", 0)) / elapsed,
            "queue": m1.get("mapper_push_queue_depth", 0),
            "dropped": m1.get("mapper_push_dropped_total", 0) - m0.get("mapper_push_dropped_total", 0),
            "dropped_start": m0.get("mapper_push_dropped_total", 0),
            "retries": m1.get("mapper_push_retries_total", 0),
            "cpu": cpu.cpu_percent,
            "rss": peak_rss_mb(mapper.pid),
        }
        if kind == "redis":
            import redis

            r = redis.Redis(port=server.port, password=PASSWORD)  # type: ignore[union-attr]
            keys = list(r.scan_iter(count=5000))
            pipe = r.pipeline()
            for key in keys:
                pipe.zcard(key)
            out["stored"] = f"{sum(pipe.execute()):,} points in {len(keys):,} sorted sets"
        return out
    finally:
        for proc in (mapper, agent):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sinks", default="redis,influxdb2")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="km-sinks-mapper-", dir="/tmp"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in ["none", *args.sinks.split(",")]:
            with ExitStack() as stack:
                print(f"{kind} ...", file=sys.stderr)
                results[kind] = run(kind, args.seconds, stack, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    base_cpu = results["none"]["cpu"]
    print(f"\nsinks behind one mapper: {DEVICES} devices x {PROPS} properties at 1 s, {args.seconds:.0f} s windows")
    head = ("reads/s", "points/s", "queue", "dropped", "CPU %", "sink CPU %", "RSS MB")
    widths = (8, 9, 6, 8, 6, 10, 7)
    print(f"{'':14} " + " ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for kind, r in results.items():
        label = "no push" if kind == "none" else kind
        sink_cpu = "-" if kind == "none" else f"{r['cpu'] - base_cpu:.0f}"
        print(f"{label:14} {r['reads_s']:8.0f} {r['points_s']:9.0f} {r['queue']:6.0f} {r['dropped']:8.0f}"
              f" {r['cpu']:6.0f} {sink_cpu:>10} {r['rss']:7.1f}")  # fmt: skip
    for kind, r in results.items():
        if "stored" in r:
            print(f"{kind} holds {r['stored']}")
        if r.get("dropped_start"):
            print(f"{kind}: {r['dropped_start']:.0f} points dropped during start-up, before the window")
    print("target: >= 10,000 points/s into Redis and InfluxDB, the sink work under 50% of one core (sink CPU %)")


if __name__ == "__main__":
    main()
