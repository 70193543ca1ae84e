"""Cloud sync: 1,000 devices x 10 twins at 1 s through the agent into the (simulated) Kubernetes API.

Real processes: the Kubernetes API simulator (tests/k8s_sim.py, via bench/_k8s_api.py) holding the Devices of
node "edge", `mapper agent --kubeconfig ... --node edge`, and a load generator (this process) sending each
device's ReportDeviceStatus with 10 twins once a second, spread over the second, each value its send time.

Printed per write budget: status writes/s (against the budget), writes refused, the age of the values each write
carries (receipt at the API minus the newest reported value in it), and the part of that age before the agent
took the report (from the twin's receipt stamp: time queued in an overloaded agent, not the writer's), the
staleness of the cluster's view (at every instant of the window, for every DeviceStatus: that instant minus the
newest value it holds; worked out exactly from the API's write log after the window), agent CPU % and peak RSS.
The baseline is what the load offers: one update per device per second, i.e. the write rate without per-device
coalescing.

    .venv/bin/python bench/cloud_sync.py --devices 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._fleet import write_fleet
from bench._measure import CpuWindow, peak_rss_mb, percentile, wait_for_socket
from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc
from tests.modbus_peers import free_port

ROOT = Path(__file__).resolve().parent.parent
PY = [sys.executable]
TWINS = 10


def report(device: int) -> pb.ReportDeviceStatusRequest:
    now = str(int(time.time() * 1000))
    return pb.ReportDeviceStatusRequest(
        deviceName=f"dev-{device}",
        deviceNamespace="default",
        reportedDevice=pb.DeviceStatus(
            twins=[
                pb.Twin(
                    propertyName=f"p{i}",
                    reported=pb.TwinProperty(value=now, metadata={"type": "int", "timestamp": now}),
                    observedDesired=pb.TwinProperty(),
                )
                for i in range(TWINS)
            ]
        ),
    )


async def load(socket: Path, devices: int, seconds: float) -> int:
    """Each device once a second, spread over the second; returns the reports sent."""
    channel = grpc.aio.insecure_channel(f"unix:{socket}")
    stub = api_pb2_grpc.DeviceManagerServiceStub(channel)
    sent = 0
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()

    async def one(d: int) -> None:
        nonlocal sent
        try:
            await stub.ReportDeviceStatus(report(d), timeout=10)
            sent += 1
        except grpc.aio.AioRpcError:
            pass

    n = 0
    while time.monotonic() - start < seconds:
        due = start + n / devices
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(n % devices))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    if pending:
        await asyncio.gather(*pending)
    await channel.close()
    return sent


def run(budget: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    run_dir = work / budget.replace(":", "-")
    run_dir.mkdir()
    fleet = run_dir / "fleet"
    fleet.mkdir()
    write_fleet(fleet, args.devices, TWINS, 1000)
    kubeconfig, out = run_dir / "kubeconfig", run_dir / "api.json"
    api = subprocess.Popen([*PY, str(ROOT / "bench/_k8s_api.py"), str(free_port()), str(fleet / "fleet.yaml"),
                            str(kubeconfig), str(out)])  # fmt: skip
    agent = None
    try:
        deadline = time.monotonic() + 20
        while not kubeconfig.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        sock = run_dir / "dmi.sock"
        agent = subprocess.Popen(
            [*PY, "-m", "mapper_cli.main", "agent", "--kubeconfig", str(kubeconfig), "--node", "edge",
             "--socket", str(sock), "--state-dir", str(run_dir / "state"), "--status-budget", budget,
             "--log-level", "warning"],
            cwd=ROOT,
        )  # fmt: skip
        wait_for_socket(sock, agent, timeout=60)
        asyncio.run(load(sock, args.devices, args.warmup))
        cpu = CpuWindow(agent.pid)
        api.send_signal(signal.SIGUSR1)
        cpu.start()
        sent = asyncio.run(load(sock, args.devices, args.seconds))
        api.send_signal(signal.SIGUSR2)
        cpu.stop()
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        data = json.loads(out.read_text())
        stale = sorted(data["staleness"])
        ingest = sorted(data["ingest"]) or [0.0]
        return {
            "offered": sent / args.seconds,
            "writes": data["writes"] / data["seconds"],
            "refused": data["refused"],
            "missing": data["missing"],
            "p50": percentile(stale, 50) / 1000,
            "p99": percentile(stale, 99) / 1000,
            "i50": percentile(ingest, 50) / 1000,
            "i99": percentile(ingest, 99) / 1000,
            "v50": data["view_p50_ms"] / 1000,
            "v99": data["view_p99_ms"] / 1000,
            "cpu": cpu.cpu_percent,
            "rss": peak_rss_mb(agent.pid),
        }
    finally:
        for proc in (agent, api):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--budgets", default="600:1000,100:100", help="status write budgets QPS:BURST, one run each")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="km-cloud-", dir="/tmp"))
    results = {}
    try:
        for budget in args.budgets.split(","):
            print(f"budget {budget} ...", file=sys.stderr)
            results[budget] = run(budget, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ncloud sync: {args.devices} devices x {TWINS} twins at 1 s -> agent -> simulated Kubernetes API,"
          f" {args.seconds:.0f} s windows")  # fmt: skip
    cols = list(results)
    print(f"{'write budget (QPS:burst)':40}" + "".join(f"{c:>14}" for c in cols))

    def row(label: str, fmt: str, key: str) -> None:
        print(f"{label:40}" + "".join(f"{format(results[c][key], fmt):>14}" for c in cols))

    row("device updates/s offered (no coalescing)", ".0f", "offered")
    row("status writes/s to the API", ".0f", "writes")
    row("writes refused", ".0f", "refused")
    row("patches of a missing DeviceStatus (created)", ".0f", "missing")
    row("age of the values a write carries p50 s", ".2f", "p50")
    row("age of the values a write carries p99 s", ".2f", "p99")
    row("  of which report -> agent receipt p50 s", ".2f", "i50")
    row("  of which report -> agent receipt p99 s", ".2f", "i99")
    row("staleness of the cluster's view p50 s", ".2f", "v50")
    row("staleness of the cluster's view p99 s", ".2f", "v99")
    row("agent CPU % of one core", ".0f", "cpu")
    row("agent peak RSS MB", ".1f", "rss")
    print("target: writes within the budget; staleness p99 <= 2 s at the default budget (600:1000)")


if __name__ == "__main__":
    main()
