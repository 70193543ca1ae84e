"""A Modbus simulator that serves exactly the registers the Device CRs describe, with values that move.

Each simulated device is one slave (its ``slaveID``) on a pymodbus server; many slaves share one port. Its
coils, discrete inputs, holding and input registers are the ones its properties name (holes of up to
``pad`` registers between them are served as zeros, so a coalesced read does not trip over them; anything
further away answers "illegal data address", as a real device does). Values are computed when read:

- ``static``: the desired value from the CR, else the low end of the range;
- ``ramp``: low to high over the period, then again; ``sine``: around the middle of the range;
- ``walk``: a random walk inside the range; ``toggle``: booleans flip every half period;
- ``replay:FILE:COLUMN[:PERIOD]``: the column of a CSV file (header line first), one row every PERIOD seconds
  (default 1) from the simulator's start, then again from the top. Every point replaying the same file is on the
  same row at the same moment, so a device's properties read together come from one recorded sample.

The range is the model property's minimum/maximum when given (engineering units: scale is applied when
encoding). A write to a point (from a Modbus client or through the server's datastore) holds the written value:
the point stops moving, as a setpoint would.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import logging
import math
import random
import termios
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from mapper_framework.device import DeviceSpec
from mapper_framework.driver import ConfigError, parse_config
from mappers.modbus.codec import encode_bits, encode_registers
from mappers.modbus.config import BIT_TABLES, ModbusProtocolConfig, ModbusVisitorConfig

log = logging.getLogger(__name__)

MOTIONS = ("static", "ramp", "sine", "walk", "toggle", "replay")
_FUNCTION_TABLE = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}
_BLOCK_ORDER = ("coil", "discrete", "holding", "input")


class SimulatorError(ValueError):
    """CRs the simulator cannot serve (clashing slave IDs, overlapping registers, a bad motion)."""


@dataclass
class Motion:
    """How a point's value moves; ``low``/``high`` in engineering units, ``period`` in seconds."""

    kind: str = "static"
    low: float = 0.0
    high: float = 100.0
    period: float = 60.0
    replay: Replay | None = None

    @classmethod
    def parse(cls, text: str, base: Motion) -> Motion:
        """``KIND[:LOW:HIGH[:PERIOD]]``, e.g. ``sine:18:26:120``; omitted parts keep ``base``'s.

        ``replay:FILE:COLUMN[:PERIOD]`` replays a CSV column (see the module's docstring).
        """
        parts = [p.strip() for p in text.split(":")]
        if parts[0] not in MOTIONS:
            raise SimulatorError(f"motion {text!r}: expected one of {', '.join(MOTIONS)}")
        if parts[0] == "replay":
            if len(parts) not in (3, 4) or not parts[1] or not parts[2]:
                raise SimulatorError(f"motion {text!r}: expected replay:FILE:COLUMN[:PERIOD]")
            try:
                period = float(parts[3]) if len(parts) == 4 else 1.0
            except ValueError:
                raise SimulatorError(f"motion {text!r}: PERIOD must be a number of seconds") from None
            if period <= 0:
                raise SimulatorError(f"motion {text!r}: PERIOD must be above 0")
            return cls("replay", base.low, base.high, period, Replay.load(parts[1], parts[2], text))
        try:
            numbers = [float(p) for p in parts[1:]]
        except ValueError:
            raise SimulatorError(f"motion {text!r}: LOW, HIGH and PERIOD must be numbers") from None
        low = numbers[0] if len(numbers) > 0 else base.low
        high = numbers[1] if len(numbers) > 1 else base.high
        period = numbers[2] if len(numbers) > 2 else base.period
        if high < low or period <= 0:
            raise SimulatorError(f"motion {text!r}: needs LOW <= HIGH and PERIOD > 0")
        return cls(parts[0], low, high, period)


