"""Every dataType x swap combination, against a real pymodbus server's own datastore.

The expected registers are built here from the documented rule (big-endian value, then word order reversed for
isRegisterSwap and the bytes of each register swapped for isSwap), independently of the driver's codec. Values
are put into the server's datastore with the server's own API, read by the driver over TCP; writes go the
other way and are checked in the datastore.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from mapper_framework.driver import parse_config
from mappers.modbus.config import ModbusProtocolConfig, ModbusVisitorConfig
from mappers.modbus.connection import EndpointPool
from mappers.modbus.driver import ModbusDriver
from tests.modbus_peers import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLAVE = 7


def raw_registers(fmt: str, value: Any, byte_swap: bool, word_swap: bool) -> list[int]:
    data = struct.pack(">" + fmt, value)
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if word_swap:
        words.reverse()
    if byte_swap:
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def text_registers(data: bytes, registers: int, byte_swap: bool) -> list[int]:
    data = data.ljust(registers * 2, b"\0")
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if byte_swap:
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


# (id, visitor configData without swaps, struct format of the raw value, raw value, value the driver reports)
NUMERIC = [
    ("int16", {"dataType": "int16"}, "h", -32000, -32000),
    ("uint16", {"dataType": "uint16"}, "H", 65000, 65000),
    ("int32", {"dataType": "int32"}, "i", -2_000_000_000, -2_000_000_000),
    ("uint32", {"dataType": "uint32"}, "I", 4_000_000_000, 4_000_000_000),
    ("int64", {"dataType": "int64"}, "q", -9_000_000_000_000_000_000, -9_000_000_000_000_000_000),
    ("uint64", {"dataType": "uint64"}, "Q", 18_000_000_000_000_000_000, 18_000_000_000_000_000_000),
    ("float32", {"dataType": "float32"}, "f", 21.3, 21.3),
    ("float64", {"dataType": "float64"}, "d", -1234.5678, -1234.5678),
    ("int-limit1", {"dataType": "int", "limit": 1}, "h", -5, -5),
    ("int-limit2", {"dataType": "int", "limit": 2}, "i", 70000, 70000),
    ("int-limit4", {"dataType": "int", "limit": 4}, "q", 2**40, 2**40),
    ("int-scaled", {"dataType": "int", "limit": 1, "scale": 10}, "h", 123, 1230),
    ("float-limit1-scaled", {"dataType": "float", "limit": 1, "scale": 0.1}, "h", 215, 21.5),
    ("float-limit1-negative", {"dataType": "float", "limit": 1, "scale": 0.01}, "h", -1999, -19.99),
    ("float-limit2", {"dataType": "float", "limit": 2}, "f", 3.25, 3.25),
    ("float-limit4", {"dataType": "float", "limit": 4}, "d", 1e10 + 0.5, 1e10 + 0.5),
    ("double", {"dataType": "double"}, "d", 0.0025, 0.0025),
    ("double-limit2", {"dataType": "double", "limit": 2}, "f", 1.5, 1.5),
    ("float32-scaled", {"dataType": "float32", "scale": 2}, "f", 1.25, 2.5),
]
SWAPS = [(False, False), (True, False), (False, True), (True, True)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[tuple[ModbusTcpServer, int]]:
    port = free_port()
    device = SimDevice(
        SLAVE,
        simdata=(
            [SimData(0, values=[False] * 64, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 64, datatype=DataType.BITS)],
            [SimData(0, count=1000, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=100, values=0, datatype=DataType.REGISTERS)],
        ),
    )
    srv = ModbusTcpServer([device], address=("127.0.0.1", port))
    await srv.serve_forever(background=True)
    yield srv, port
    await srv.shutdown()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def driver(server: tuple[ModbusTcpServer, int]) -> AsyncIterator[ModbusDriver]:
    _, port = server
    drv = ModbusDriver("test/codec", pool=EndpointPool())
    await drv.connect(
        parse_config(ModbusProtocolConfig, {"ip": "127.0.0.1", "port": float(port), "slaveID": float(SLAVE)}, "p")
    )
    yield drv
    await drv.close()


def visitor(register: str, offset: int, **config: Any) -> ModbusVisitorConfig:
    return parse_config(  # type: ignore[no-any-return]
        ModbusVisitorConfig, {"register": register, "offset": float(offset), **config}, "test visitor"
    )


CASES = [(c, s) for c in NUMERIC for s in SWAPS]


@pytest.mark.parametrize(("case", "swaps"), CASES, ids=[f"{c[0]}-swap{int(s[0])}{int(s[1])}" for c, s in CASES])
async def test_numeric_decode_and_encode(
    server: tuple[ModbusTcpServer, int], driver: ModbusDriver, case: Any, swaps: tuple[bool, bool]
) -> None:
    srv, _ = server
    name, config, fmt, raw, expected = case
    byte_swap, word_swap = swaps
    offset = 8 * (CASES.index((case, swaps)))
    regs = raw_registers(fmt, raw, byte_swap, word_swap)
    await srv.async_setValues(SLAVE, 16, offset, regs)
    v = visitor("HoldingRegister", offset, isSwap=byte_swap, isRegisterSwap=word_swap, **config)
    got = await driver.read(v)
    assert got == expected and type(got) is type(expected), f"{name}: registers {regs} read as {got!r}"
    # And back: the driver's write leaves exactly those registers in the datastore.
    await srv.async_setValues(SLAVE, 16, offset, [0] * len(regs))
    await driver.write(v, expected)
    assert await srv.async_getValues(SLAVE, 3, offset, len(regs)) == regs, f"{name}: write of {expected!r}"


@pytest.mark.parametrize("byte_swap", [False, True])
@pytest.mark.parametrize("word_swap", [False, True])
async def test_string_and_bytes(
    server: tuple[ModbusTcpServer, int], driver: ModbusDriver, byte_swap: bool, word_swap: bool
) -> None:
    srv, _ = server
    base = 600 + 40 * (2 * int(byte_swap) + int(word_swap))
    # Strings and bytes keep their register order (isRegisterSwap is for numbers); isSwap swaps byte pairs.
    regs = text_registers(b"AB12cd", 4, byte_swap)
    await srv.async_setValues(SLAVE, 16, base, regs)
    s = visitor("HoldingRegister", base, dataType="string", limit=4, isSwap=byte_swap, isRegisterSwap=word_swap)
    assert await driver.read(s) == "AB12cd"
    await driver.write(s, "Zz9")
    assert await srv.async_getValues(SLAVE, 3, base, 4) == text_registers(b"Zz9", 4, byte_swap)

    blob = bytes([1, 2, 0xFE, 0xFF])
    await srv.async_setValues(SLAVE, 16, base + 10, text_registers(blob, 2, byte_swap))
    b = visitor("HoldingRegister", base + 10, dataType="bytes", limit=2, isSwap=byte_swap, isRegisterSwap=word_swap)
    assert await driver.read(b) == blob


async def test_booleans_and_bits(server: tuple[ModbusTcpServer, int], driver: ModbusDriver) -> None:
    srv, _ = server
    await srv.async_setValues(SLAVE, 16, 900, [0, 2])
    assert await driver.read(visitor("HoldingRegister", 900, dataType="boolean")) is False
    assert await driver.read(visitor("HoldingRegister", 901, dataType="boolean")) is True

    coil = visitor("CoilRegister", 3)
    await srv.async_setValues(SLAVE, 5, 3, [True])
    assert await driver.read(coil) is True
    await driver.write(coil, False)
    assert await srv.async_getValues(SLAVE, 1, 3, 1) == [False]

    # A bit field: bit at the lowest address is the least significant.
    field = visitor("CoilRegister", 16, dataType="int", limit=8)
    await srv.async_setValues(SLAVE, 15, 16, [True, False, True, True, False, False, False, True])
    assert await driver.read(field) == 0b10001101
    await driver.write(field, 6)
    assert await srv.async_getValues(SLAVE, 1, 16, 8) == [False, True, True, False, False, False, False, False]

    # KubeEdge's samples read a coil as dataType int, limit 1.
    assert await driver.read(visitor("CoilRegister", 16, dataType="int", limit=1)) == 0

    discrete = visitor("DiscreteInputRegister", 40)
    await srv.async_setValues(SLAVE, 2, 40, [True])
    assert await driver.read(discrete) is True

    holding = visitor("InputRegister", 5, dataType="uint16")
    await srv.async_setValues(SLAVE, 4, 5, [4242])
    assert await driver.read(holding) == 4242


async def test_writes_to_read_only_tables_are_refused(driver: ModbusDriver) -> None:
    with pytest.raises(PermissionError, match=r"30006 \(InputRegister offset 5, 1 register\) is read-only"):
        await driver.write(visitor("InputRegister", 5, dataType="uint16"), 1)
    with pytest.raises(PermissionError, match=r"10041 \(DiscreteInputRegister offset 40, 1 bit\) is read-only"):
        await driver.write(visitor("DiscreteInputRegister", 40), True)


async def test_write_range_checks(driver: ModbusDriver) -> None:
    with pytest.raises(ValueError, match=r"outside the uint16 range 0\.\.65535"):
        await driver.write(visitor("HoldingRegister", 950, dataType="uint16"), 70000)
    with pytest.raises(ValueError, match="outside the int16 range"):
        await driver.write(visitor("HoldingRegister", 950, dataType="float", limit=1, scale=0.1), 4000.0)
    with pytest.raises(ValueError, match="above the visitor's max 100"):
        await driver.write(visitor("HoldingRegister", 950, dataType="int", max=100), 101)
    with pytest.raises(ValueError, match="do not fit 2 registers"):
        await driver.write(visitor("HoldingRegister", 950, dataType="string", limit=2), "too long")


SCALES = [1.0, 10.0, 0.1, 0.01, 2.5]
DATA_TYPES = (
    [
        {"dataType": t}
        for t in ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "double", "boolean")
    ]
    + [{"dataType": "int", "limit": n} for n in (1, 2, 4)]
    + [{"dataType": "float", "limit": n} for n in (1, 2, 4)]
)


@pytest.mark.parametrize("config", DATA_TYPES, ids=lambda c: f"{c['dataType']}{c.get('limit', '')}")
async def test_compiled_decoders_agree_with_the_reference_decoding(config: dict[str, Any]) -> None:
    """The per-visitor decoders (built once, used every cycle) give what the step-by-step decoding gives.

    Edge registers (sign bits, all ones, NaN and infinity patterns) and random ones, every swap and scale.
    """
    import math
    import random

    from mappers.modbus.codec import compile_decoder, decode_general

    rng = random.Random(20261203)
    edges = [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x7F80, 0xFF80, 0x7FF0]
    for (byte_swap, word_swap), scale in [(s, k) for s in SWAPS for k in SCALES]:
        v = visitor("HoldingRegister", 0, scale=scale, isSwap=byte_swap, isRegisterSwap=word_swap, **config)
        fast = compile_decoder(v)
        samples = [[e] * v.count for e in edges] + [[rng.randrange(65536) for _ in range(v.count)] for _ in range(300)]
        for regs in samples:
            want, got = decode_general(v, regs), fast(regs)
            assert type(got) is type(want), (v, regs, want, got)
            if isinstance(want, float) and math.isnan(want):
                assert math.isnan(got), (v, regs, got)
            else:
                assert got == want, (v, regs, want, got)


async def test_writes_refuse_what_could_never_be_read_back_and_booleans_fit_numeric_registers() -> None:
    from mapper_framework.values import PropertyValueError
    from mappers.modbus.codec import CodecError, encode_bits, encode_registers

    for data_type in ("float32", "float64", "int16"):
        v = visitor("HoldingRegister", 0, dataType=data_type)
        for bad in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(CodecError, match="is not a finite number"):
                encode_registers(v, bad)
    with pytest.raises(CodecError, match="is not a finite number"):
        encode_bits(visitor("CoilRegister", 0, dataType="int", limit=4), float("nan"))
    # A value error, not a device error: the REST API answers 400 and a desired value is not retried.
    assert issubclass(CodecError, PropertyValueError)

    # A BOOLEAN property on a holding register (dataType int) or on a coil bit field: written as 1 / 0.
    numeric = visitor("HoldingRegister", 0)
    assert encode_registers(numeric, True) == [1] and encode_registers(numeric, False) == [0]
    assert encode_bits(visitor("CoilRegister", 0, dataType="int", limit=2), True) == [True, False]


async def test_an_integer_scale_keeps_64_bit_values_exact() -> None:
    from mappers.modbus.codec import decode_general, decode_registers

    raw = 1234567890123456789
    registers = [raw >> 48 & 0xFFFF, raw >> 32 & 0xFFFF, raw >> 16 & 0xFFFF, raw & 0xFFFF]
    v = visitor("HoldingRegister", 0, dataType="uint64", scale=10)
    assert decode_registers(v, registers) == raw * 10 == decode_general(v, registers)
