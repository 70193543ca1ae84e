"""Drivers for benchmarks: no I/O, so what is measured is the SDK's own path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mapper_framework.driver import Driver


@dataclass
class CounterProtocol:
    slaveID: int = 0


@dataclass
class CounterVisitor:
    offset: int = 0


class CounterDriver(Driver[CounterProtocol, CounterVisitor]):
    """Each property counts its own reads: values always change, and the count is the number of reads."""

    protocol_config = CounterProtocol
    visitor_config = CounterVisitor

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    async def connect(self, config: CounterProtocol) -> None:
        return None

    async def read(self, visitor: CounterVisitor) -> Any:
        n = self._counts.get(visitor.offset, 0) + 1
        self._counts[visitor.offset] = n
        return n
