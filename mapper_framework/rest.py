"""The mapper's REST API (default 127.0.0.1:7777), KubeEdge's routes under ``/api/v1`` plus ``/metrics``.

Routes: ``GET /api/v1/ping``; ``GET /api/v1/device/{namespace}/{name}/{property}``;
``GET /api/v1/devicemethod/{namespace}/{name}``;
``GET /api/v1/devicemethod/{namespace}/{name}/{method}/{property}/{value}`` (a write);
``GET /api/v1/meta/model/{namespace}/{name}``; ``GET /api/v1/database/{namespace}/{name}``;
``GET /api/v1/stream/{namespace}/{name}/{property}`` (live MJPEG, multipart/x-mixed-replace) and
``GET /api/v1/frame/{namespace}/{name}/{property}`` (the newest frame, image/jpeg) for stream properties;
``GET /metrics`` (Prometheus text).

``/database/{namespace}/{name}`` answers the series the device's database sinks stored, read back from them:
``{"namespace", "name", "series": [{"property", "sink", "points": [{"timestamp", "value", "type"}]}]}``, the
newest ``DATABASE_POINTS`` (1000) points of each, oldest first. A sink that cannot be read back by the mapper
(InfluxDB, OTEL) is listed with an ``error`` saying where to query it instead.
Errors are JSON ``{"error": ...}`` with 400, 403, 404, 502, or 503 for a device that is not started.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format

from mapper_framework.agent_client import AgentClient
from mapper_framework.config import MapperConfig
from mapper_framework.driver import StreamNotSupported
from mapper_framework.http_server import HttpServer, Response, Router
from mapper_framework.push import PushManager
from mapper_framework.registry import DeviceRegistry
from mapper_framework.runtime import DeviceNotStarted, DeviceRuntime
from mapper_framework.values import PropertyValueError

log = logging.getLogger(__name__)


MJPEG_BOUNDARY = b"kubeedge-mapper-frame"
FIRST_FRAME_TIMEOUT_S = 10.0
DATABASE_POINTS = 1000  # per series in GET /database/...: the recent history, not a bulk export


def _error(status: int, message: str) -> Response:
    return Response.json({"error": message}, status)


class RestApi:
    def __init__(
        self, config: MapperConfig, registry: DeviceRegistry, client: AgentClient, push: PushManager | None = None
    ) -> None:
        self.config = config
        self.registry = registry
        self.client = client
        self.push = push
        router = Router()
        router.get("/api/v1/ping", self.ping)
        router.get("/api/v1/device/{namespace}/{name}/{property}", self.device_property)
        router.get("/api/v1/devicemethod/{namespace}/{name}", self.device_methods)
        router.get("/api/v1/devicemethod/{namespace}/{name}/{method}/{property}/{value}", self.call_method)
        router.get("/api/v1/meta/model/{namespace}/{name}", self.model)
        router.get("/api/v1/database/{namespace}/{name}", self.database)
        router.get("/api/v1/stream/{namespace}/{name}/{property}", self.stream)
        router.get("/api/v1/frame/{namespace}/{name}/{property}", self.frame)
        router.get("/metrics", self.metrics)
        self._server = HttpServer(router, config.rest.bind, config.http_port)

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked for)."""
        return self._server.port

    async def start(self) -> None:
        await self._server.start()
        log.info("REST API on http://%s:%d/api/v1", self.config.rest.bind, self.port)

    async def stop(self) -> None:
        await self._server.stop()

    def _runtime(self, params: dict[str, str]) -> DeviceRuntime | Response:
        ns, name = params["namespace"], params["name"]
        runtime = self.registry.runtimes.get((ns, name))
        if runtime is None:
            return _error(404, f"device {ns}/{name} is not served by this mapper")
        return runtime

    async def ping(self, params: dict[str, str]) -> Response:
        return Response.json(
            {
                "message": "pong",
                "name": self.config.name,
                "protocol": self.config.protocol,
                "devices": len(self.registry.runtimes),
            }
        )

    async def device_property(self, params: dict[str, str]) -> Response:
        runtime = self._runtime(params)
        if isinstance(runtime, Response):
            return runtime
        name = params["property"]
        prop = runtime.spec.property(name)
        if prop is None:
            return _error(404, f"device {runtime.spec} has no property {name!r}")
        twin = runtime.twins[name]
        return Response.json(
            {
                "namespace": runtime.spec.namespace,
                "name": runtime.spec.name,
                "property": name,
                "value": twin.value,
                "type": prop.type,
                "timestamp": twin.timestamp_ms,
                "observedDesired": twin.observed_desired,
                "stale": bool(twin.error) or not twin.timestamp_ms,
                "error": twin.error,
            }
        )

    def _frames(self, params: dict[str, str]) -> AsyncIterator[bytes] | Response:
        runtime = self._runtime(params)
        if isinstance(runtime, Response):
            return runtime
        try:
            return runtime.frames(params["property"])
        except KeyError as exc:
            return _error(404, str(exc.args[0]))
        except StreamNotSupported as exc:
            return _error(404, f"device {runtime.spec} property {params['property']}: {exc}")

    async def stream(self, params: dict[str, str]) -> Response:
        """Live frames as multipart/x-mixed-replace JPEG (MJPEG), what browsers, OpenCV and ffmpeg read."""
        frames = self._frames(params)
        if isinstance(frames, Response):
            return frames

        async def parts() -> AsyncIterator[bytes]:
            try:
                async for jpeg in frames:
                    yield (
                        b"--" + MJPEG_BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                        b"Content-Length: " + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n"
                    )
            finally:
                close = getattr(frames, "aclose", None)
                if close is not None:
                    await close()

        return Response(200, b"", f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY.decode()}", parts())

    async def frame(self, params: dict[str, str]) -> Response:
        frames = self._frames(params)
        if isinstance(frames, Response):
            return frames
        try:
            jpeg = await asyncio.wait_for(anext(frames), FIRST_FRAME_TIMEOUT_S)
        except (StopAsyncIteration, TimeoutError):
            return _error(502, f"no frame within {FIRST_FRAME_TIMEOUT_S:.0f} s from the stream")
        except StreamNotSupported as exc:
            return _error(502, str(exc))
        finally:
            close = getattr(frames, "aclose", None)
            if close is not None:
                await close()
        return Response(200, jpeg, "image/jpeg")

    async def device_methods(self, params: dict[str, str]) -> Response:
        runtime = self._runtime(params)
        if isinstance(runtime, Response):
            return runtime
        spec = runtime.spec
        base = f"/api/v1/devicemethod/{spec.namespace}/{spec.name}"
        return Response.json(
            {
                "namespace": spec.namespace,
                "name": spec.name,
                "methods": [
                    {
                        "name": m.name,
                        "description": m.description,
                        "propertyNames": list(m.property_names),
                        "path": f"{base}/{m.name}/{{propertyName}}/{{value}}",
                    }
                    for m in spec.methods
                ],
            }
        )

    async def call_method(self, params: dict[str, str]) -> Response:
        runtime = self._runtime(params)
        if isinstance(runtime, Response):
            return runtime
        method_name, name, value = (params[k] for k in ("method", "property", "value"))
        method = next((m for m in runtime.spec.methods if m.name == method_name), None)
        if method is None:
            return _error(404, f"device {runtime.spec} has no method {method_name!r}")
        if name not in method.property_names:
            return _error(
                400,
                f"method {method_name} does not cover property {name!r}"
                f" (it covers: {', '.join(method.property_names)})",
            )
        try:
            await runtime.write(name, value)
        except KeyError as exc:
            return _error(404, str(exc.args[0]))
        except PermissionError as exc:
            return _error(403, str(exc))
        except PropertyValueError as exc:
            return _error(400, str(exc))
        except DeviceNotStarted as exc:
            return _error(503, f"{exc}. Hint: fix the Device CR's configData")
        except Exception as exc:  # the device refused or did not answer
            log.warning("device %s property %s: write %r failed: %s", runtime.spec, name, value, exc)
            return _error(502, f"device {runtime.spec} property {name}: write failed: {exc}")
        return Response.json(
            {"namespace": runtime.spec.namespace, "name": runtime.spec.name, "property": name, "written": value}
        )

    async def model(self, params: dict[str, str]) -> Response:
        ns, name = params["namespace"], params["name"]
        model = self.registry.models.get((ns, name))
        if model is None:
            return _error(404, f"device model {ns}/{name} is not known to this mapper")
        return Response.json(json_format.MessageToDict(model, preserving_proto_field_name=True))

    async def database(self, params: dict[str, str]) -> Response:
        runtime = self._runtime(params)
        if isinstance(runtime, Response):
            return runtime
        if self.push is None:
            return _error(404, f"device {runtime.spec}: this mapper has no push manager")
        limit = DATABASE_POINTS
        series: list[dict[str, Any]] = []
        for prop in runtime.spec.properties:
            if prop.push_method is None or not (
                prop.push_method.HasField("dbMethod") or prop.push_method.HasField("otel")
            ):
                continue
            for sink in self.push.sinks_of(runtime.spec.namespace, runtime.spec.name, prop.name):
                entry: dict[str, Any] = {"property": prop.name, "sink": sink.name}
                if not sink.readable:
                    entry["error"] = f"{sink.kind} is write-only for the mapper; query the server itself"
                else:
                    try:
                        points = await sink.read((runtime.spec.namespace, runtime.spec.name, prop.name), limit)
                    except Exception as exc:
                        log.warning(
                            "device %s property %s: reading back %s failed: %s", runtime.spec, prop.name, sink.name, exc
                        )
                        entry["error"] = f"device {runtime.spec} property {prop.name}: sink {sink.name}: {exc}"
                    else:
                        entry["points"] = [{"timestamp": p.timestamp, "value": p.value, "type": p.type} for p in points]
                series.append(entry)
        if not series:
            return _error(
                404,
                f"device {runtime.spec} has no database push method that has stored anything yet; hint: add"
                " pushMethod.dbMethod (influxdb2, redis or mysql) to its properties",
            )
        return Response.json({"namespace": runtime.spec.namespace, "name": runtime.spec.name, "series": series})

    async def metrics(self, params: dict[str, str]) -> Response:
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], Any]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

        per_prop: list[tuple[dict[str, str], int]] = []
        per_prop_err: list[tuple[dict[str, str], int]] = []
        up: list[tuple[dict[str, str], int]] = []
        missed: list[tuple[dict[str, str], int]] = []
        for (ns, dev), runtime in sorted(self.registry.runtimes.items()):
            for pname, twin in runtime.twins.items():
                labels = {"namespace": ns, "device": dev, "property": pname}
                per_prop.append((labels, twin.reads))
                per_prop_err.append((labels, twin.errors))
            up.append(({"namespace": ns, "device": dev, "state": runtime.state}, 1))
            missed.append(({"namespace": ns, "device": dev}, runtime.missed_reads))
        stats = self.client.stats
        metric("mapper_property_reads_total", "counter", "Successful reads of a property.", per_prop)
        metric("mapper_property_read_errors_total", "counter", "Failed reads of a property.", per_prop_err)
        metric(
            "mapper_property_reads_missed_total",
            "counter",
            "Property reads skipped because their round could not start within one cycle of being due.",
            missed,
        )
        metric("mapper_device_state", "gauge", "1 for the state each device is in.", up)
        metric("mapper_reports_total", "counter", "ReportDeviceStatus calls accepted.", [({}, stats.reports_sent)])
        metric("mapper_twins_reported_total", "counter", "Twins delivered to the agent.", [({}, stats.twins_sent)])
        metric("mapper_state_reports_total", "counter", "ReportDeviceStates calls accepted.", [({}, stats.states_sent)])
        metric(
            "mapper_report_retries_total", "counter", "Back-offs (agent away or rate-limiting).", [({}, stats.retries)]
        )
        metric(
            "mapper_rate_limited_total",
            "counter",
            "Answers 'too many request' from the agent.",
            [({}, stats.rate_limited)],
        )
        metric(
            "mapper_reports_dropped_total",
            "counter",
            "Twins or states the agent refused for good.",
            [({}, stats.dropped)],
        )
        metric("mapper_outbox_depth", "gauge", "Values waiting for the agent.", [({}, self.client.outbox.depth)])
        metric("mapper_registrations_total", "counter", "Registrations with the agent.", [({}, stats.registrations)])
        if self.push is not None:
            dests = sorted(self.push.destinations.values(), key=lambda d: d.name)
            for metric_name, kind, help_, get in (
                (
                    "mapper_push_points_total",
                    "counter",
                    "Points (records) written by each push destination.",
                    lambda d: d.stats.sent,
                ),
                ("mapper_push_batches_total", "counter", "Successful batch writes.", lambda d: d.stats.batches),
                (
                    "mapper_push_retries_total",
                    "counter",
                    "Failed writes retried with backoff.",
                    lambda d: d.stats.retries,
                ),
                ("mapper_push_queue_depth", "gauge", "Points waiting for the destination.", lambda d: len(d.queue)),
                (
                    "mapper_push_dropped_total",
                    "counter",
                    "Points dropped (queue full, or refused for good).",
                    lambda d: d.stats.dropped,
                ),
            ):
                metric(metric_name, kind, help_, [({"sink": d.name}, get(d)) for d in dests])
        # Leak watch: both stay flat on a healthy mapper, whatever its devices go through.
        metric(
            "mapper_asyncio_tasks", "gauge", "Tasks alive on the mapper's event loop.", [({}, len(asyncio.all_tasks()))]
        )
        metric("process_resident_memory_bytes", "gauge", "Resident memory of this process.", [({}, _rss_bytes())])
        return Response.text("\n".join(lines) + "\n")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
