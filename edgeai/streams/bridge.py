"""A blocking iterator of samples for synchronous worker loops (Sedna's workers are plain ``while True`` loops).

The source and its window run on their own asyncio loop in a daemon thread; finished samples wait in a bounded
queue. A consumer slower than the stream loses the *oldest* samples (counted in ``stats.dropped``): an inference
worker wants the present, not a backlog. ::

    with SampleStream(spec) as stream:
        while True:
            try:
                for sample in stream:
                    model.predict(sample.features)
            except StreamStalled as exc:   # nothing for STREAM_IDLE_SECONDS; the source keeps reconnecting
                log.warning("%s", exc)     # then simply go on iterating
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from types import TracebackType

from edgeai.streams.records import StreamStalled, StreamStats
from edgeai.streams.sources import Source, open_source
from edgeai.streams.spec import StreamSpec
from edgeai.streams.window import Sample, Window, windowed


class SampleStream:
    """Samples of ``spec`` (from ``source`` and ``window`` when given, else those the spec describes).

    Iterating blocks until a sample is ready; it raises :class:`StreamStalled` when none arrived for
    ``spec.idle_seconds`` (and again after each further idle period), after which iteration may go on. The
    thread starts on ``with``, ``iter()`` or the first ``next()``; :meth:`close` stops it and the source.
    """

    def __init__(
        self,
        spec: StreamSpec,
        *,
        source: Source | None = None,
        window: Window | None = None,
        queue_size: int = 64,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, not {queue_size}")
        self.spec = spec
        self.source: Source = source if source is not None else open_source(spec)
        self.queue_size = queue_size
        self._window = window
        self._samples: collections.deque[Sample] = collections.deque()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = threading.Event()  # set once the loop runs (or the thread ended before it could)
        self._closed = False
        self._finished = False
        self._failure: BaseException | None = None
        self._last_event = time.monotonic()  # last sample arrival or StreamStalled raised

    @property
    def stats(self) -> StreamStats:
        """The source's counters (``dropped`` includes samples this stream's queue threw away)."""
        return self.source.stats

    # ------------------------------------------------------------------ consumer side
    def start(self) -> SampleStream:
        """Start the thread if it is not running yet."""
        with self._changed:
            if self._thread is not None or self._closed:
                return self
            self._last_event = time.monotonic()
            self._thread = threading.Thread(target=self._run, name=f"sample-stream {self.spec.safe_url}", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> SampleStream:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __iter__(self) -> SampleStream:
        return self.start()

    def __next__(self) -> Sample:
        self.start()
        idle = self.spec.idle_seconds
        with self._changed:
            while True:
                if self._samples:
                    return self._samples.popleft()
                if self._failure is not None:
                    raise RuntimeError(f"stream {self.spec.safe_url} failed: {self._failure}") from self._failure
                if self._closed or self._finished:
                    raise StopIteration
                remaining = self._last_event + idle - time.monotonic()
                if remaining <= 0:
                    self._last_event = time.monotonic()
                    raise StreamStalled(self.spec.safe_url, idle, self.source.stats.last_error)
                self._changed.wait(remaining)

    def close(self) -> None:
        """Stop the source and the thread (waits up to 10 s for them). Iteration then ends."""
        with self._changed:
            self._closed = True
            thread = self._thread
            self._changed.notify_all()
        if thread is None:
            return
        self._running.wait(10)
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended on its own
                loop.call_soon_threadsafe(task.cancel)
        thread.join(10)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            self._failure = exc
        finally:
            self._running.set()
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._running.set()
        if self._closed:
            await self.source.close()
            return
        samples = windowed(self.source, self.spec, self._window)
        try:
            async for sample in samples:
                self._put(sample)
        finally:
            await samples.aclose()
            await self.source.close()

    def _put(self, sample: Sample) -> None:
        with self._changed:
            if len(self._samples) >= self.queue_size:
                self._samples.popleft()
                self.source.stats.dropped += 1
            self._samples.append(sample)
            self._last_event = time.monotonic()
            self._changed.notify_all()