@dataclass
class Replay:
    """One column of a recorded CSV file, played from the moment its file is first read."""

    column: list[float]
    clock: _ReplayClock

    @classmethod
    def load(cls, path: str, column: str, motion: str) -> Replay:
        table = _REPLAYS.get(path)
        if table is None:
            try:
                with open(path, newline="", encoding="utf-8") as f:
                    rows = [r for r in csv.reader(f) if r]
            except OSError as exc:
                raise SimulatorError(f"motion {motion!r}: cannot read {path}: {exc.strerror}") from None
            if len(rows) < 2:
                raise SimulatorError(f"motion {motion!r}: {path} needs a header line and at least one row")
            header = [h.strip() for h in rows[0]]
            columns: dict[str, list[float]] = {h: [] for h in header}
            for line, row in enumerate(rows[1:], start=2):
                for h, v in zip(header, row, strict=False):
                    try:
                        columns[h].append(float(v))
                    except ValueError:
                        where = f"{path} line {line}"
                        raise SimulatorError(f"motion {motion!r}: {where}: {h}={v!r} is not a number") from None
            table = _REPLAYS[path] = (columns, _ReplayClock())
        columns, clock = table
        if column not in columns:
            raise SimulatorError(f"motion {motion!r}: {path} has no column {column!r} (it has {', '.join(columns)})")
        return cls(columns[column], clock)

    def value(self, now: float, period: float) -> float:
        return self.column[int(self.clock.elapsed(now) / period) % len(self.column)]


@dataclass
class _ReplayClock:
    start: float | None = None

    def elapsed(self, now: float) -> float:
        if self.start is None:
            self.start = now
        return max(0.0, now - self.start)


_REPLAYS: dict[str, tuple[dict[str, list[float]], _ReplayClock]] = {}


@dataclass
class SimPoint:
    """One property's registers on one slave."""

    device: str
    name: str
    visitor: ModbusVisitorConfig
    motion: Motion
    initial: Any
    held: bool = False
    _walk: float | None = None
    _walk_at: float = 0.0
    _rng: random.Random = field(default_factory=random.Random)

    @property
    def end(self) -> int:
        return self.visitor.offset + self.visitor.count

    def value(self, now: float) -> Any:
        kind, m = self.visitor.kind, self.motion
        if m.kind == "static" or kind in ("string", "bytes"):
            return self.initial
        if m.replay is not None:
            recorded = m.replay.value(now, m.period)
            return recorded != 0 if kind in ("bit", "boolean") else _quantise(self.visitor, recorded)
        if kind in ("bit", "boolean"):
            if m.kind == "toggle" or m.kind in ("ramp", "sine"):
                return int(now / (m.period / 2)) % 2 == 1
            return self._rng.random() < 0.5
        span = m.high - m.low
        if m.kind == "ramp":
            number = m.low + span * ((now % m.period) / m.period)
        elif m.kind == "sine":
            number = m.low + span * (0.5 + 0.5 * math.sin(2 * math.pi * now / m.period))
        elif m.kind == "toggle":
            number = m.high if int(now / (m.period / 2)) % 2 else m.low
        else:
            if self._walk is None:
                self._walk, self._walk_at = m.low + span / 2, now
            step = span / 20 * math.sqrt(max(now - self._walk_at, 0.0))
            self._walk = min(max(self._walk + self._rng.uniform(-step, step), m.low), m.high)
            self._walk_at = now
            number = self._walk
        return _quantise(self.visitor, number)

    def registers(self, now: float) -> list[int]:
        return encode_registers(self.visitor, self.value(now))

    def bits(self, now: float) -> list[bool]:
        return encode_bits(self.visitor, self.value(now))


@dataclass
class SimSlave:
    slave_id: int
    device: str
    points: list[SimPoint]


@dataclass
class SimEndpoint:
    """One server: a TCP address or a serial port, with its slaves."""

    kind: str  # tcp or rtu
    address: str  # host:port or the serial port
    line: ModbusProtocolConfig | None = None  # serial settings (RTU)
    slaves: dict[int, SimSlave] = field(default_factory=dict)


def _default_motion(prop_writable: bool, visitor: ModbusVisitorConfig, low: str, high: str) -> Motion:
    lo = float(low) if low else 0.0
    hi = float(high) if high else (lo + 100.0)
    if prop_writable or visitor.kind in ("string", "bytes"):
        return Motion("static", lo, hi)
    if visitor.kind in ("bit", "boolean"):
        return Motion("toggle", lo, hi, 20.0)
    if visitor.kind.startswith("uint") or visitor.kind == "bitfield":
        lo = max(lo, 0.0)
    return Motion("walk", lo, hi)


