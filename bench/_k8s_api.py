"""The simulated Kubernetes API for bench/cloud_sync.py, as its own process (so the agent's CPU is its own).

    python bench/_k8s_api.py PORT FLEET_YAML KUBECONFIG OUT.json

Serves the fleet's objects; SIGUSR1 opens the window, SIGUSR2 closes it and writes OUT.json, worked out from
the simulator's write log (each write stamped when its request arrived) after the window, so measuring costs
nothing while it runs:
- ``writes``, ``refused``, ``missing``: status writes in the window (landed, refused, patches of a DeviceStatus
  not there yet, which the agent then creates);
- ``staleness``: for each write, its arrival minus the newest reported value it carries (the load generator
  sets each value to its send time in ms);
- ``view_p50_ms``, ``view_p99_ms``: the staleness of the cluster's view over time. Between two writes of a
  device its DeviceStatus holds what the earlier one carried, growing older by the second; these are the
  percentiles of that age over every instant of the window and every device (exact, not sampled).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.k8s_sim import KubeApiSimulator, WriteRecord


def newest_value_ms(body: Any) -> int | None:
    twins = ((body if isinstance(body, dict) else {}).get("status") or {}).get("twins") or []
    values = [int(t["reported"]["value"]) for t in twins if str(t.get("reported", {}).get("value", "")).isdigit()]
    return max(values) if values else None


def newest_received_ms(body: Any) -> tuple[int, int] | None:
    """(value, agent receipt stamp) of the twin holding the newest value: how long the report took to the agent."""
    twins = ((body if isinstance(body, dict) else {}).get("status") or {}).get("twins") or []
    pairs = []
    for t in twins:
        reported = t.get("reported") or {}
        value, stamp = str(reported.get("value", "")), str((reported.get("metadata") or {}).get("timestamp", ""))
        if value.isdigit() and stamp.isdigit():
            pairs.append((int(value), int(stamp)))
    return max(pairs) if pairs else None


def status_name(record: WriteRecord) -> str:
    meta = record.body.get("metadata") if isinstance(record.body, dict) else None
    if record.verb == "create" and isinstance(meta, dict):
        return str(meta.get("name", ""))
    return record.path.split("/devicestatuses/", 1)[-1].split("/", 1)[0]


def view_quantiles(writes: list[WriteRecord], t0: float, t1: float, qs: tuple[float, ...]) -> list[float]:
    """Quantiles (ms) of the view's age over [t0, t1] x devices, from every landed status write (wall clock s)."""
    events: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in writes:
        if "devicestatuses" not in record.path or record.code >= 300 or record.code == 0:
            continue
        newest = newest_value_ms(record.body)
        if newest is not None:
            events[status_name(record)].append((record.received, newest / 1000))
    # Each segment of constant view: the age runs from lo to lo + length, one second per second.
    segments: list[tuple[float, float]] = []
    for points in events.values():
        points.sort()
        view: float | None = None
        start = t0
        for at, value in points:
            if at <= t0:
                view = value
                continue
            if at >= t1:
                break
            if view is not None:
                segments.append((start - view, at - start))
            view, start = value, at
        if view is not None:
            segments.append((start - view, t1 - start))
    total = sum(length for _, length in segments)
    out = []
    for q in qs:
        lo = min(a for a, _ in segments)
        hi = max(a + length for a, length in segments)
        for _ in range(60):  # bisect the age whose share of time at or below it is q
            mid = (lo + hi) / 2
            below = sum(min(max(mid - a, 0.0), length) for a, length in segments)
            lo, hi = (mid, hi) if below < q * total else (lo, mid)
        out.append(hi * 1000)
    return out


async def main(port: int, fleet: Path, kubeconfig: Path, out: Path) -> None:
    sim = KubeApiSimulator(port=port, history_size=100_000)
    for doc in yaml.safe_load_all(fleet.read_text()):
        sim.create(doc)
    await sim.start()
    sim.kubeconfig(kubeconfig)
    stop = asyncio.Event()
    window = {"t0": 0.0, "first": 0}

    def open_window() -> None:
        window.update(t0=time.time(), first=len(sim.writes))

    def close_window() -> None:
        t0, t1 = float(window["t0"]), time.time()
        inside = [r for r in sim.writes[int(window["first"]) :] if "devicestatuses" in r.path and r.received >= t0]
        landed = [r for r in inside if 0 < r.code < 300]
        staleness, ingest = [], []
        for record in landed:
            newest = newest_value_ms(record.body)
            if newest is not None:
                staleness.append(record.received * 1000 - newest)
            pair = newest_received_ms(record.body)
            if pair is not None:
                ingest.append(pair[1] - pair[0])
        p50, p99 = view_quantiles(sim.writes, t0, t1, (0.50, 0.99))
        result = {
            "seconds": t1 - t0,
            "writes": len(landed),
            "refused": sum(1 for r in inside if r.code >= 300 and r.code != 404),
            "missing": sum(1 for r in inside if r.code == 404),
            "staleness": staleness,
            "ingest": ingest,
            "view_p50_ms": p50,
            "view_p99_ms": p99,
        }
        out.write_text(json.dumps(result))

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, open_window)
    loop.add_signal_handler(signal.SIGUSR2, close_window)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await sim.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
