"""The report path: devices x properties on a no-I/O driver, through one mapper process into the agent.

Scheduled reads/s = devices x properties / cycle. It prints reads/s achieved (twin values reaching the agent's
store per second, counted from the store), report latency p50/p99 (read time stamped by the mapper -> receive
time at the agent), the CPU % and peak RSS of the mapper and of the agent, in one run.

    .venv/bin/python bench/report_path.py --devices 1000 --properties 10 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._fleet import start_agent, start_mapper, write_fleet
from bench._measure import CpuWindow, peak_rss_mb, percentile, wait_for_socket


def snapshot(db: Path) -> dict[tuple[str, str], tuple[str, int, int]]:
    """(device, property) -> (value, mapper read ms, agent receive ms)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT device, property, reported_value, reported_meta, reported_ms FROM twins").fetchall()
    finally:
        conn.close()
    out = {}
    for device, prop, value, meta, received in rows:
        stamp = int(json.loads(meta or "{}").get("timestamp") or 0)
        out[(device, prop)] = (value, stamp, received or 0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--properties", type=int, default=10)
    parser.add_argument("--cycle-ms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="km-path-", dir="/tmp"))
    agent = mapper = None
    try:
        crs = work / "crs"
        crs.mkdir()
        write_fleet(crs, args.devices, args.properties, args.cycle_ms)
        agent = start_agent(work, crs)
        wait_for_socket(work / "dmi.sock", agent)
        mapper = start_mapper(work)
        db = work / "state" / "agent.db"
        total = args.devices * args.properties
        deadline = time.monotonic() + 60
        print(f"waiting for {total} twins to appear ...", file=sys.stderr)
        while time.monotonic() < deadline:
            if db.exists() and len(snapshot(db)) >= total:
                break
            if mapper.poll() is not None:
                raise SystemExit("the mapper exited")
            time.sleep(0.5)
        time.sleep(2 * args.cycle_ms / 1000)  # steady state
        cpu_m, cpu_a = CpuWindow(mapper.pid), CpuWindow(agent.pid)
        cpu_m.start()
        cpu_a.start()
        before = snapshot(db)
        latencies: list[float] = []
        updates = 0
        t0 = time.monotonic()
        last = before
        while time.monotonic() - t0 < args.seconds:
            time.sleep(0.5)
            now = snapshot(db)
            for key, (value, stamp, received) in now.items():
                prev = last.get(key)
                if prev is None or prev[0] != value:
                    updates += 1
                    if stamp and received:
                        latencies.append(received - stamp)
            last = now
        elapsed = time.monotonic() - t0
        cpu_m.stop()
        cpu_a.stop()
        latencies.sort()
        scheduled = total * 1000 / args.cycle_ms
        # Each snapshot sees at most one change per twin per half second: count values, not sampled changes.
        achieved = sum(int(now[k][0]) - int(before[k][0]) for k in now if k in before) / elapsed
        print(
            f"\nreport path: {args.devices} devices x {args.properties} properties at {args.cycle_ms} ms, "
            f"one mapper process -> agent, {elapsed:.0f}s"
        )
        print(f"{'':28} {'value':>12}")
        print(f"{'reads/s scheduled':28} {scheduled:12.0f}")
        print(f"{'reads/s achieved':28} {achieved:12.0f}  ({100 * achieved / scheduled:.1f}% of scheduled)")
        print(f"{'twin changes seen at agent':28} {updates:12d}  (sampled every 0.5 s)")
        print(f"{'report latency p50 ms':28} {percentile(latencies, 50):12.0f}  (mapper read -> agent commit)")
        print(f"{'report latency p99 ms':28} {percentile(latencies, 99):12.0f}")
        print(f"{'mapper CPU %':28} {cpu_m.cpu_percent:12.0f}")
        print(f"{'mapper peak RSS MB':28} {peak_rss_mb(mapper.pid):12.1f}")
        print(f"{'agent CPU %':28} {cpu_a.cpu_percent:12.0f}")
        print(f"{'agent peak RSS MB':28} {peak_rss_mb(agent.pid):12.1f}")
    finally:
        for proc in (mapper, agent):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
