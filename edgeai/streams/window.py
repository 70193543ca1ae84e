"""From property records to model inputs: rows of feature values, then count or time windows over the rows.

A *row* holds one number per feature property, in the order the spec lists them, with a label. Rows line up by
timestamp: a mapper stamps every property of one collect round alike, so a row is the features of one round,
and a label stamped like them is that round's label. A label stamped otherwise (another device, another cycle)
is the newest one stamped at or before the row. A source whose features never share timestamps falls back to
rows of the latest values (see :class:`RowAssembler`). Records not newer than the last row (a retained MQTT
message delivered again on reconnect, say) are skipped.

Values go through ``float()`` (``true``/``false`` of BOOLEAN properties count as 1 and 0); a value that is not
a finite number is *rejected*: counted in ``stats.rejected`` with the reason in ``stats.last_error``, never
raised, so one bad reading cannot stop a worker.

Windows are driven by record timestamps only, never by the wall clock, so a replayed stream gives the same
samples as the live one.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edgeai.streams.records import PropertyRef, StreamRecord, StreamStats

if TYPE_CHECKING:
    from edgeai.streams.sources import Source
    from edgeai.streams.spec import StreamSpec


@dataclass(eq=False)
class Sample:
    """One model input.

    ``features``: float64 vector for tabular streams (see the window classes for its layout), the RGB frame
    (height, width, 3, uint8) for video. ``label``: the label property's latest value, if the spec names one.
    ``timestamp``: the newest record in the sample (ms since the epoch). ``rows``: how many rows it covers.
    """

    features: NDArray[Any]
    label: str | None
    timestamp: int
    rows: int


@dataclass(frozen=True)
class Row:
    """One complete set of feature values, the label at that moment, and the newest record timestamp in it."""

    values: tuple[float, ...]
    label: str | None
    timestamp: int


class Window(Protocol):
    """What :func:`windowed` needs of a window: records in, finished samples out."""

    stats: StreamStats

    def add(self, record: StreamRecord) -> list[Sample]:
        """Take one record; return the samples it completes (often none)."""
        ...


class RowAssembler:
    """Builds :class:`Row` objects from records of ``features`` (in that order), with ``label``'s value.

    Rows are aligned by timestamp: a mapper stamps every property of one collect round alike, so a row is the
    feature values that carry the same timestamp. Its label is the label property's value *as of* that timestamp
    (its newest record not newer than the row). When the label is read with the features (same device) and has
    come with them (at their timestamp) in the last few rounds, a completed row waits for its own round's label,
    so that a label arriving just after the features is not paired with the previous reading; a round without
    its label ends the waiting.

    When a source's features never share timestamps (different collect cycles, several devices), rounds keep
    being abandoned: a feature moves on to a newer timestamp before the others arrive. Once abandoned rounds
    outnumber aligned rows (after a few of them), the assembler switches for good to *latest* rows: a row whenever
    every feature has a record newer than the one it gave to the previous row.
    """

    #: timestamps remembered per property (enough to wait out a REST poll that straddles a collect round)
    KEEP = 16
    #: abandoned rounds tolerated before switching to latest rows
    SLACK = 8
    #: rounds in a row with the label alongside before a row waits for its label
    LABEL_STREAK = 3

    def __init__(self, features: Sequence[PropertyRef], label: PropertyRef | None = None) -> None:
        if not features:
            raise ValueError("a window needs at least one feature property")
        self.features = tuple(features)
        self.label = label
        self.stats = StreamStats()
        self._index = {ref: i for i, ref in enumerate(self.features)}
        devices = {(ref.namespace, ref.device) for ref in self.features}
        self._label_local = (
            label is not None and label not in self._index and devices == {(label.namespace, label.device)}
        )
        self._seen: dict[PropertyRef, dict[int, Any]] = {ref: {} for ref in self.features}
        if label is not None and label not in self._index:
            self._seen[label] = {}
        self._last_row: int | None = None
        self._used: list[int | None] = [None] * len(self.features)
        self._label_value: str | None = None
        self._open: int | None = None  # the newest feature timestamp whose round is not complete yet
        self._waiting: int | None = None  # a complete row waiting for its round's label
        self._streak = 0
        self.aligned = 0
        self.abandoned = 0
        self.latest_mode = False

    def add(self, record: StreamRecord) -> list[Row]:
        """Take one record; return the rows it completes (at most one)."""
        row = self._add(record)
        return [] if row is None else [row]

    def _add(self, record: StreamRecord) -> Row | None:
        ref = record.ref
        if ref not in self._seen:
            return None  # the source was asked for more than this window uses
        stamp = record.timestamp
        is_label = ref == self.label and ref not in self._index
        if is_label:
            if not isinstance(record.value, str):
                return None
            value: Any = record.value
            self._label_value = record.value
        else:
            number = self._number(ref, record.value)
            if number is None:
                return None
            value = number
        seen = self._seen[ref]
        seen[stamp] = value
        if len(seen) > self.KEEP:
            del seen[min(seen)]
        if self._waiting is not None:
            if is_label and stamp == self._waiting:
                self._streak += 1
                return self._emit(self._waiting)
            if stamp > self._waiting:
                self._streak = 0  # the label did not come with this round: stop waiting for labels
                return self._emit(self._waiting)
            return None
        if is_label:
            if stamp == self._last_row:
                # The label of a row already given out came just after its features: from now on rows wait for it.
                self._streak += 1
            return None
        if self.latest_mode:
            return self._latest()
        if self._last_row is not None and stamp <= self._last_row:
            return None
        if self._open is not None and stamp > self._open and not self._complete(self._open):
            self.abandoned += 1
            if self.abandoned > self.SLACK and self.abandoned > self.aligned:
                self.latest_mode = True
                return self._latest()
        if self._open is None or stamp > self._open:
            self._open = stamp
        for t in sorted(t for t in seen if self._last_row is None or t > self._last_row):
            if self._complete(t):
                if self._label_local and self.label is not None and t not in self._seen[self.label]:
                    if self._streak >= self.LABEL_STREAK:
                        self._waiting = t
                        return None
                elif self._label_local:
                    self._streak += 1
                return self._emit(t)
        return None

    def _complete(self, stamp: int) -> bool:
        return all(stamp in self._seen[ref] for ref in self.features)

    def _label_at(self, stamp: int) -> str | None:
        if self.label is None:
            return None
        if self.label in self._index:
            value = self._seen[self.label].get(stamp)
            return None if value is None else f"{value:g}"
        known = [t for t in self._seen[self.label] if t <= stamp]
        return self._seen[self.label][max(known)] if known else self._label_value

    def _emit(self, stamp: int) -> Row:
        values = tuple(float(self._seen[ref][stamp]) for ref in self.features)
        self._last_row = stamp
        self._used = [stamp] * len(self.features)
        self._open = None
        self._waiting = None
        self.aligned += 1
        return Row(values, self._label_at(stamp), stamp)

    def _latest(self) -> Row | None:
        newest: list[tuple[float, int]] = []
        for j, feature in enumerate(self.features):
            seen = self._seen[feature]
            if not seen:
                return None
            t = max(seen)
            used = self._used[j]
            if used is not None and t <= used:
                return None
            newest.append((float(seen[t]), t))
        self._used = [t for _, t in newest]
        stamp = max(t for _, t in newest)
        self._last_row = stamp
        return Row(tuple(v for v, _ in newest), self._label_at(stamp), stamp)

    def _number(self, ref: PropertyRef, value: object) -> float | None:
        if not isinstance(value, str):
            self._reject(f"{ref}: a video frame is not a number; frames are not windowed")
            return None
        text = value.strip()
        lowered = text.lower()
        if lowered in ("true", "false"):
            return 1.0 if lowered == "true" else 0.0
        try:
            number = float(text)
        except ValueError:
            self._reject(f"{ref}: value {value!r} is not a number")
            return None
        if not math.isfinite(number):
            self._reject(f"{ref}: value {value!r} is not a finite number")
            return None
        return number

    def _reject(self, message: str) -> None:
        self.stats.rejected += 1
        self.stats.last_error = message


class CountWindow:
    """The last ``size`` rows, emitted every ``step`` rows once ``size`` rows exist.

    ``features`` of a sample: the rows flattened oldest first, ``[r1f1, r1f2, ..., rNf1, rNf2]``, shape
    ``(size * F,)``; its label and timestamp are those of the newest row.
    """

    def __init__(
        self,
        features: Sequence[PropertyRef],
        size: int,
        step: int = 1,
        label: PropertyRef | None = None,
        stats: StreamStats | None = None,
    ) -> None:
        if size < 1 or step < 1:
            raise ValueError(f"count window size {size} and step {step} must both be >= 1")
        self.rows = RowAssembler(features, label)
        if stats is not None:
            self.rows.stats = stats
        self.size = size
        self.step = step
        self._recent: deque[Row] = deque(maxlen=size)
        self._count = 0

    @property
    def stats(self) -> StreamStats:
        """Where rejected values are counted (share the source's to see everything in one place)."""
        return self.rows.stats

    @stats.setter
    def stats(self, stats: StreamStats) -> None:
        self.rows.stats = stats

    def add(self, record: StreamRecord) -> list[Sample]:
        """Take one record; return the sample it completes, if any (at most one)."""
        out: list[Sample] = []
        for row in self.rows.add(record):
            self._recent.append(row)
            self._count += 1
            if self._count < self.size or (self._count - self.size) % self.step:
                continue
            values = np.array([v for r in self._recent for v in r.values], dtype=np.float64)
            out.append(Sample(values, row.label, row.timestamp, self.size))
        return out


class TimeWindow:
    """Rows of the last ``seconds`` (by record timestamp), emitted every ``step_seconds`` (default ``seconds``).

    Windows are half-open, ``[end - seconds, end)``, with ends at ``t0 + seconds + k * step_seconds`` where t0 is
    the first row's timestamp; a window is emitted when the first row at or past its end arrives (the stream's
    own time says it is over), so the last window of a stream that stops stays open. Windows without rows are
    skipped. ``features`` of a sample: per feature ``[mean, min, max, last]``, features in spec order, shape
    ``(4 * F,)``; its label and timestamp are those of the newest row in the window, ``rows`` how many it holds.
    """

    def __init__(
        self,
        features: Sequence[PropertyRef],
        seconds: float,
        step_seconds: float | None = None,
        label: PropertyRef | None = None,
        stats: StreamStats | None = None,
    ) -> None:
        step = seconds if step_seconds is None else step_seconds
        if not (math.isfinite(seconds) and seconds > 0 and math.isfinite(step) and step > 0):
            raise ValueError(f"time window of {seconds} s every {step} s: both must be > 0")
        self.rows = RowAssembler(features, label)
        if stats is not None:
            self.rows.stats = stats
        self.span_ms = max(1, round(seconds * 1000))
        self.step_ms = max(1, round(step * 1000))
        self._recent: deque[Row] = deque()
        self._end: int | None = None

    @property
    def stats(self) -> StreamStats:
        """Where rejected values are counted (share the source's to see everything in one place)."""
        return self.rows.stats

    @stats.setter
    def stats(self, stats: StreamStats) -> None:
        self.rows.stats = stats

    def add(self, record: StreamRecord) -> list[Sample]:
        """Take one record; return the windows it closes (several when the stream skipped some time)."""
        out: list[Sample] = []
        for row in self.rows.add(record):
            out += self._take_row(row)
        return out

    def _take_row(self, row: Row) -> list[Sample]:
        if self._end is None:
            self._end = row.timestamp + self.span_ms
        out: list[Sample] = []
        while row.timestamp >= self._end:
            start = self._end - self.span_ms
            while self._recent and self._recent[0].timestamp < start:
                self._recent.popleft()
            if not self._recent:
                # Nothing left before this row: every window ending up to it is empty; jump past them at once
                # rather than stepping through a long outage one empty window at a time.
                self._end += ((row.timestamp - self._end) // self.step_ms + 1) * self.step_ms
                break
            inside = [r for r in self._recent if start <= r.timestamp < self._end]
            if inside:
                out.append(self._sample(inside))
            self._end += self.step_ms
        self._recent.append(row)
        return out

    @staticmethod
    def _sample(rows: list[Row]) -> Sample:
        table = np.array([r.values for r in rows], dtype=np.float64)  # (rows, F)
        stats = np.stack([table.mean(axis=0), table.min(axis=0), table.max(axis=0), table[-1]], axis=1)
        newest = rows[-1]
        return Sample(stats.reshape(-1), newest.label, max(r.timestamp for r in rows), len(rows))


def make_window(spec: StreamSpec, stats: StreamStats | None = None) -> CountWindow | TimeWindow:
    """The window ``spec.window`` describes over the spec's features and label."""
    w = spec.window
    if w.kind == "count":
        return CountWindow(spec.properties, w.size, w.step, spec.label, stats)
    return TimeWindow(spec.properties, w.seconds, w.step_seconds or w.seconds, spec.label, stats)


async def windowed(source: Source, spec: StreamSpec, window: Window | None = None) -> AsyncGenerator[Sample, None]:
    """The samples of ``source`` under ``spec``: windows of rows for tabular streams, one sample per frame for
    video. The window counts its rejections in ``source.stats``. Closing this generator closes the source's
    record iterator (the source itself stays open: :meth:`Source.close` it)."""
    records = source.records()
    try:
        if spec.kind == "frames":
            async for record in records:
                if isinstance(record.value, np.ndarray):
                    yield Sample(record.value, None, record.timestamp, 1)
            return
        if window is None:
            window = make_window(spec, source.stats)
        else:
            window.stats = source.stats
        async for record in records:
            for sample in window.add(record):
                yield sample
    finally:
        close = getattr(records, "aclose", None)
        if close is not None:
            with contextlib.suppress(RuntimeError):  # already running elsewhere: its owner closes it
                await close()
