"""What every shipped worker does the same way: logging, a clean exit on SIGTERM, fatal errors in one line."""

from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, NoReturn

from edgeai.streams import Sample, SampleStream, StreamStalled


def setup(name: str) -> logging.Logger:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format=f"%(asctime)s {name} %(levelname)s %(message)s", stream=sys.stderr)

    def _term(signum: int, frame: FrameType | None) -> None:
        # SystemExit unwinds the worker's finally blocks: the last counters still reach the controller.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _term)
    return logging.getLogger(name)


def fatal(message: str, code: int = 2) -> NoReturn:
    """End the worker with one line the controller shows in the job's status."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def label_text(value: Any) -> str | None:
    """A label from a stream as the dataset writes it: ``"1"`` for 1, 1.0 or "1.0"."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        f = float(text)
    except ValueError:
        return text or None
    return str(int(f)) if f.is_integer() else text


class Accuracy:
    """Share of correct answers over the last ``size`` labelled samples."""

    def __init__(self, size: int = 200) -> None:
        self.window: collections.deque[bool] = collections.deque(maxlen=size)
        self.total = 0

    def add(self, correct: bool) -> None:
        self.window.append(correct)
        self.total += 1

    @property
    def value(self) -> float | None:
        return round(sum(self.window) / len(self.window), 4) if self.window else None


class Every:
    """True at most once per ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False


def samples(stream: SampleStream, info: dict[str, Any], log: logging.Logger) -> Iterator[Sample]:
    """The stream's samples, with its health in ``info`` (the worker's reported metrics): a stall sets
    ``streamError`` until the next sample, rejected values show as ``streamRejected`` and ``streamLastError``."""
    it = iter(stream)
    while True:
        try:
            sample = next(it)
        except StreamStalled as exc:
            info["streamError"] = str(exc)
            log.warning("%s", exc)
            continue
        except StopIteration:
            return
        info.pop("streamError", None)
        stats = stream.stats
        if stats.rejected:
            info["streamRejected"] = stats.rejected
            info["streamLastError"] = stats.last_error or ""
        yield sample
