"""Registers <-> values, for every dataType and swap option.

The decoding, exactly (registers as the device sends them, r0 first):

1. ``isRegisterSwap`` reverses the order of the value's registers (numbers only): a 32-bit value stored low word
   first (``CDAB``) reads right with it set.
2. The registers become bytes, each register big endian (high byte first), as the Modbus spec sends them.
3. ``isSwap`` swaps the two bytes inside every register (``BADC``; both options together give ``DCBA``).
4. The bytes decode big endian as the dataType: ``int16``/``uint16`` (1 register), ``int32``/``uint32``/``float32``
   (2), ``int64``/``uint64``/``float64`` (4); ``int`` is signed and ``float``/``double`` are IEEE floats, their width
   taken from ``limit`` (a one-register ``float``/``double`` is an ``int16`` to be scaled, as in KubeEdge's
   samples); ``boolean`` is "register is not 0"; ``string`` is UTF-8 with trailing NULs and spaces cut;
   ``bytes`` are the raw bytes.
5. ``scale`` multiplies numbers (not 1 only when set). Results are rounded to the precision the scale implies
   (raw 215 x scale 0.1 -> 21.5, never 21.500000000000004), and float32 values to the shortest decimal that
   gives the same float32 back (21.3, not 21.299999237060547).

Coils and discrete inputs: ``boolean`` is one bit; ``int`` reads ``limit`` bits as an unsigned number, the
first bit (lowest address) the least significant.

Writes go the other way: value / scale, rounded to the integer types, checked against the type's range, then
encoded and swapped as above.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from dmi.anypack import shortest_float32
from mapper_framework.values import PropertyValueError
from mappers.modbus.config import ModbusVisitorConfig

_STRUCT = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}
_INT_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


class CodecError(PropertyValueError):
    """A value that cannot be encoded into (or decoded from) the property's registers. A value error, not a
    device error: the REST API answers 400 for it, and a desired value that raises it is not retried."""


def _to_bytes(registers: list[int], visitor: ModbusVisitorConfig, numeric: bool) -> bytes:
    regs = list(reversed(registers)) if visitor.isRegisterSwap and numeric else registers
    data = b"".join((r & 0xFFFF).to_bytes(2, "big") for r in regs)
    if visitor.isSwap:
        data = bytes(b for i in range(0, len(data), 2) for b in (data[i + 1], data[i]))
    return data


def _from_bytes(data: bytes, visitor: ModbusVisitorConfig, numeric: bool) -> list[int]:
    if visitor.isSwap:
        data = bytes(b for i in range(0, len(data), 2) for b in (data[i + 1], data[i]))
    regs = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return list(reversed(regs)) if visitor.isRegisterSwap and numeric else regs


def _scaled(value: int | float, scale: float) -> int | float:
    if scale == 1:
        return value
    if isinstance(value, int) and float(scale).is_integer():
        return value * int(scale)  # in integers: a float product loses 64-bit values
    result = value * scale
    exponent = Decimal(repr(float(scale))).normalize().as_tuple().exponent
    decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if isinstance(value, int):
        return round(result, decimals)
    return float(f"{result:.15g}")


def decode_registers(visitor: ModbusVisitorConfig, registers: list[int]) -> Any:
    """The value of a register-table property from its ``visitor.count`` registers."""
    decoder = visitor.decoder
    if decoder is None:
        if visitor.kind not in _STRUCT:
            return decode_general(visitor, registers)  # booleans and text: nothing to precompute
        decoder = visitor.decoder = compile_decoder(visitor)
    return decoder(registers)


def compile_decoder(visitor: ModbusVisitorConfig) -> Callable[[list[int]], Any]:
    """A function that decodes this visitor's registers as :func:`decode_general` does, with the choices made once.

    A mapper decodes every property every cycle, and its settings never change: the swaps become the byte order
    of one precompiled ``struct`` (``isSwap`` is each register little endian), and the scale's rounding is worked
    out here instead of on every read.
    """
    kind = visitor.kind
    if kind not in _STRUCT:
        return functools.partial(decode_general, visitor)
    scale = _scaler(visitor.scale, integer=kind in _INT_RANGE)
    if kind == "int16" and not visitor.isSwap:

        def int16(registers: list[int]) -> Any:
            raw = registers[0] & 0xFFFF
            return scale(raw - 0x10000 if raw & 0x8000 else raw)

        return int16
    if kind == "uint16" and not visitor.isSwap:
        return lambda registers: scale(registers[0] & 0xFFFF)
    count = visitor.count
    pack = struct.Struct(("<" if visitor.isSwap else ">") + "H" * count).pack
    unpack = struct.Struct(_STRUCT[kind]).unpack
    reverse = visitor.isRegisterSwap
    narrow = kind == "float32"

    def numeric(registers: list[int]) -> Any:
        regs = registers[count - 1 :: -1] if reverse else registers[:count]
        value = unpack(pack(*[r & 0xFFFF for r in regs]))[0]
        return scale(shortest_float32(value) if narrow else value)

    return numeric


def _scaler(scale: float, integer: bool) -> Callable[[Any], Any]:
    """:func:`_scaled` for one scale, its rounding precomputed (``integer``: the raw values are ints)."""
    if scale == 1:
        return _same
    if integer and float(scale).is_integer():
        whole = int(scale)
        return lambda value: value * whole
    if integer:
        exponent = Decimal(repr(float(scale))).normalize().as_tuple().exponent
        decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        return lambda value: round(value * scale, decimals)
    return lambda value: float(f"{value * scale:.15g}")


def _same(value: Any) -> Any:
    return value


def decode_general(visitor: ModbusVisitorConfig, registers: list[int]) -> Any:
    """The reference decoding, step by step as the module docstring says (the compiled decoders must agree)."""
    kind = visitor.kind
    if kind == "boolean":
        return registers[0] != 0
    if kind in ("string", "bytes"):
        data = _to_bytes(registers, visitor, numeric=False)
        if kind == "bytes":
            return data
        return data.decode("utf-8", errors="replace").rstrip("\x00 ")
    data = _to_bytes(registers, visitor, numeric=True)
    value: int | float = struct.unpack(_STRUCT[kind], data)[0]
    if kind == "float32":
        value = shortest_float32(value)
    return _scaled(value, visitor.scale)


def decode_bits(visitor: ModbusVisitorConfig, bits: list[bool]) -> Any:
    """The value of a coil or discrete-input property from its ``visitor.count`` bits."""
    if visitor.kind == "bit":
        return bool(bits[0])
    number = sum(1 << i for i, bit in enumerate(bits[: visitor.count]) if bit)
    return _scaled(number, visitor.scale)


def encode_registers(visitor: ModbusVisitorConfig, value: Any) -> list[int]:
    """The registers that hold ``value`` (already parsed to the model type) for a holding-register write."""
    kind = visitor.kind
    if kind == "boolean":
        return [1 if _truth(value) else 0]
    if kind in ("string", "bytes"):
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        size = visitor.count * 2
        if len(data) > size:
            raise CodecError(f"{len(data)} bytes do not fit {visitor.count} registers ({size} bytes)")
        return _from_bytes(data.ljust(size, b"\x00"), visitor, numeric=False)
    if isinstance(value, bool) and kind in _INT_RANGE:
        value = int(value)  # a BOOLEAN property on a numeric register: 1 or 0, as it reads back
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(f"{value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        # The registers would take it, but the property could then never be read back as a reportable value.
        raise CodecError(f"{value!r} is not a finite number")
    raw: int | float = value / visitor.scale if visitor.scale != 1 else value
    if kind in _INT_RANGE:
        if isinstance(raw, float):
            raw = round(raw)
        low, high = _INT_RANGE[kind]
        if not low <= raw <= high:
            raise CodecError(f"{value} (raw {raw}) is outside the {kind} range {low}..{high}")
    elif kind == "float32" and abs(raw) > 3.4028234663852886e38:
        raise CodecError(f"{value} is outside the float32 range")
    return _from_bytes(struct.pack(_STRUCT[kind], raw), visitor, numeric=True)


def encode_bits(visitor: ModbusVisitorConfig, value: Any) -> list[bool]:
    """The bits that hold ``value`` for a coil write."""
    if visitor.kind == "bit":
        return [_truth(value)]
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float):
        raise CodecError(f"{value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"{value!r} is not a finite number")
    raw = round(value / visitor.scale)
    if not 0 <= raw < 2**visitor.count:
        raise CodecError(f"{value} does not fit a bit field of {visitor.count} bits")
    return [bool(raw >> i & 1) for i in range(visitor.count)]


def _truth(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "on", "yes")
    return bool(value)
