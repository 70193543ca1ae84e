"""Retry pacing shared by the sources: doubling delays, and sleeps that a close() cuts short."""

from __future__ import annotations

import asyncio
import contextlib


class Backoff:
    """Delays ``first``, ``2*first``, ... up to ``maximum``; ``reset()`` after a success."""

    def __init__(self, first: float, maximum: float) -> None:
        self.first = first
        self.maximum = max(first, maximum)
        self._next = first

    def next(self) -> float:
        """The delay to wait now; the following one doubles."""
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from ``first``."""
        self._next = self.first


class Stopper:
    """A source's "closing" flag. Its event is made on first use, inside the loop that runs the source."""

    def __init__(self) -> None:
        self.stopped = False
        self._event: asyncio.Event | None = None

    def _get(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
            if self.stopped:
                self._event.set()
        return self._event

    def stop(self) -> None:
        """Mark closing and wake any :meth:`pause`."""
        self.stopped = True
        if self._event is not None:
            self._event.set()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if :meth:`stop` is called meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._get().wait(), seconds)
