"""OpenTelemetry: numeric values exported as OTLP/HTTP metrics with ``opentelemetry-sdk``'s OTLP exporter.

Every value becomes one gauge data point (metric name = the property name, attributes ``namespace``, ``device``,
``property``, time = the device's timestamp), so no reading is averaged away between exports. ``BOOLEAN`` values are
sent as 1/0; strings and bytes are not numbers and are skipped (one warning per property). The exporter is
synchronous (requests), so it runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mapper_framework.sinks.base import SeriesKey, Sink, SinkError

if TYPE_CHECKING:
    from mapper_framework.push import Record

log = logging.getLogger(__name__)

_INSTRUMENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_./-]{0,254}$")


def endpoint(url: str) -> str:
    """``endpointURL`` as the exporter wants it: the OTLP/HTTP metrics path added when the CR gives none."""
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/") + "/v1/metrics" if urlsplit(url).path in ("", "/") else url


def metric_name(prop: str) -> str:
    """The property name, made a valid OTel instrument name when it is not one."""
    if _INSTRUMENT_NAME.match(prop):
        return prop
    cleaned = re.sub(r"[^A-Za-z0-9_./-]", "_", prop)
    return cleaned if cleaned[:1].isalpha() else f"p_{cleaned}"


def number(value: str, type_: str) -> int | float | None:
    try:
        if type_ == "int":
            return int(value)
        if type_ in ("float", "double"):
            f = float(value)
            return f if math.isfinite(f) else None
    except ValueError:
        return None
    if type_ == "boolean":
        return 1 if value.lower() in ("true", "1") else 0
    return None


class OtelSink(Sink):
    kind = "otel"

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint = endpoint(endpoint_url)
        super().__init__(f"otel {self.endpoint}")
        self._exporter: Any = None
        self._resource: Any = None
        self._scope: Any = None
        self._skipped: set[SeriesKey] = set()

    def _setup(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._exporter = OTLPMetricExporter(endpoint=self.endpoint, timeout=5)
        self._resource = Resource.create({"service.name": "kubeedge-mapper"})
        self._scope = InstrumentationScope("kubeedge-mapper")

    def metrics_data(self, batch: Sequence[Record]) -> Any:
        """The batch as the SDK's ``MetricsData``: one gauge per property name, one data point per value."""
        from opentelemetry.sdk.metrics.export import (
            Gauge,
            Metric,
            MetricsData,
            NumberDataPoint,
            ResourceMetrics,
            ScopeMetrics,
        )

        points: dict[str, list[Any]] = {}
        for rec in batch:
            value = number(rec.value, rec.type)
            if value is None:
                key = (rec.namespace, rec.device, rec.property)
                if key not in self._skipped:
                    self._skipped.add(key)
                    log.warning(
                        "device %s/%s property %s: sink %s: %s value %r is not a number; not exported",
                        *key,
                        self.name,
                        rec.type,
                        rec.value,
                    )
                continue
            attributes = {"namespace": rec.namespace, "device": rec.device, "property": rec.property}
            stamp = rec.timestamp * 1_000_000
            points.setdefault(rec.property, []).append(NumberDataPoint(attributes, stamp, stamp, value))
        metrics = [Metric(metric_name(p), "", "", Gauge(pts)) for p, pts in points.items()]
        if not metrics:
            return None
        return MetricsData([ResourceMetrics(self._resource, [ScopeMetrics(self._scope, metrics, "")], "")])

    async def write(self, batch: Sequence[Record]) -> None:
        if self._exporter is None:
            self._setup()
        data = self.metrics_data(batch)
        if data is None:
            return
        from opentelemetry.sdk.metrics.export import MetricExportResult

        result = await asyncio.to_thread(self._exporter.export, data, timeout_millis=5000)
        if result is not MetricExportResult.SUCCESS:
            raise SinkError(
                f"OTLP export to {self.endpoint} failed (the exporter logs why)",
                "check pushMethod.otel.endpointURL in the Device CR and that the collector listens (OTLP/HTTP)",
            )

    async def close(self) -> None:
        if self._exporter is not None:
            await asyncio.to_thread(self._exporter.shutdown)
