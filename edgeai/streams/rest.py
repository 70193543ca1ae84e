"""Property values polled from a mapper's REST API: ``GET {base}/api/v1/device/{ns}/{device}/{property}``.

Our mapper answers ``{"namespace", "name", "property", "value", "type", "timestamp", "stale", ...}``; KubeEdge's
Go mapper-framework answers ``{"Data": {"Value", "TimeStamp", ...}, ...}``: both are read. Polling cannot see
every value a device had, only the latest at each poll, so a record is yielded only when a property's timestamp
moved on since the last one seen; the same reading polled twice is one record. Answers the mapper flags
``stale`` (the last read failed, or nothing was read yet) are counted in ``stats.stale`` and not yielded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from edgeai.streams._backoff import Backoff, Stopper
from edgeai.streams.records import PropertyRef, StreamRecord, StreamStats, scrub, value_text

if TYPE_CHECKING:
    import aiohttp


class _Down(Exception):
    """The mapper could not be reached (as opposed to an error answer from it)."""


class RestPollSource:
    """Records of ``properties`` polled every ``interval_s`` from the mapper at ``base_url`` (``http://host:port``).

    All properties are polled concurrently each round. HTTP errors and unreachable mappers go to ``stats`` with
    the URL, never raised; while the mapper is unreachable, rounds back off up to ``max_backoff_s``.
    """

    def __init__(
        self,
        base_url: str,
        properties: Sequence[PropertyRef],
        interval_s: float = 1.0,
        *,
        timeout_s: float = 5.0,
        max_backoff_s: float = 10.0,
    ) -> None:
        if not properties:
            raise ValueError("RestPollSource needs at least one property to poll")
        base = base_url.rstrip("/")
        if base.endswith("/api/v1"):  # accept the API root as well as the server's
            base = base[: -len("/api/v1")]
        self.base_url = base
        self.properties = tuple(properties)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stats = StreamStats()
        self._backoff = Backoff(interval_s, max(interval_s, max_backoff_s))
        self._stopper = Stopper()
        self._last: dict[PropertyRef, int] = {}

    def url_of(self, ref: PropertyRef) -> str:
        """The REST URL of one property."""
        parts = (quote(part, safe="") for part in (ref.namespace, ref.device, ref.property))
        return f"{self.base_url}/api/v1/device/" + "/".join(parts)

    async def records(self) -> AsyncIterator[StreamRecord]:
        """Poll until :meth:`close`, yielding each new reading."""
        import aiohttp  # loaded only by workers that poll

        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stopper.stopped:
                outcomes = await asyncio.gather(*(self._poll(session, ref) for ref in self.properties))
                reachable = False
                for outcome in outcomes:
                    if isinstance(outcome, _Down):
                        continue
                    reachable = True
                    if outcome is not None and not self._stopper.stopped:
                        yield outcome
                self.stats.connected = reachable
                if reachable:
                    self._backoff.reset()
                    await self._stopper.pause(self.interval_s)
                else:
                    await self._stopper.pause(self._backoff.next())

    async def close(self) -> None:
        """End ``records()`` at its next poll (an answer in flight is awaited, for at most ``timeout_s``)."""
        self._stopper.stop()

    async def _poll(self, session: aiohttp.ClientSession, ref: PropertyRef) -> StreamRecord | _Down | None:
        import aiohttp

        url = self.url_of(ref)
        try:
            async with session.get(url) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.stats.failed(f"GET {scrub(url)}: {_describe(exc)}")
            return _Down()
        if status != 200:
            self.stats.failed(f"GET {scrub(url)}: HTTP {status}: {_error_text(body)}")
            return None
        self.stats.received += 1
        try:
            value, stamp, stale = _reading(json.loads(body))
        except (ValueError, TypeError, KeyError) as exc:
            self.stats.ignored += 1
            self.stats.last_error = f"GET {scrub(url)}: unusable answer ({exc}): {body[:120]!r}"
            return None
        if stale:
            self.stats.stale += 1
            return None
        if stamp <= self._last.get(ref, -1):
            return None  # the same reading as last time
        self._last[ref] = stamp
        self.stats.last_record_ms = stamp
        return StreamRecord(ref.namespace, ref.device, ref.property, value, stamp)


def _reading(answer: Any) -> tuple[str, int, bool]:
    """(value, timestamp ms, stale) of one answer, ours or the Go mapper's."""
    if not isinstance(answer, dict):
        raise TypeError(f"a JSON {type(answer).__name__}, not an object")
    data = answer.get("Data")
    if isinstance(data, dict):  # Go mapper-framework: {"Data": {"Value": ..., "TimeStamp": ...}}
        value, stamp, stale = value_text(data.get("Value")), data.get("TimeStamp"), False
    else:
        value, stamp, stale = value_text(answer.get("value")), answer.get("timestamp"), bool(answer.get("stale"))
    if stale:
        return "", 0, True
    if value is None:
        raise KeyError("no value")
    if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp <= 0:
        return "", 0, True  # never read: nothing to hand on
    return value, stamp, False


def _error_text(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace").strip() or "no body"
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    return json.dumps(answer)[:200]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__
