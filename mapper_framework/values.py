"""Property values: driver results -> twin strings, and twin strings -> typed values for writes.

Twins travel as strings. edgecore drops any value outside ``^[a-zA-Z0-9-_.,:/@#]{1,512}$``,
so numbers are formatted plainly (``-350``, never ``-3.5e+2``) and the model type decides
the form: INT -> integer text, FLOAT/DOUBLE -> shortest round-trip decimal, BOOLEAN ->
``true``/``false``, BYTES -> unpadded base64url (plain base64's ``+`` and ``=`` would be dropped).
"""

from __future__ import annotations

import base64
import functools
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

TWIN_VALUE = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,512}$")
TYPES = ("int", "float", "double", "string", "boolean", "bytes", "stream")
_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


class PropertyValueError(ValueError):
    """A value that does not fit the property's type."""


def model_type(raw: str) -> str:
    """The lower-case twin metadata type for a DeviceModel property type (``FLOAT`` -> ``float``)."""
    lowered = raw.lower()
    return lowered if lowered in TYPES else "string"


def _plain_number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise PropertyValueError(f"{value} cannot be reported (not a finite number)")
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


def format_value(value: Any, type_: str) -> str:
    """Format a driver's value as the twin string for a property of ``type_`` (lower case)."""
    if type_ == "boolean":
        return "true" if _as_bool(value) else "false"
    if type_ == "int":
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, float):
            if not value.is_integer():
                raise PropertyValueError(f"{value} is not an integer")
            return str(int(value))
        return str(int(value))
    if type_ in ("float", "double"):
        return _plain_number(float(value))
    if type_ == "bytes":
        data = bytes(value) if not isinstance(value, str) else value.encode()
        # base64url without padding keeps to edgecore's twin alphabet ('-' and '_' are allowed, '+' '=' are not).
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    return str(value)


def _int_text(value: Any) -> str:
    # Drivers mostly hand over plain ints: one type check instead of format_value's chain.
    return str(value) if type(value) is int else format_value(value, "int")


def formatter(type_: str) -> Callable[[Any], str]:
    """``format_value`` for one property type, chosen once (a collect loop formats every value every cycle)."""
    if type_ == "int":
        return _int_text
    if type_ in ("float", "double"):
        return lambda value: _plain_number(float(value))
    return functools.partial(_format_as, type_)


def _format_as(type_: str, value: Any) -> str:
    return format_value(value, type_)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise PropertyValueError(f"{value!r} is not a boolean (true/false)")
    return bool(value)


def parse_value(text: str, type_: str) -> Any:
    """A desired value (a string from the CR or the REST API) as the Python value a driver writes."""
    try:
        if type_ == "int":
            prefixed = text.strip().lower().lstrip("+-")[:2] in ("0x", "0o", "0b")
            number = float(text) if not prefixed and any(c in text for c in ".eE") else int(text, 0)
            if isinstance(number, float):
                if not number.is_integer():
                    raise PropertyValueError(f"{text!r} is not an integer")
                return int(number)
            return number
        if type_ in ("float", "double"):
            return float(text)
        if type_ == "boolean":
            return _as_bool(text)
        if type_ == "bytes":
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        if isinstance(exc, PropertyValueError):
            raise
        raise PropertyValueError(f"{text!r} is not a valid {type_}") from None
    return text


def reportable(text: str) -> bool:
    """Whether edgecore accepts this twin value (empty values are exempt)."""
    return not text or bool(TWIN_VALUE.match(text))
