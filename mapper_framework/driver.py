"""The driver contract: the one part of a mapper its author writes.

A driver talks to one device. The SDK creates it with the device's typed
protocol config, calls ``connect``, then ``read``/``write`` with each
property's typed visitor config, polls ``state`` and finally ``close``.
Everything else (cycles, twins, reports, desired values, reconnects to the
agent) is the SDK's job.

Blocking drivers (GPIO, vendor libraries) implement :class:`BlockingDriver`
and are wrapped by :class:`ThreadedDriver`, which runs every call on one
worker thread per device, in order, off the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

P = TypeVar("P")
V = TypeVar("V")

STATE_OK = "ok"


class ConfigError(ValueError):
    """configData that does not fit the shape the driver declared."""


class Driver(ABC, Generic[P, V]):
    """Base class of async drivers. ``P`` and ``V`` are the driver's protocol and visitor config dataclasses."""

    protocol_config: ClassVar[type[Any]]
    visitor_config: ClassVar[type[Any]]
    # True when ``state`` answers at once and every read is bounded by a timeout: the SDK then probes the state
    # right after the collect round of the same cycle instead of on a timer of its own, one wake-up per device and
    # cycle instead of two (it counts at a thousand devices). Leave it False when either can block for long: a
    # hung read would then hold up the state reports too.
    probe_after_reads: ClassVar[bool] = False

    @abstractmethod
    async def connect(self, config: P) -> None:
        """Open the connection to the device (called once, and again after ``close`` on a device update)."""

    @abstractmethod
    async def read(self, visitor: V) -> Any:
        """Read one property; return a Python value (the SDK converts it to the model type)."""

    async def read_many(self, visitors: Sequence[V]) -> list[Any]:
        """Read several properties that fall due together; override to coalesce requests.

        Return one result per visitor, in order; an Exception in place of a value marks that property failed.
        """
        results: list[Any] = []
        for visitor in visitors:
            try:
                results.append(await self.read(visitor))
            except Exception as exc:  # reported per property by the SDK
                results.append(exc)
        return results

    async def write(self, visitor: V, value: Any) -> None:
        """Write a desired value (already parsed to the model type). Drivers of read-only devices keep this."""
        raise NotImplementedError("this driver cannot write")

    async def state(self) -> str:
        """The device state: ok, online, offline, unhealthy or unknown."""
        return STATE_OK

    def frames(self, visitor: V) -> AsyncIterator[bytes]:
        """Live JPEG frames of a stream property, for local consumers (the REST API's MJPEG stream).

        Each iteration yields the newest frame; a slow consumer skips frames rather than slowing the source or
        other consumers. Drivers of devices without video keep this default.
        """
        raise StreamNotSupported("this device offers no frame stream")

    async def close(self) -> None:
        """Release the connection."""


class StreamNotSupported(Exception):
    """The property (or the whole driver) has no frame stream."""


class BlockingDriver(ABC, Generic[P, V]):
    """The same contract with plain methods, for libraries that block."""

    protocol_config: ClassVar[type[Any]]
    visitor_config: ClassVar[type[Any]]

    @abstractmethod
    def connect(self, config: P) -> None: ...

    @abstractmethod
    def read(self, visitor: V) -> Any: ...

    def write(self, visitor: V, value: Any) -> None:
        raise NotImplementedError("this driver cannot write")

    def state(self) -> str:
        return STATE_OK

    def close(self) -> None:
        return None


class ThreadedDriver(Driver[P, V]):
    """Runs a :class:`BlockingDriver` on its own single worker thread (calls stay ordered)."""

    def __init__(self, inner: BlockingDriver[P, V]) -> None:
        self.inner = inner
        self.protocol_config = inner.protocol_config  # type: ignore[misc]
        self.visitor_config = inner.visitor_config  # type: ignore[misc]
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=type(inner).__name__)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    async def connect(self, config: P) -> None:
        await self._run(self.inner.connect, config)

    async def read(self, visitor: V) -> Any:
        return await self._run(self.inner.read, visitor)

    async def write(self, visitor: V, value: Any) -> None:
        await self._run(self.inner.write, visitor, value)

    async def state(self) -> str:
        return str(await self._run(self.inner.state))

    async def close(self) -> None:
        try:
            await self._run(self.inner.close)
        finally:
            self._pool.shutdown(wait=False)


# --------------------------------------------------------------------------- typed config


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        errors = []
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: unexpected value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        # edgecore sends every number as float32: an integral float is an int.
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # Resolving string annotations is slow, and a fleet parses the same few config classes thousands of times.
    return typing.get_type_hints(cls)


def parse_config(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    """Build the driver's config dataclass ``cls`` from decoded configData.

    Keys are matched exactly (configData uses camelCase, as in KubeEdge CRs: name the dataclass fields the
    same). A ``__post_init__`` that raises ``ConfigError("field: message")`` gets the same prefix. Unknown keys
    are ignored; missing required keys and wrong types raise :class:`ConfigError`
    naming ``where`` (e.g. ``device default/boiler-1 property temperature``) and the key.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass")
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue  # derived in __post_init__, never taken from configData
        if f.name in data:
            try:
                kwargs[f.name] = _coerce(data[f.name], hints[f.name], f.name)
            except ConfigError as exc:
                raise ConfigError(f"{where}: configData.{exc}") from None
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: configData.{f.name} is required")
    try:
        # A dataclass may check combinations in __post_init__ and raise ConfigError("field: message").
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: configData.{exc}") from None
