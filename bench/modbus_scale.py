"""Modbus at scale: N devices x P holding-register properties at one cycle, on ONE mapper process.

The slaves are spread over a few `mapper simulate modbus` processes on localhost (one port each, many slave
IDs per port). The mapper reports to a recording DMI server (bench/_dmi_recorder.py) that counts every read by
its time stamp. Runs, side by side:

- coalesced: the shipped mapper as configured by default (neighbouring registers read in one request);
- per-property: the same mapper with `coalesce: false`, one request per property, as the upstream Go mapper does;
- coalesced@10000 and per-property@10000: the same two, reading every cycle but reporting every 10 s. Each
  report is one DMI call per device (~0.3 ms of CPU in grpc.aio), so reporting 1,000 devices every second costs
  more than the Modbus reads themselves and hides what coalescing saves; and real edgecore admits 1 call/s
  (burst 100), so a 1,000-device node reports far less often than it reads anyway. These runs count reads
  with the mapper's own counters (the recorder sees one value per property per report);
- bare pymodbus: plain async clients, one per simulator port, reading 10 registers per request as fast as one
  connection allows: the limit of the transport and simulators, and the CPU a request costs without a mapper;
- bare@N: the same clients paced at N requests/s in all, spread evenly (by default N is one request per device
  and cycle, the coalesced mapper's request rate): the floor of that schedule's CPU. A paced request costs
  more than an unpaced one (each wakes an idle process on both ends), and this floor bounds what any coalescing
  mapper can reach against the per-property mode.

Printed: property reads/s achieved vs scheduled, share of scheduled reads late by more than one cycle (or never
made), mapper CPU %, mapper
peak RSS, reads per CPU-second, report latency, and the simulators' CPU.

    .venv/bin/python bench/modbus_scale.py --devices 1000 --properties 10 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._measure import CpuWindow, peak_rss_mb, wait_for_socket
from tests.modbus_peers import free_port

ROOT = Path(__file__).resolve().parent.parent
API = "devices.kubeedge.io/v1beta1"
PY = [sys.executable]


def fleet(
    devices: int, properties: int, cycle_ms: int, ports: list[int], coalesce: bool, report_ms: int | None = None
) -> list[list[dict[str, Any]]]:
    """Per simulator port: the model and its devices (slave IDs 1.. on that port)."""
    model = {
        "apiVersion": API,
        "kind": "DeviceModel",
        "metadata": {"name": "meter-model", "namespace": "default"},
        "spec": {
            "protocol": "modbus",
            "properties": [{"name": f"p{i}", "type": "INT", "accessMode": "ReadOnly"} for i in range(properties)],
        },
    }
    per_port = math.ceil(devices / len(ports))
    out: list[list[dict[str, Any]]] = [[model] for _ in ports]
    for d in range(devices):
        k, slave = divmod(d, per_port)
        config: dict[str, Any] = {"ip": "127.0.0.1", "port": ports[k], "slaveID": slave + 1}
        if not coalesce:
            config["coalesce"] = False
        out[k].append(
            {
                "apiVersion": API,
                "kind": "Device",
                "metadata": {"name": f"meter-{d}", "namespace": "default"},
                "spec": {
                    "deviceModelRef": {"name": "meter-model"},
                    "nodeName": "edge",
                    "protocol": {"protocolName": "modbus", "configData": config},
                    "properties": [
                        {
                            "name": f"p{i}",
                            "collectCycle": cycle_ms,
                            "reportCycle": report_ms or cycle_ms,
                            "reportToCloud": True,
                            "visitors": {
                                "protocolName": "modbus",
                                "configData": {"register": "HoldingRegister", "offset": i, "dataType": "int16"},
                            },
                        }
                        for i in range(properties)
                    ],
                },
            }
        )
    return out


def write(folder: Path, groups: list[list[dict[str, Any]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, docs in enumerate(groups):
        (folder / f"port-{k}.yaml").write_text(yaml.safe_dump_all(docs))


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scrape(port: int) -> tuple[int, int]:
    """The mapper's own counters: successful property reads; reads failed or lost to overrun rounds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    reads = missed = 0
    for line in text.splitlines():
        if line.startswith("mapper_property_reads_total{"):
            reads += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith(("mapper_property_reads_missed_total{", "mapper_property_read_errors_total{")):
            missed += int(float(line.rsplit(" ", 1)[1]))
    return reads, missed


