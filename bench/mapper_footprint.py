"""Mapper footprint: idle RSS with 10 devices, and time from process start to its first report at the agent.

Baselines printed in the same run: a bare Python process with grpc.aio (the floor for any Python mapper), and
the same with every library the SDK loads.

    .venv/bin/python bench/mapper_footprint.py
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._fleet import ROOT, start_agent, start_mapper, write_fleet
from bench._measure import wait_for_socket

SERVE = (
    "async def main():\n"
    "    s = grpc.aio.server()\n"
    "    s.add_insecure_port('unix:{sock}')\n"
    "    await s.start()\n"
    "    await asyncio.sleep(60)\n"
    "asyncio.run(main())"
)
FLOOR = "import asyncio, grpc\n" + SERVE
LIBS = "import asyncio, grpc, aiohttp, yaml, paho.mqtt.client, google.protobuf\n" + SERVE


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def idle_rss(code: str, sock: Path) -> float:
    proc = subprocess.Popen([sys.executable, "-c", code.format(sock=sock)], cwd=ROOT)
    try:
        wait_for_socket(sock, proc)
        time.sleep(1.0)
        return rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def first_report_at(db: Path, since_ms: int) -> int | None:
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT MIN(reported_ms) FROM twins WHERE reported_ms >= ?", (since_ms,)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return None if row is None or row[0] is None else int(row[0])


def measure(work: Path, runs: int, rest: bool) -> tuple[float, float]:
    """Median idle RSS and median time from process start to the first report at the agent."""
    starts: list[float] = []
    rss: list[float] = []
    for _ in range(runs):
        t0 = time.time()
        mapper = start_mapper(work, rest=rest)
        try:
            deadline = time.monotonic() + 30
            first = None
            while first is None and time.monotonic() < deadline:
                first = first_report_at(work / "state" / "agent.db", int(t0 * 1000))
                time.sleep(0.01)
            if first is None:
                raise SystemExit("no report within 30 s")
            starts.append(first / 1000 - t0)
            time.sleep(5)  # idle: collecting and reporting at 1 s
            rss.append(rss_mb(mapper.pid))
        finally:
            mapper.terminate()
            mapper.wait(timeout=15)
    return sorted(rss)[len(rss) // 2], sorted(starts)[len(starts) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--properties", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="mapper starts to time (the median is printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="km-foot-", dir="/tmp"))
    agent = None
    try:
        crs = work / "crs"
        crs.mkdir()
        write_fleet(crs, args.devices, args.properties, 1000)
        agent = start_agent(work, crs)
        wait_for_socket(work / "dmi.sock", agent)
        results = {rest: measure(work, args.runs, rest) for rest in (True, False)}
        floor = idle_rss(FLOOR, work / "floor.sock")
        libs = idle_rss(LIBS, work / "libs.sock")
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmapper footprint: {args.devices} devices x {args.properties} properties at 1 s, {args.runs} starts each")
    print(f"{'':48} {'idle RSS MB':>12} {'start -> first report s':>24}")
    for rest, (rss, start) in results.items():
        label = "mapper, REST API on (default)" if rest else "mapper, REST API off"
        print(f"{label:48} {rss:12.1f} {start:24.2f}")
    print(f"{'baseline: bare python + grpc.aio server':48} {floor:12.1f}")
    print(f"{'baseline: + aiohttp, PyYAML, paho-mqtt':48} {libs:12.1f}")
    print("targets: RSS <= 45 MB, first report <= 1.5 s")


if __name__ == "__main__":
    main()
