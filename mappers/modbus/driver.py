"""The Modbus driver: one per device, over the endpoint connection it shares with its neighbours.

Reads of properties that fall due together are coalesced: same register table, sorted by offset, merged
while the span stays within one request (125 registers / 2000 bits) and the hole between two properties is at
most ``coalesceGap`` registers (x16 for bits). A merged request the device refuses with an exception (a hole
it does not implement, say) is split into one request per property, and stays split for this device.
"""

from __future__ import annotations

import logging
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mapper_framework.driver import Driver
from mappers.modbus.codec import CodecError, decode_bits, decode_registers, encode_bits, encode_registers
from mappers.modbus.config import (
    BIT_TABLES,
    MAX_BITS,
    MAX_REGISTERS,
    TABLE_NAMES,
    ModbusProtocolConfig,
    ModbusVisitorConfig,
)
from mappers.modbus.connection import (
    Endpoint,
    EndpointPool,
    EndpointUnreachable,
    ModbusExceptionResponse,
    SlaveTimeout,
    shared_pool,
)

log = logging.getLogger(__name__)

_READ = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "holding": "read_holding_registers",
    "input": "read_input_registers",
}


@dataclass
class ReadGroup:
    """One request: ``count`` registers (or bits) of ``table`` from ``start``, serving ``members``."""

    table: str
    start: int
    count: int
    members: list[int]  # indexes into the visitors of the round
    label: str = field(default="", compare=False)  # describe()'s text, kept: every request carries it for errors

    def describe(self, visitors: Sequence[ModbusVisitorConfig]) -> str:
        if len(self.members) == 1:
            return visitors[self.members[0]].describe()
        unit = "bits" if self.table in BIT_TABLES else "registers"
        return f"{TABLE_NAMES[self.table]} offsets {self.start}-{self.start + self.count - 1} ({self.count} {unit})"


def plan_reads(visitors: Sequence[ModbusVisitorConfig], coalesce: bool, gap: int) -> list[ReadGroup]:
    """Group the visitors into requests (one per visitor when ``coalesce`` is off, as the upstream mapper does)."""
    if not coalesce:
        return [ReadGroup(v.table, v.offset, v.count, [i]) for i, v in enumerate(visitors)]
    groups: list[ReadGroup] = []
    by_table: dict[str, list[int]] = {}
    for i, v in enumerate(visitors):
        by_table.setdefault(v.table, []).append(i)
    for table, indexes in by_table.items():
        bits = table in BIT_TABLES
        limit = MAX_BITS if bits else MAX_REGISTERS
        hole = gap * 16 if bits else gap
        indexes.sort(key=lambda i: (visitors[i].offset, visitors[i].count))
        current: ReadGroup | None = None
        for i in indexes:
            v = visitors[i]
            if current is not None:
                end = current.start + current.count
                new_end = max(end, v.offset + v.count)
                if v.offset - end <= hole and new_end - current.start <= limit:
                    current.count = new_end - current.start
                    current.members.append(i)
                    continue
            current = ReadGroup(table, v.offset, v.count, [i])
            groups.append(current)
    return groups


# "gateway path unavailable", "gateway target device failed to respond": the slave, not the line, is away.
GATEWAY_CODES = frozenset((10, 11))


