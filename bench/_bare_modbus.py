"""The limit for modbus_scale: bare pymodbus clients, one per simulator port, reading as fast as they can.

    python bench/_bare_modbus.py SECONDS REGISTERS SLAVES PORT [PORT ...]

Each client loops read_holding_registers(0, count=REGISTERS) over slaves 1..SLAVES, one request at a time (as
one connection allows). Prints JSON: requests, seconds, CPU seconds of this process.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from pymodbus.client import AsyncModbusTcpClient


async def loop(port: int, registers: int, slaves: int, until: float) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0, reconnect_delay=0)
    await client.connect()
    done = 0
    slave = 1
    while time.monotonic() < until:
        response = await client.read_holding_registers(0, count=registers, device_id=slave)
        if response.isError():
            raise SystemExit(f"port {port} slave {slave}: {response}")
        done += 1
        slave = slave % slaves + 1
    client.close()
    return done


async def main() -> None:
    seconds, registers, slaves = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ports = [int(p) for p in sys.argv[4:]]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    counts = await asyncio.gather(*(loop(p, registers, slaves, t0 + seconds) for p in ports))
    elapsed = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    print(json.dumps({"requests": sum(counts), "seconds": elapsed, "cpu_s": cpu}))


if __name__ == "__main__":
    asyncio.run(main())
