"""Agent ingest benchmark: twin updates stored per second through ReportDeviceStatus.

N concurrent clients each send ``ReportDeviceStatus`` with 10 twins, one call after
another, for a fixed time, over the agent's Unix socket. Every call is answered
only after its twins are committed to SQLite, so acknowledged == stored. The
same load is then sent to a bare grpc.aio server that parses the request and
answers empty (the limit of the transport on this machine).

    .venv/bin/python bench/dmi_ingest.py --clients 32 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._fleet import write_fleet
from bench._measure import CpuWindow, peak_rss_mb, percentile, wait_for_socket
from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc

TWINS = 10


@dataclass
class Result:
    name: str
    calls: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    cpu_percent: float
    peak_rss_mb: float

    @property
    def twins_per_s(self) -> float:
        return self.calls * TWINS / self.seconds

    @property
    def rpc_per_s(self) -> float:
        return self.calls / self.seconds


def request(device: int, seq: int) -> pb.ReportDeviceStatusRequest:
    ts = str(int(time.time() * 1000))
    return pb.ReportDeviceStatusRequest(
        deviceName=f"dev-{device}",
        deviceNamespace="default",
        reportedDevice=pb.DeviceStatus(
            twins=[
                pb.Twin(
                    propertyName=f"p{i}",
                    reported=pb.TwinProperty(value=str(seq * 10 + i), metadata={"type": "int", "timestamp": ts}),
                    observedDesired=pb.TwinProperty(),
                )
                for i in range(TWINS)
            ]
        ),
    )


async def _load(socket: str, clients: int, devices: int, seconds: float, rate: float, out: list[object]) -> None:
    channels = [grpc.aio.insecure_channel(f"unix:{socket}") for _ in range(4)]
    stubs = [api_pb2_grpc.DeviceManagerServiceStub(c) for c in channels]
    latencies: list[float] = []
    errors = 0
    calls = 0
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        nonlocal errors, calls
        stub = stubs[index % len(stubs)]
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            req = request((index + seq * clients) % devices, seq)
            t0 = time.perf_counter()
            try:
                await stub.ReportDeviceStatus(req, timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            calls += 1

    async def paced() -> None:
        # Open loop: a call every 1/rate s whether or not earlier ones returned; latency counts from the
        # scheduled start, so a stall shows up in the percentiles instead of slowing the load down.
        nonlocal errors, calls
        interval = 1.0 / rate
        start = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()

        async def one(n: int, scheduled: float) -> None:
            nonlocal errors, calls
            try:
                await stubs[n % len(stubs)].ReportDeviceStatus(request(n % devices, n), timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            latencies.append((time.perf_counter() - scheduled) * 1000)
            calls += 1

        n = 0
        while time.monotonic() < deadline:
            scheduled = start + n * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(n, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)

    started = time.monotonic()
    if rate > 0:
        await paced()
    else:
        await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    for c in channels:
        await c.close()
    out.extend([calls, errors, elapsed, latencies])


def _load_process(
    socket: str,
    clients: int,
    devices: int,
    seconds: float,
    rate: float,
    queue: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    out: list[object] = []
    asyncio.run(_load(socket, clients, devices, seconds, rate, out))
    queue.put(out)


def _measure(socket: Path, pid: int, clients: int, devices: int, seconds: float, rate: float) -> tuple[Any, ...]:
    q: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    cpu = CpuWindow(pid)
    cpu.start()
    loader = multiprocessing.Process(target=_load_process, args=(str(socket), clients, devices, seconds, rate, q))
    loader.start()
    calls, errors, elapsed, latencies = q.get()
    loader.join()
    cpu.stop()
    return calls, errors, elapsed, sorted(latencies), cpu.cpu_percent


def run(name: str, server: subprocess.Popen[bytes], socket: Path, args: argparse.Namespace) -> list[Result]:
    """Warm up, then a saturation run (closed loop) and a paced run at the target rate (open loop)."""
    wait_for_socket(socket, server)
    _measure(socket, server.pid, 4, args.devices, 1.0, 0)  # warm-up: first-call costs do not count
    results = []
    for label, clients, rate in (
        (f"{name}, saturated ({args.clients} in flight)", args.clients, 0.0),
        (f"{name}, paced at {args.rate:.0f} RPC/s", 0, args.rate),
    ):
        calls, errors, elapsed, latencies, cpu = _measure(socket, server.pid, clients, args.devices, args.seconds, rate)
        results.append(Result(label, calls, errors, elapsed, latencies, cpu, peak_rss_mb(server.pid)))
    server.terminate()
    server.wait(timeout=10)
    return results


def verify_stored(state_dir: Path) -> int:
    """Count distinct twins in the store: every device's ten properties must be there."""
    import sqlite3

    conn = sqlite3.connect(state_dir / "agent.db")
    (count,) = conn.execute("SELECT COUNT(*) FROM twins WHERE reported_value IS NOT NULL").fetchone()
    conn.close()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (calls in flight)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration per target")
    parser.add_argument("--devices", type=int, default=200, help="devices the reports are spread over")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="paced run: RPC/s offered (1000 = 10,000 twin updates/s)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="km-bench-", dir="/tmp"))
    try:
        crs = work / "crs"
        crs.mkdir()
        write_fleet(crs, args.devices, TWINS, 1000)
        results = []
        sock = work / "dmi.sock"
        print(
            f"agent: {args.clients} clients x ReportDeviceStatus({TWINS} twins) for {args.seconds:.0f}s ...",
            file=sys.stderr,
        )
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mapper_cli.main",
                "agent",
                "--socket",
                str(sock),
                "--state-dir",
                str(work / "state"),
                "--devices",
                str(crs),
                "--log-level",
                "error",
            ]
        )
        results += run("agent", agent, sock, args)
        stored = verify_stored(work / "state")
        echo_sock = work / "echo.sock"
        print("baseline: bare grpc.aio server, same load ...", file=sys.stderr)
        echo = subprocess.Popen([sys.executable, str(Path(__file__).parent / "echo_server.py"), str(echo_sock)])
        results += run("bare grpc.aio", echo, echo_sock, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nDMI ingest: {args.clients} concurrent clients, {TWINS} twins per ReportDeviceStatus, "
        f"{args.devices} devices, {args.seconds:.0f}s, Unix socket"
    )
    header = (
        f"{'target':45} {'RPC/s':>8} {'twins/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU %':>7} "
        f"{'peak RSS MB':>12} {'errors':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:45} {r.rpc_per_s:8.0f} {r.twins_per_s:9.0f} {percentile(r.latencies_ms, 50):8.2f} "
            f"{percentile(r.latencies_ms, 99):8.2f} {r.cpu_percent:7.0f} {r.peak_rss_mb:12.1f} {r.errors:7d}"
        )
    agent_r, bare = results[0], results[2]
    print(
        f"\nsaturated agent / bare: {100 * agent_r.rpc_per_s / bare.rpc_per_s:.0f}% of the bare rate; "
        f"twins in store after the run: {stored} (expected {args.devices * TWINS})"
    )
    print(
        "targets: >= 10,000 twin updates/s stored (saturated), p99 < 20 ms (paced at 10,000 twins/s), "
        ">= 50% of the bare rate (saturated)"
    )
    print("every agent call was answered after its twins were committed: acknowledged == stored")


if __name__ == "__main__":
    main()