def _initial(visitor: ModbusVisitorConfig, desired: str | None, motion: Motion, device: str) -> Any:
    kind = visitor.kind
    if kind == "string":
        text = desired or device.split("/")[-1]
        return text[: visitor.count * 2]
    if kind == "bytes":
        return (desired or "").encode()[: visitor.count * 2]
    if kind in ("bit", "boolean"):
        return (desired or "").lower() in ("true", "1", "on")
    if desired:
        try:
            return _quantise(visitor, float(desired))
        except ValueError:
            pass
    return _quantise(visitor, motion.low)


def _quantise(visitor: ModbusVisitorConfig, number: float) -> int | float:
    """The nearest value the registers can hold: integer kinds step by ``scale`` (42.5 with scale 0.1 is 425)."""
    if visitor.kind.startswith(("int", "uint")) or visitor.kind == "bitfield":
        raw = round(number / visitor.scale)
        scale = visitor.scale
        return raw * int(scale) if float(scale).is_integer() else float(f"{raw * scale:.12g}")
    return round(number, 3)


def build_endpoints(
    devices: Sequence[DeviceSpec],
    motions: Mapping[str, str] | None = None,
    tcp: str | None = None,
    rtu: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> list[SimEndpoint]:
    """Group the Modbus devices into servers and slaves.

    ``motions`` (the CRs' annotations) and ``overrides`` (the command line, which wins) map ``property`` or
    ``namespace/device/property`` (or ``device/property``) to a motion text; an override that names no property
    is an error. ``tcp`` (``host:port``) or ``rtu`` (a serial port) serves every device there instead of at its own
    address.
    """
    motions = dict(motions or {})
    overrides = dict(overrides or {})
    if tcp is not None:
        _check_tcp_address(tcp)
    used: set[str] = set()
    names: set[str] = set()
    endpoints: dict[str, SimEndpoint] = {}
    for spec in devices:
        if spec.protocol_name != "modbus":
            continue
        try:
            protocol = parse_config(ModbusProtocolConfig, spec.protocol_data, f"device {spec} protocol")
        except ConfigError as exc:
            raise SimulatorError(str(exc)) from None
        if rtu is not None:
            key, kind, address = f"rtu://{rtu}", "rtu", rtu
        elif tcp is not None:
            key, kind, address = f"tcp://{tcp}", "tcp", tcp
        elif protocol.mode == "tcp":
            key, kind, address = protocol.endpoint, "tcp", f"{protocol.ip}:{protocol.port}"
        else:
            log.warning(
                "device %s is on serial port %s: give --rtu PORT (the other end of its line) to simulate it",
                spec,
                protocol.serialPort,
            )
            continue
        endpoint = endpoints.setdefault(key, SimEndpoint(kind, address, protocol if kind == "rtu" else None))
        if protocol.slaveID in endpoint.slaves:
            other = endpoint.slaves[protocol.slaveID].device
            raise SimulatorError(
                f"devices {other} and {spec} are both slave {protocol.slaveID} on {address}. Hint: give them"
                " different slaveIDs"
                + (
                    ", or pass only the CR files of one line with -f (--tcp/--rtu puts every device on one)"
                    if tcp is not None or rtu is not None
                    else ""
                )
            )
        points = []
        for prop in spec.properties:
            try:
                visitor = parse_config(
                    ModbusVisitorConfig, prop.visitor_data, f"device {spec} property {prop.name} visitors"
                )
            except ConfigError as exc:
                raise SimulatorError(str(exc)) from None
            motion = _default_motion(prop.writable, visitor, prop.minimum, prop.maximum)
            names.add(prop.name)
            keys = (f"{spec.namespace}/{spec.name}/{prop.name}", f"{spec.name}/{prop.name}", prop.name)
            chosen = next((overrides[k] for k in keys if k in overrides), None)
            if chosen is None:
                chosen = next((motions[k] for k in keys if k in motions), None)
            used.update(k for k in keys if k in overrides)
            if chosen is not None:
                motion = Motion.parse(chosen, motion)
            points.append(
                SimPoint(str(spec), prop.name, visitor, motion, _initial(visitor, prop.desired, motion, str(spec)))
            )
        _check_overlaps(str(spec), points)
        endpoint.slaves[protocol.slaveID] = SimSlave(protocol.slaveID, str(spec), points)
    unused = sorted(set(overrides) - used)
    if unused:
        # A motion for no property is a typo: silently serving the default motion instead hides it.
        raise SimulatorError(
            f"--motion {unused[0]}: no simulated property by that name (properties: {', '.join(sorted(names))})."
            " Hint: PROPERTY, DEVICE/PROPERTY or NAMESPACE/DEVICE/PROPERTY"
        )
    return list(endpoints.values())


def _check_tcp_address(tcp: str) -> None:
    host, sep, port = tcp.rpartition(":")
    if not sep or not host:
        raise SimulatorError(f"--tcp {tcp!r}: expected HOST:PORT, e.g. 127.0.0.1:5020")
    try:
        number = int(port)
    except ValueError:
        raise SimulatorError(f"--tcp {tcp!r}: port {port!r} is not a number. Hint: e.g. 127.0.0.1:5020") from None
    if not 0 <= number <= 65535:
        raise SimulatorError(f"--tcp {tcp!r}: port {number} is out of range 0-65535. Hint: e.g. 127.0.0.1:5020")


def _check_overlaps(device: str, points: list[SimPoint]) -> None:
    by_table: dict[str, list[SimPoint]] = {}
    for point in points:
        by_table.setdefault(point.visitor.table, []).append(point)
    for table_points in by_table.values():
        table_points.sort(key=lambda p: p.visitor.offset)
        for a, b in itertools.pairwise(table_points):
            if b.visitor.offset < a.end:
                same = a.visitor.offset == b.visitor.offset and a.visitor.count == b.visitor.count
                if not same:
                    raise SimulatorError(
                        f"device {device}: properties {a.name} and {b.name} overlap at "
                        f"{b.visitor.describe()}; a simulator cannot give both their own values"
                    )


def _runs(addresses: Iterable[int], pad: int) -> list[tuple[int, int]]:
    """Contiguous (start, count) runs of the used addresses, holes of at most ``pad`` filled."""
    runs: list[tuple[int, int]] = []
    for address in sorted(set(addresses)):
        if runs and address - (runs[-1][0] + runs[-1][1]) <= pad:
            start, _ = runs[-1]
            runs[-1] = (start, address - start + 1)
        else:
            runs.append((address, 1))
    return runs


class SlaveModel:
    """Serves one slave: a pymodbus :class:`SimDevice` whose action puts the moving values in on every read."""

    def __init__(self, slave: SimSlave, pad: int = 8, clock: Any = time.time) -> None:
        self.slave = slave
        self._clock = clock
        self._points: dict[str, list[SimPoint]] = {t: [] for t in _BLOCK_ORDER}
        for point in slave.points:
            self._points[point.visitor.table].append(point)
        blocks: list[list[SimData]] = []
        for table in _BLOCK_ORDER:
            used = [a for p in self._points[table] for a in range(p.visitor.offset, p.end)]
            if table in BIT_TABLES:
                runs = _runs(used, pad * 16)
                blocks.append([SimData(start, values=[False] * count, datatype=DataType.BITS) for start, count in runs])
            else:
                runs = _runs(used, pad)
                blocks.append(
                    [SimData(start, count=count, values=0, datatype=DataType.REGISTERS) for start, count in runs]
                )
        # pymodbus needs a block in every table: an unused one gets a token block at the very end of the
        # address space (invalid registers; bits cannot be marked invalid, so 16 of them answer there).
        for i, table in enumerate(_BLOCK_ORDER):
            if not blocks[i]:
                blocks[i] = (
                    [SimData(65520, values=[False] * 16, datatype=DataType.BITS)]
                    if table in BIT_TABLES
                    else [SimData(65535, datatype=DataType.INVALID)]
                )
        simdata = tuple(blocks)
        self.device = SimDevice(slave.slave_id, simdata=simdata, action=self._action)  # type: ignore[arg-type]

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        table = _FUNCTION_TABLE.get(function_code)
        if table is None:
            return None
        bits = table in BIT_TABLES
        # For bit tables pymodbus passes the request's bit address and the count of 16-bit words it spans.
        end = address + (count * 16 if bits else count)
        hit = [p for p in self._points[table] if p.visitor.offset < end and p.end > address]
        if set_values is not None:
            for point in hit:
                point.held = True
            return None
        now = self._clock()
        for point in hit:
            if point.held:
                continue
            try:
                if bits:
                    for i, bit in enumerate(point.bits(now)):
                        where = point.visitor.offset + i
                        word, shift = where // 16 - start_address, where % 16
                        registers[word] = registers[word] | (1 << shift) if bit else registers[word] & ~(1 << shift)
                else:
                    at = point.visitor.offset - start_address
                    registers[at : at + point.visitor.count] = point.registers(now)
            except (ValueError, OverflowError) as exc:
                log.debug("simulated %s %s: %s", point.device, point.name, exc)
        return None


class _KnownSlaves:
    """The server's datastore, answering only for the slaves it simulates.

    pymodbus answers a request for an unknown slave with "server device failure"; a real line stays silent
    (RTU: the client times out) and a real TCP gateway says "gateway target device failed to respond".
    """

    def __init__(self, core: Any) -> None:
        self._core = core

    def device_ids(self) -> list[int]:
        return list(self._core.device_ids())

    def _check(self, device_id: int) -> None:
        if device_id not in self._core.devices:
            raise NoSuchIdException(f"no simulated slave {device_id}")

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> Any:
        self._check(device_id)
        return await self._core.async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: Any) -> Any:
        self._check(device_id)
        return await self._core.async_setValues(device_id, func_code, address, values)