def run_mapper(work: Path, name: str, groups: list[list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    crs = work / f"crs-{name}"
    http_port = free_port()
    write(crs, groups)
    sock = work / f"dmi-{name}.sock"
    out = work / f"{name}.json"
    recorder = mapper = None
    try:
        recorder = subprocess.Popen(
            [*PY, str(ROOT / "bench/_dmi_recorder.py"), str(sock), str(crs), str(out), str(args.cycle_ms)]
        )
        wait_for_socket(sock, recorder)
        config = work / f"mapper-{name}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "grpc_server": {"socket_path": str(work / f"modbus-{name}.sock")},
                    "common": {
                        "name": "modbus-mapper",
                        "protocol": "modbus",
                        "edgecore_sock": str(sock),
                        "http_port": str(http_port),
                    },
                }
            )
        )
        mapper = subprocess.Popen(
            [*PY, "-m", "mapper_cli.main", "run", "modbus", "-c", str(config), "--log-level", "error"], cwd=ROOT
        )
        time.sleep(args.warmup)
        if mapper.poll() is not None:
            raise SystemExit(f"the {name} mapper exited with {mapper.returncode}")
        cpu = CpuWindow(mapper.pid)
        # Scraping 10,000 series costs the mapper memory: only the runs that need its counters are scraped.
        counted = report_ms(name, args) != args.cycle_ms
        reads0, missed0 = scrape(http_port) if counted else (0, 0)
        recorder.send_signal(signal.SIGUSR1)
        cpu.start()
        time.sleep(args.seconds)
        recorder.send_signal(signal.SIGUSR2)
        cpu.stop()
        reads1, missed1 = scrape(http_port) if counted else (0, 0)
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        result: dict[str, Any] = json.loads(out.read_text())
        result["cpu_percent"] = cpu.cpu_percent
        if counted:
            # The recorder sees only the latest value per report cycle: count reads with the mapper's own
            # counters instead (successful reads, and reads skipped because their round overran a cycle).
            # The scrapes bracket the window, so the CPU of the two scrapes falls outside it.
            result["reads"] = reads1 - reads0
            result["missed"] = missed1 - missed0
            result["on_time"] = None
            result.pop("latency_p50_ms", None)
        result["rss_mb"] = peak_rss_mb(mapper.pid)
        return result
    finally:
        stop(mapper)
        stop(recorder)


def wait_for_ports(ports: list[int], sims: list[subprocess.Popen[bytes]], timeout_s: float = 60.0) -> None:
    """Until every simulator accepts connections (1,000 devices take a few seconds to load)."""
    deadline = time.monotonic() + timeout_s
    for port, sim in zip(ports, sims, strict=True):
        while True:
            if sim.poll() is not None:
                raise SystemExit(f"the simulator on port {port} exited at start ({sim.returncode})")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the simulator on port {port} did not listen within {timeout_s:.0f} s") from None
                time.sleep(0.1)


