"""Incremental-learning triggers: a condition on a metric, an optional time-of-day window, a check period.

Operators are Sedna's (``gt``/``>``, ``ge``/``>=``, ``eq``/``=``/``==``, ``ne``/``!=``, ``le``/``<=``,
``lt``/``<``; equality within 1e-6). ``metric[i]`` picks one value of a list metric. Two of Sedna's behaviours are
not kept: a list metric without an index reads as its only value (or refuses, naming the metric, when it has
several) instead of silently as 0, so the sample's ``precision_delta > 0.1`` works; and ``checkPeriodSeconds`` is
honoured (Sedna parses and drops it): the condition is evaluated at most once per period.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgeai.crs import OPERATORS, Trigger

DEFAULT_CHECK_PERIOD_S = 10.0
EPSILON = 1e-6


class TriggerError(ValueError):
    """The metric a trigger names is missing or cannot be read; the message says which and why."""


def compare(value: float, operator: str, threshold: float) -> bool:
    """``value OPERATOR threshold``, equality within 1e-6 as in Sedna."""
    op = OPERATORS[operator]
    equal = abs(value - threshold) < EPSILON
    if op == "==":
        return equal
    if op == "!=":
        return not equal
    if op == ">":
        return value > threshold and not equal
    if op == ">=":
        return value > threshold or equal
    if op == "<":
        return value < threshold and not equal
    return value < threshold or equal


def metric_value(metrics: Mapping[str, Any], metric: str) -> float:
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?", metric)
    if m is None:
        raise TriggerError(f"metric {metric!r} is not a name or name[index]")
    name, index = m[1], m[2]
    if name not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        raise TriggerError(f"metric {name!r} is not among the job's metrics ({known})")
    value = metrics[name]
    if isinstance(value, (list, tuple)):
        if index is not None:
            i = int(index)
            if i >= len(value):
                raise TriggerError(f"metric {metric}: {name} has {len(value)} values")
            value = value[i]
        elif len(value) == 1:
            value = value[0]
        else:
            raise TriggerError(f"metric {name} has {len(value)} values; name one, e.g. {name}[0]")
    elif index is not None:
        raise TriggerError(f"metric {metric}: {name} is a single value, not a list")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TriggerError(f"metric {metric}={value!r} is not a number") from None


def in_window(start: str, end: str, now: str) -> bool:
    """Whether ``now`` (HH:MM) is in [start, end); a window with start after end wraps midnight."""
    if start <= end:
        return start <= now < end
    return now >= start or now < end


@dataclass
class TriggerState:
    spec: Trigger
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = datetime.now
    last_check: float | None = None
    last_error: str | None = None
    last_value: float | None = None
    #: every evaluation that read its metric: (value, fired); the last 100
    history: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def period_s(self) -> float:
        return float(self.spec.checkPeriodSeconds or DEFAULT_CHECK_PERIOD_S)

    def due(self) -> bool:
        return self.last_check is None or self.clock() - self.last_check >= self.period_s

    def evaluate(self, metrics: Mapping[str, Any], force: bool = False) -> bool:
        """Whether the trigger fires now; at most once per check period unless ``force``."""
        if not force and not self.due():
            return False
        self.last_check = self.clock()
        if self.spec.timer is not None:
            now = self.wall().strftime("%H:%M")
            if not in_window(self.spec.timer.start, self.spec.timer.end, now):
                return False
        cond = self.spec.condition
        try:
            value = metric_value(metrics, cond.metric)
        except TriggerError as exc:
            self.last_error = str(exc)
            return False
        self.last_error = None
        self.last_value = value
        fired = compare(value, cond.operator, cond.threshold)
        self.history.append((value, fired))
        del self.history[:-100]
        return fired
