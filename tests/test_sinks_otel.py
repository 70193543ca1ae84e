"""The OTEL sink (opentelemetry-sdk's OTLP/HTTP exporter) into a receiver decoding real OTLP protobuf: names,
values, attributes and device timestamps; strings skipped; an outage of the receiver with no loss, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.db_peers import OtlpReceiver, assert_counted, rest_get, seq_device, seq_mapper
from tests.sdk_driver import until

OUTAGE_S = 30  # the outage: about 300 points per property queue up meanwhile


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def test_gauges_with_names_values_and_attributes(receiver: OtlpReceiver, make_agent: Any, sockdir: Path) -> None:
    types = ["INT", "FLOAT", "BOOLEAN", "STRING"]
    push = {"otel": {"endpointURL": f"http://127.0.0.1:{receiver.port}"}}  # the OTLP path is added
    async with seq_mapper(make_agent, sockdir, [seq_device("dev-t", types, push)], types) as (mapper, _):
        await until(lambda: sum(p["name"] == "p1" for p in receiver.points) >= 3, what="points at the receiver")
        reported = {f"p{i}": (await rest_get(mapper, f"/api/v1/device/default/dev-t/p{i}"))[1] for i in range(3)}
        await until(
            lambda: all(
                any(p["name"] == n and p["time_ms"] == t["timestamp"] for p in receiver.points)
                for n, t in reported.items()
            ),
            what="the reported values exported",
        )
        expected = {
            "p0": int(reported["p0"]["value"]),
            "p1": float(reported["p1"]["value"]),
            "p2": 1 if reported["p2"]["value"] == "true" else 0,
        }
        for name, twin in reported.items():
            (point,) = [p for p in receiver.points if p["name"] == name and p["time_ms"] == twin["timestamp"]]
            assert point["kind"] == "gauge"
            assert point["value"] == expected[name] and type(point["value"]) is type(expected[name])
            assert point["attributes"] == {"namespace": "default", "device": "dev-t", "property": name}
            assert point["resource"]["service.name"] == "kubeedge-mapper"
        assert not any(p["name"] == "p3" for p in receiver.points)  # a STRING property is not a metric


async def test_receiver_outage_loses_nothing_and_keeps_order(
    receiver: OtlpReceiver, make_agent: Any, sockdir: Path
) -> None:
    """10 properties at 100 ms; the receiver is down for OUTAGE_S (30 s, as the issue asks)."""
    types = ["INT"] * 10
    push = {"otel": {"endpointURL": f"http://127.0.0.1:{receiver.port}/v1/metrics"}}
    async with seq_mapper(make_agent, sockdir, [seq_device("dev-o", types, push)], types) as (mapper, fleet):
        await until(lambda: sum(p["name"] == "p9" for p in receiver.points) >= 3, what="first points")
        dest = next(iter(mapper.push.destinations.values()))
        port = receiver.port
        await receiver.stop()
        before = dict(fleet.counts["dev-o"])
        await asyncio.sleep(OUTAGE_S)
        during = {k: v - before[k] for k, v in fleet.counts["dev-o"].items()}
        assert min(during.values()) > 10, during
        assert dest.stats.retries >= 1 and len(dest.queue) > 0
        await receiver.start(port=port)
        await until(lambda: not dest.queue, timeout=30, what="queue drained")
    for i in range(10):
        got = [p for p in receiver.points if p["name"] == f"p{i}"]  # in arrival order
        assert_counted([int(p["value"]) for p in got], fleet.counts["dev-o"][i], f"p{i}")
        assert [p["time_ms"] for p in got] == sorted(p["time_ms"] for p in got)
    assert dest.stats.dropped == 0