class ModbusDriver(Driver[ModbusProtocolConfig, ModbusVisitorConfig]):
    """Reads and writes one Modbus slave (``slaveID``) on a TCP or RTU endpoint."""

    protocol_config = ModbusProtocolConfig
    visitor_config = ModbusVisitorConfig
    probe_after_reads = True  # state() looks at the connection only; every request has the endpoint's timeout

    def __init__(self, device: str = "", pool: EndpointPool | None = None) -> None:
        self.device = device
        self._pool = pool
        self._config: ModbusProtocolConfig | None = None
        self._endpoint: Endpoint | None = None
        self._plans: dict[tuple[int, ...], tuple[tuple[ModbusVisitorConfig, ...], list[ReadGroup]]] = {}
        self._last_round: tuple[Sequence[ModbusVisitorConfig] | None, list[ReadGroup]] = (None, [])
        self._last_error: Exception | None = None

    # ------------------------------------------------------------------ lifecycle
    async def connect(self, config: ModbusProtocolConfig) -> None:
        if self._endpoint is not None:
            await self.close()
        pool = self._pool if self._pool is not None else shared_pool()
        self._pool = pool
        self._config = config
        self._endpoint = pool.acquire(config, self.device)
        self._plans.clear()
        self._last_round = (None, [])
        # A connection failure is not raised: reads report it and the state probe says offline.
        await self._endpoint.connect()

    async def close(self) -> None:
        if self._endpoint is not None and self._pool is not None:
            self._pool.release(self._endpoint, self.device)
        self._endpoint = None

    def _ready(self) -> tuple[ModbusProtocolConfig, Endpoint]:
        if self._config is None or self._endpoint is None:
            raise RuntimeError(f"device {self.device}: the modbus driver is not connected")
        return self._config, self._endpoint

    # ------------------------------------------------------------------ reads
    async def read(self, visitor: ModbusVisitorConfig) -> Any:
        result = (await self.read_many([visitor]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def read_many(self, visitors: Sequence[ModbusVisitorConfig]) -> list[Any]:
        config, endpoint = self._ready()
        if visitors is self._last_round[0]:
            # A collect loop passes the same list every cycle (kept alive here, so its identity cannot be reused).
            groups = self._last_round[1]
        else:
            groups = self._plan(config, visitors)
            self._last_round = (visitors, groups)
        results: list[Any] = [None] * len(visitors)
        split: list[ReadGroup] = []
        for group in groups:  # a split below changes the cached plan only after this loop
            try:
                raw = await self._fetch(config, endpoint, group, visitors)
            except ModbusExceptionResponse as exc:
                if len(group.members) > 1 and exc.code not in GATEWAY_CODES:  # a gateway code is no answer at all
                    split.append(group)
                    for i in group.members:
                        results[i] = await self._read_one(config, endpoint, visitors, i)
                    continue
                self._last_error = exc
                for i in group.members:
                    results[i] = exc
                continue
            except (EndpointUnreachable, SlaveTimeout) as exc:
                self._last_error = exc
                for i in group.members:
                    results[i] = exc
                continue
            self._last_error = None
            for i in group.members:
                results[i] = self._decode(visitors[i], raw, group.start)
        if split:
            for group in split:
                log.info(
                    "device %s: %s refused as one request; reading its %d properties one by one from now on",
                    self.device,
                    group.describe(visitors),
                    len(group.members),
                )
                index = groups.index(group)
                groups[index : index + 1] = [
                    ReadGroup(visitors[i].table, visitors[i].offset, visitors[i].count, [i]) for i in group.members
                ]
        return results

    def _plan(self, config: ModbusProtocolConfig, visitors: Sequence[ModbusVisitorConfig]) -> list[ReadGroup]:
        # Plans are cached per round shape. The entry keeps its visitors: an id is unique only while its object
        # lives, and a one-off read (REST) must never pick up the plan of a visitor that is gone.
        key = tuple(map(id, visitors))
        cached = self._plans.get(key)
        if cached is not None and all(map(operator.is_, cached[0], visitors)):
            return cached[1]
        if len(self._plans) >= 64:
            self._plans.clear()
        groups = plan_reads(visitors, config.coalesce, config.coalesceGap)
        self._plans[key] = (tuple(visitors), groups)
        return groups

    async def _read_one(
        self, config: ModbusProtocolConfig, endpoint: Endpoint, visitors: Sequence[ModbusVisitorConfig], i: int
    ) -> Any:
        v = visitors[i]
        single = ReadGroup(v.table, v.offset, v.count, [i])
        try:
            raw = await self._fetch(config, endpoint, single, visitors)
        except (ModbusExceptionResponse, EndpointUnreachable, SlaveTimeout) as exc:
            self._last_error = exc
            return exc
        return self._decode(v, raw, v.offset)

    async def _fetch(
        self,
        config: ModbusProtocolConfig,
        endpoint: Endpoint,
        group: ReadGroup,
        visitors: Sequence[ModbusVisitorConfig],
    ) -> list[Any]:
        if not group.label:
            group.label = group.describe(visitors)
        response = await endpoint.call(
            _READ[group.table], group.start, count=group.count, slave=config.slaveID, what=group.label
        )
        if group.table in BIT_TABLES:
            return response.bits[: group.count]  # type: ignore[no-any-return]
        registers: list[int] = response.registers
        if len(registers) != group.count:
            # Not this request's answer (on RTU, a late one to an earlier request): its values belong elsewhere.
            raise SlaveTimeout(
                f"answer of {len(registers)} registers for {group.label}, which has {group.count}: a late answer to"
                " an earlier request? Not used"
            )
        return registers

    def _decode(self, visitor: ModbusVisitorConfig, raw: list[Any], start: int) -> Any:
        at = visitor.offset - start
        chunk = raw[at : at + visitor.count]
        if len(chunk) < visitor.count:
            return ModbusExceptionResponse(
                0, f"short answer for {visitor.describe()}: {len(chunk)} of {visitor.count} values"
            )
        try:
            if visitor.table in BIT_TABLES:
                return decode_bits(visitor, chunk)
            return decode_registers(visitor, chunk)
        except (CodecError, ValueError, ArithmeticError, struct.error) as exc:
            # One property's bad registers must not fail the others of its round.
            return CodecError(f"{visitor.describe()}: cannot decode {chunk}: {exc}")

    # ------------------------------------------------------------------ writes
    async def write(self, visitor: ModbusVisitorConfig, value: Any) -> None:
        config, endpoint = self._ready()
        if not visitor.writable:
            raise PermissionError(
                f"{visitor.describe()} is read-only by Modbus: only CoilRegister and HoldingRegister can be written"
            )
        for bound, name, below in ((visitor.min, "min", True), (visitor.max, "max", False)):
            if bound is None or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if (value < bound) if below else (value > bound):
                raise CodecError(
                    f"{visitor.describe()}: {value} is {'below' if below else 'above'} the visitor's {name} {bound:g}"
                )
        what = visitor.describe()
        try:
            encoded = encode_bits(visitor, value) if visitor.table == "coil" else encode_registers(visitor, value)
        except CodecError as exc:
            raise CodecError(f"{what}: {exc}") from None
        if visitor.table == "coil":
            bits = [bool(b) for b in encoded]
            if len(bits) == 1:
                await endpoint.call("write_coil", visitor.offset, bits[0], slave=config.slaveID, what=what)
            else:
                await endpoint.call("write_coils", visitor.offset, bits, slave=config.slaveID, what=what)
            return
        registers = [int(r) for r in encoded]
        if len(registers) == 1:
            await endpoint.call("write_register", visitor.offset, registers[0], slave=config.slaveID, what=what)
        else:
            await endpoint.call("write_registers", visitor.offset, registers, slave=config.slaveID, what=what)

    # ------------------------------------------------------------------ state
    async def state(self) -> str:
        if self._endpoint is None or not self._endpoint.connected:
            return "offline"
        error = self._last_error
        if isinstance(error, SlaveTimeout):
            return "unhealthy"  # the line is up, this slave does not answer
        if isinstance(error, ModbusExceptionResponse) and error.code in GATEWAY_CODES:
            return "unhealthy"  # the same, said by a gateway in front of it (or our simulator, as one)
        return "online"