def make_server(endpoint: SimEndpoint, pad: int = 8) -> ModbusTcpServer | ModbusSerialServer:
    """A pymodbus server for ``endpoint`` (not started: ``await server.serve_forever()``)."""
    devices = [SlaveModel(s, pad).device for s in endpoint.slaves.values()]
    server: ModbusTcpServer | ModbusSerialServer
    if endpoint.kind == "tcp":
        host, _, port = endpoint.address.rpartition(":")
        server = ModbusTcpServer(devices, address=(host or "0.0.0.0", int(port)))
    else:
        line = endpoint.line
        server = ModbusSerialServer(
            devices,
            port=endpoint.address,
            baudrate=line.baudRate if line else 19200,
            bytesize=line.dataBits if line else 8,
            parity=line.parity if line else "N",
            stopbits=line.stopBits if line else 1,
            ignore_missing_devices=True,
        )
    server.context = _KnownSlaves(server.context)  # type: ignore[assignment]
    return server


async def start_servers(endpoints: Sequence[SimEndpoint], pad: int = 8) -> list[ModbusTcpServer | ModbusSerialServer]:
    """Start listening on every endpoint; raises (naming the address) when one cannot listen."""
    servers: list[ModbusTcpServer | ModbusSerialServer] = []
    try:
        for endpoint in endpoints:
            server = make_server(endpoint, pad)
            try:
                await server.serve_forever(background=True)
            except RuntimeError:
                raise SimulatorError(
                    f"cannot listen on {endpoint.kind} {endpoint.address}. Hint: is the port in use, or the serial"
                    " port missing?"
                ) from None
            except (OSError, termios.error) as exc:  # a serial port that refuses the line settings (EINVAL)
                line = f" at {endpoint.line.line}" if endpoint.line is not None else ""
                raise SimulatorError(
                    f"cannot open {endpoint.kind} {endpoint.address}{line}: {exc}. Hint: a pty (socat) takes only"
                    " parity none; use the line settings the port supports"
                ) from None
            servers.append(server)
            log.info("simulating %d slave(s) on %s %s", len(endpoint.slaves), endpoint.kind, endpoint.address)
    except BaseException:
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]
        raise
    return servers


async def serve(endpoints: Sequence[SimEndpoint], pad: int = 8, ready: asyncio.Event | None = None) -> None:
    """Serve every endpoint until cancelled."""
    servers = await start_servers(endpoints, pad)
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]
