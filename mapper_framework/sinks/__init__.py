"""Database and OpenTelemetry sinks behind one small interface (:class:`Sink`).

A sink writes batches of :class:`~mapper_framework.push.Record` to one server; the push manager
(:mod:`mapper_framework.push`) owns the queue in front of it: bounded, drop-oldest, retried with backoff, in order.
Client libraries are imported lazily inside each sink module, so a mapper that uses no database does not pay for
them. TDengine is not shipped (no TDengine server can run in our tests); :func:`unsupported` names it.
"""

from __future__ import annotations

from mapper_framework.sinks.base import (
    Sink,
    SinkError,
    StoredPoint,
    config_problem,
    read_secret,
    split_addr,
    unsupported,
)

__all__ = ["Sink", "SinkError", "StoredPoint", "config_problem", "read_secret", "split_addr", "unsupported"]