def report_ms(mode: str, args: argparse.Namespace) -> int:
    """``coalesced@10000`` reports every 10 s while reading every cycle; a bare mode name reports every cycle."""
    _, _, tail = mode.partition("@")
    return int(tail) if tail else int(args.cycle_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--properties", type=int, default=10)
    parser.add_argument("--cycle-ms", type=int, default=1000)
    parser.add_argument("--simulators", type=int, default=5, help="simulator processes (ports); <= 247 slaves each")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per run")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds from mapper start to the window")
    parser.add_argument(
        "--modes",
        default="coalesced,per-property,coalesced@10000,per-property@10000,bare,bare@paced",
        help="runs, in order; MODE@MS reports every MS ms instead of every cycle; bare@N paces the bare clients at"
        " N requests/s in all (bare@paced: one request per device and cycle, what the coalesced mapper sends)",
    )
    args = parser.parse_args()
    if math.ceil(args.devices / args.simulators) > 247:
        raise SystemExit("more than 247 slaves per simulator port: raise --simulators")
    work = Path(tempfile.mkdtemp(prefix="km-modbus-", dir="/tmp"))
    ports = [free_port() for _ in range(args.simulators)]
    sims: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, Any]] = {}
    try:
        sim_crs = work / "sim"
        write(sim_crs, fleet(args.devices, args.properties, args.cycle_ms, ports, True))
        static = [x for i in range(args.properties) for x in ("-m", f"p{i}=static")]
        for k in range(args.simulators):
            sims.append(
                subprocess.Popen(
                    [
                        *PY,
                        "-m",
                        "mapper_cli.main",
                        "simulate",
                        "modbus",
                        "-f",
                        str(sim_crs / f"port-{k}.yaml"),
                        *static,
                        "--log-level",
                        "error",
                    ],
                    cwd=ROOT,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_for_ports(ports, sims)
        print(f"{args.simulators} simulators up on ports {ports}", file=sys.stderr)
        paced_mode = f"bare@{args.devices * 1000 // args.cycle_ms}"
        modes = [paced_mode if m == "bare@paced" else m for m in args.modes.split(",")]
        for mode in modes:
            sim_cpu = [CpuWindow(s.pid) for s in sims]
            for c in sim_cpu:
                c.start()
            if mode.partition("@")[0] == "bare":
                per_port = math.ceil(args.devices / args.simulators)
                paced = mode.partition("@")[2]
                raw = subprocess.run(
                    [
                        *PY,
                        str(ROOT / "bench/_bare_modbus.py"),
                        str(args.seconds),
                        str(args.properties),
                        str(per_port),
                        *map(str, ports),
                        *(["--rate", paced] if paced else []),
                    ],
                    check=True,
                    stdout=subprocess.PIPE,
                    text=True,
                ).stdout
                bare = json.loads(raw)
                results[mode] = {
                    "seconds": bare["seconds"],
                    "reads": bare["requests"] * args.properties,
                    "late": None,
                    "cpu_percent": 100 * bare["cpu_s"] / bare["seconds"],
                    "rss_mb": None,
                    "requests": bare["requests"],
                }
            else:
                coalesce = mode.partition("@")[0] == "coalesced"
                groups = fleet(args.devices, args.properties, args.cycle_ms, ports, coalesce, report_ms(mode, args))
                print(f"running the {mode} mapper ...", file=sys.stderr)
                results[mode] = run_mapper(work, mode, groups, args)
            results[mode]["sim_cpu_percent"] = sum(c.stop() for c in sim_cpu)
        scheduled = args.devices * args.properties * 1000 / args.cycle_ms
        print(
            f"\nmodbus scale: {args.devices} devices x {args.properties} holding registers at {args.cycle_ms} ms,"
            f" one mapper process, {args.simulators} simulator processes, {args.seconds:.0f} s windows"
        )
        head = f"{'':34}" + "".join(f"{m:>20}" for m in modes)
        print(head)

        def row(label: str, fn: Any) -> None:
            print(f"{label:34}" + "".join(f"{fn(results[m]):>20}" for m in modes))

        def rate(r: dict[str, Any]) -> float:
            return float(r["reads"]) / float(r["seconds"])

        row("property reads/s scheduled", lambda r: f"{scheduled:.0f}")
        row("property reads/s achieved", lambda r: f"{rate(r):.0f}")
        row("  % of scheduled", lambda r: f"{100 * rate(r) / scheduled:.1f}%")

        def late(r: dict[str, Any]) -> str:
            # Scheduled reads that did not arrive within one cycle of being due: late or never made.
            due = args.devices * args.properties * float(r["seconds"]) * 1000 / args.cycle_ms
            if r.get("missed") is not None:  # the mapper's count: reads failed or lost to overrun rounds
                return f"{100 * r['missed'] / due:.2f}%*"
            if r["late"] is None:
                return "-"
            return f"{100 * max(0.0, 1 - r['on_time'] / due):.2f}%"

        row("reads late > 1 cycle or missed", late)
        row("mapper CPU % of one core", lambda r: f"{r['cpu_percent']:.0f}%")
        row("mapper peak RSS MB", lambda r: "-" if r["rss_mb"] is None else f"{r['rss_mb']:.1f}")
        row("reads per CPU-second", lambda r: f"{rate(r) / max(r['cpu_percent'] / 100, 1e-9):.0f}")
        row(
            "report latency p50/p99 ms",
            lambda r: f"{r['latency_p50_ms']:.0f}/{r['latency_p99_ms']:.0f}" if "latency_p50_ms" in r else "-",
        )
        row("simulators CPU % (sum)", lambda r: f"{r['sim_cpu_percent']:.0f}%")
        print()
        for suffix in sorted({m.partition("@")[2] for m in modes}):
            at = f"@{suffix}" if suffix else ""
            co, pp = results.get(f"coalesced{at}"), results.get(f"per-property{at}")
            if co and pp:
                ratio = (rate(co) / max(co["cpu_percent"], 1e-9)) / (rate(pp) / max(pp["cpu_percent"], 1e-9))
                every = f"every {suffix} ms" if suffix else "every cycle"
                print(f"coalesced vs per-property, reports {every}: {ratio:.1f}x the reads per CPU-second")
        floor = results.get(paced_mode)
        for m in modes:
            if floor and m.startswith("per-property"):
                bound = (rate(floor) / max(floor["cpu_percent"], 1e-9)) / (
                    rate(results[m]) / max(results[m]["cpu_percent"], 1e-9)
                )
                print(f"{paced_mode} (the coalesced request rate, no mapper) vs {m}: {bound:.1f}x, the ceiling")
        if any("@" in m and not m.startswith("bare") for m in modes):
            print(
                "* counted by the mapper (reads failed or lost to rounds overrunning their cycle);"
                " the recorder sees one value per report cycle"
            )
        print("targets: >= 99% of reads on time, <= 50% of one core, RSS <= 80 MB, >= 5x per-property reads/CPU-s")
    finally:
        for s in sims:
            stop(s)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
