"""The limit for modbus_scale: bare pymodbus clients, one per simulator port.

    python bench/_bare_modbus.py SECONDS REGISTERS SLAVES [--rate N] PORT [PORT ...]

Each client loops read_holding_registers(0, count=REGISTERS) over slaves 1..SLAVES, one request at a time (as
one connection allows): as fast as it can, or with ``--rate`` at N requests/s in all, spread evenly over the
clients and over time (what a mapper's schedule asks of the line). Prints JSON: requests, seconds, CPU seconds
of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

from pymodbus.client import AsyncModbusTcpClient


async def loop(port: int, registers: int, slaves: int, until: float, period: float) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0, reconnect_delay=0)
    await client.connect()
    done = 0
    slave = 1
    clock = asyncio.get_running_loop()
    due = clock.time()
    while time.monotonic() < until:
        if period:
            due += period
            await asyncio.sleep(max(0.0, due - clock.time()))
        response = await client.read_holding_registers(0, count=registers, device_id=slave)
        if response.isError():
            raise SystemExit(f"port {port} slave {slave}: {response}")
        done += 1
        slave = slave % slaves + 1
    client.close()
    return done


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("seconds", type=float)
    parser.add_argument("registers", type=int)
    parser.add_argument("slaves", type=int)
    parser.add_argument("ports", type=int, nargs="+")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s in all (0: as fast as possible)")
    args = parser.parse_args()
    period = len(args.ports) / args.rate if args.rate else 0.0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    counts = await asyncio.gather(
        *(loop(p, args.registers, args.slaves, t0 + args.seconds, period) for p in args.ports)
    )
    elapsed = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    print(json.dumps({"requests": sum(counts), "seconds": elapsed, "cpu_s": cpu}))


if __name__ == "__main__":
    asyncio.run(main())
