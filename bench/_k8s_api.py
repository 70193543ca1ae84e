"""The simulated Kubernetes API for bench/cloud_sync.py, as its own process (so the agent's CPU is its own).

    python bench/_k8s_api.py PORT FLEET_YAML KUBECONFIG OUT.json

Serves the fleet's objects; SIGUSR1 opens the window (counters reset), SIGUSR2 closes it and writes OUT.json:
status writes, and for each the staleness of what it carries (receipt here minus the newest reported value,
which the load generator sets to its send time in ms).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.k8s_sim import KubeApiSimulator


async def main(port: int, fleet: Path, kubeconfig: Path, out: Path) -> None:
    sim = KubeApiSimulator(port=port, history_size=100_000)
    for doc in yaml.safe_load_all(fleet.read_text()):
        sim.create(doc)
    await sim.start()
    sim.kubeconfig(kubeconfig)
    stop = asyncio.Event()
    window = {"open": False, "t0": 0.0, "writes": 0, "refused": 0, "missing": 0, "staleness": [], "view_age": []}
    seen = 0

    def open_window() -> None:
        nonlocal seen
        seen = len(sim.writes)
        window.update(open=True, t0=time.monotonic(), writes=0, refused=0, missing=0, staleness=[], view_age=[])

    def close_window() -> None:
        window["open"] = False
        seconds = time.monotonic() - float(window["t0"])  # type: ignore[arg-type]
        out.write_text(json.dumps({**window, "seconds": seconds}))

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, open_window)
    loop.add_signal_handler(signal.SIGUSR2, close_window)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    samples = 0
    while not stop.is_set():
        # Read the write log often: "now" is each write's receipt time within 20 ms.
        await asyncio.sleep(0.02)
        now_ms = time.time() * 1000
        records, seen = sim.writes[seen:], len(sim.writes)
        if not window["open"]:
            continue
        samples += 1
        if samples % 10 == 0:
            # What a kubectl user sees: per device, the age of the newest value its DeviceStatus holds now.
            for doc in sim.list("devicestatuses"):
                twins = (doc.get("status") or {}).get("twins") or []
                values = [int(t["reported"]["value"]) for t in twins if str(t["reported"]["value"]).isdigit()]
                if values:
                    window["view_age"].append(now_ms - max(values))  # type: ignore[union-attr]
        for record in records:
            if "devicestatuses" not in record.path:
                continue
            if record.code == 404:
                window["missing"] += 1  # type: ignore[operator]  # a first write: the agent creates it next
                continue
            if record.code >= 300:
                window["refused"] += 1  # type: ignore[operator]
                continue
            window["writes"] += 1  # type: ignore[operator]
            twins = ((record.body or {}).get("status") or {}).get("twins") or []
            values = [int(t["reported"]["value"]) for t in twins if str(t["reported"].get("value", "")).isdigit()]
            if values:
                window["staleness"].append(now_ms - max(values))  # type: ignore[union-attr]
    await sim.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
