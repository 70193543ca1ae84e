"""``configData`` values: Python scalars <-> ``google.protobuf.Any`` of wrapper types.

KubeEdge carries free-form configuration as ``map<string, Any>`` where each Any
holds one ``google.protobuf`` wrapper. Two packing styles exist:

* ``edgecore`` (our default, what real edgecore sends): strings -> StringValue,
  every number -> FloatValue (float32), bools -> BoolValue.
* ``typed``: ints -> Int64Value, floats -> DoubleValue. Only for peers known to
  decode them: the stock Go mapper silently drops DoubleValue.

Nested maps and lists have no wrapper; edgecore leaves such a device out
entirely. We instead send them as a JSON text in a StringValue (our extension)
and decode JSON objects/arrays back when converting to a CR.

Decoding accepts every wrapper type, by type URL.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any, Literal

from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import DecodeError

Packing = Literal["edgecore", "typed"]
Scalar = str | int | float | bool | bytes

_PREFIX = "type.googleapis.com/google.protobuf."
_WRAPPERS: dict[str, type[Any]] = {
    "StringValue": wrappers_pb2.StringValue,
    "BytesValue": wrappers_pb2.BytesValue,
    "BoolValue": wrappers_pb2.BoolValue,
    "Int32Value": wrappers_pb2.Int32Value,
    "Int64Value": wrappers_pb2.Int64Value,
    "UInt32Value": wrappers_pb2.UInt32Value,
    "UInt64Value": wrappers_pb2.UInt64Value,
    "FloatValue": wrappers_pb2.FloatValue,
    "DoubleValue": wrappers_pb2.DoubleValue,
}


class AnyDecodeError(ValueError):
    """An Any that is not a google.protobuf wrapper, or whose bytes do not parse."""


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def pack_value(value: Any, packing: Packing = "edgecore") -> any_pb2.Any | None:
    """Pack one configData value; ``None`` (a YAML null) yields None: the key is left out."""
    if value is None:
        return None
    if isinstance(value, bool):  # before int: bool is an int subclass
        return _pack(wrappers_pb2.BoolValue(value=value))
    if isinstance(value, str):
        return _pack(wrappers_pb2.StringValue(value=value))
    if isinstance(value, bytes):
        return _pack(wrappers_pb2.BytesValue(value=value))
    if isinstance(value, int):
        if packing == "typed":
            return _pack(wrappers_pb2.Int64Value(value=value))
        return _pack(wrappers_pb2.FloatValue(value=float(value)))
    if isinstance(value, float):
        if packing == "typed":
            return _pack(wrappers_pb2.DoubleValue(value=value))
        return _pack(wrappers_pb2.FloatValue(value=value))
    if isinstance(value, Mapping | list | tuple):
        return _pack(wrappers_pb2.StringValue(value=json.dumps(value, separators=(",", ":"), sort_keys=True)))
    raise TypeError(f"cannot pack {type(value).__name__} into a configData value")


def pack_map(data: Mapping[str, Any], packing: Packing = "edgecore") -> dict[str, any_pb2.Any]:
    """Pack a configData mapping; null values are left out."""
    out: dict[str, any_pb2.Any] = {}
    for key, value in data.items():
        packed = pack_value(value, packing)
        if packed is not None:
            out[str(key)] = packed
    return out


def wrapper_name(packed: any_pb2.Any) -> str:
    """``StringValue``, ``FloatValue``, ... from the type URL ('' if not a wrapper)."""
    url = packed.type_url
    return url[len(_PREFIX) :] if url.startswith(_PREFIX) and url[len(_PREFIX) :] in _WRAPPERS else ""


def unpack_value(packed: any_pb2.Any) -> Scalar:
    """Decode one wrapper-packed Any to a Python scalar (float32 values rounded to their shortest form)."""
    name = wrapper_name(packed)
    if not name:
        raise AnyDecodeError(f"unsupported configData type {packed.type_url!r}: expected a google.protobuf wrapper")
    message = _WRAPPERS[name]()
    try:
        message.ParseFromString(packed.value)
    except DecodeError as exc:
        raise AnyDecodeError(f"corrupt {name}: {exc}") from exc
    value = message.value
    if name == "FloatValue":
        return shortest_float32(float(value))
    return value  # type: ignore[no-any-return]


def unpack_map(data: Mapping[str, any_pb2.Any]) -> dict[str, Scalar]:
    return {key: unpack_value(value) for key, value in data.items()}


def shortest_float32(value: float) -> float:
    """The shortest decimal that rounds to the same float32 (``0.1`` stays 0.1, not 0.10000000149)."""
    if not math.isfinite(value):
        return value
    target = struct.pack("<f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.pack("<f", candidate) == target:
                return candidate
        except OverflowError:
            continue  # near float32's limit a short decimal can round past it (-3.4e38 for -3.4027975e38)
    return value


def to_cr_value(value: Scalar) -> Any:
    """A decoded scalar as a CR would hold it: integral floats become ints, JSON texts of
    objects/arrays (our nested-value extension) become the structure again."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, dict | list):
            return parsed
    return value
