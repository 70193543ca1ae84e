"""A DeviceManagerService for benchmarks: answers MapperRegister from a CR folder, records every twin's read time.

    python bench/_dmi_recorder.py SOCKET CR_FOLDER OUT.json CYCLE_MS

SIGUSR1 opens the measurement window (counters reset); SIGUSR2 closes it and writes OUT.json: property reads
(distinct read time stamps per property), reads on time (no more than two cycles after the previous read of the
same property, i.e. at most one cycle after it was due), report latency (mapper read -> receipt here).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dmi.agent.inventory import Inventory
from dmi.resources import is_kind, parse_device, parse_model
from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc
from dmi.validate import validate_paths

MAX_MESSAGE = 256 * 1024 * 1024


class Recorder(api_pb2_grpc.DeviceManagerServiceServicer):  # type: ignore[misc]
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.open = False
        self.last: dict[tuple[str, str], int] = {}
        self.reads = 0
        self.late = 0
        self.on_time = 0
        self.latencies: list[int] = []
        self.states = 0
        self.cycle_ms = 1000
        self.t0 = self.t1 = 0.0

    async def MapperRegister(self, request: Any, context: Any) -> pb.MapperRegisterResponse:
        return self.inventory.register_answer(request.mapper.protocol)

    async def ReportDeviceStatus(self, request: Any, context: Any) -> pb.ReportDeviceStatusResponse:
        now = int(time.time() * 1000)
        if self.open:
            for twin in request.reportedDevice.twins:
                stamp = int(twin.reported.metadata.get("timestamp") or 0)
                key = (request.deviceName, twin.propertyName)
                previous = self.last.get(key)
                if previous is not None and stamp == previous:
                    continue  # the same read reported again
                self.reads += 1
                self.latencies.append(now - stamp)
                if previous is not None and stamp - previous > 2 * self.cycle_ms:
                    self.late += 1
                else:
                    self.on_time += 1
                self.last[key] = stamp
        return pb.ReportDeviceStatusResponse()

    async def ReportDeviceStates(self, request: Any, context: Any) -> pb.ReportDeviceStatesResponse:
        if self.open:
            self.states += 1
        return pb.ReportDeviceStatesResponse()

    def start(self) -> None:
        self.last.clear()
        self.reads = self.late = self.on_time = self.states = 0
        self.latencies = []
        self.open, self.t0 = True, time.monotonic()

    def stop(self, out: Path) -> None:
        self.open, self.t1 = False, time.monotonic()
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return float(lat[min(len(lat) - 1, round(q / 100 * (len(lat) - 1)))]) if lat else float("nan")

        out.write_text(
            json.dumps(
                {
                    "seconds": self.t1 - self.t0,
                    "reads": self.reads,
                    "late": self.late,
                    "on_time": self.on_time,
                    "properties_seen": len(self.last),
                    "states": self.states,
                    "latency_p50_ms": pct(50),
                    "latency_p99_ms": pct(99),
                }
            )
        )


async def main(socket: str, folder: str, out: str, cycle_ms: int) -> None:
    report = validate_paths([Path(folder)])
    models = [parse_model(d.doc) for d in report.documents if is_kind(d.doc, "DeviceModel")]
    devices = [parse_device(d.doc) for d in report.documents if is_kind(d.doc, "Device")]
    recorder = Recorder(Inventory.build(models, devices, "edgecore"))
    recorder.cycle_ms = cycle_ms
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    server = grpc.aio.server(options=options)
    api_pb2_grpc.add_DeviceManagerServiceServicer_to_server(recorder, server)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, recorder.start)
    loop.add_signal_handler(signal.SIGUSR2, recorder.stop, Path(out))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
