"""The InfluxDB v2 sink through the official influxdb-client into VictoriaMetrics' InfluxDB v2 write endpoint, read
back through its export API: values, tags and ms timestamps, an outage with no loss, unreachable and missing token."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.db_peers import Server, assert_counted, rest_get, seq_device, seq_mapper, victoria_metrics, vm_series
from tests.sdk_driver import until

OUTAGE_S = 30  # the outage: about 300 points per property queue up meanwhile


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with victoria_metrics(tmp_path / "vm") as s:
        yield s


def influx_push(url: str, measurement: str = "plant") -> dict[str, Any]:
    return {
        "dbMethod": {
            "influxdb2": {
                "influxdb2ClientConfig": {"url": url, "org": "acme", "bucket": "plant"},
                "influxdb2DataConfig": {"measurement": measurement, "tag": {"site": "north"}, "fieldKey": "v"},
            }
        }
    }


def samples(server: Server, device: str, prop: str, measurement: str = "plant") -> list[tuple[int, float]]:
    """(timestamp ms, value) of one property's series, by time."""
    series = vm_series(server, f'{{__name__="{measurement}_v",device="{device}",property="{prop}"}}')
    out: list[tuple[int, float]] = []
    for s in series:
        out.extend(zip(s["timestamps"], s["values"], strict=True))
    return sorted(out)


async def test_points_tags_and_timestamps_read_back(
    server: Server, tmp_path: Path, make_agent: Any, sockdir: Path
) -> None:
    token = tmp_path / "influx-token"
    token.write_text("a-token\n")
    types = ["INT", "FLOAT", "BOOLEAN"]
    push = influx_push(f"http://127.0.0.1:{server.port}")
    settings = {"influxdb2": {"token_file": str(token)}}
    async with seq_mapper(make_agent, sockdir, [seq_device("dev-i", types, push)], types, settings) as (mapper, _):
        await until(lambda: len(samples(server, "dev-i", "p1")) >= 3, what="points in victoria-metrics")
        reported = {f"p{i}": (await rest_get(mapper, f"/api/v1/device/default/dev-i/p{i}"))[1] for i in range(3)}
        await until(
            lambda: all(
                any(ts == t["timestamp"] for ts, _ in samples(server, "dev-i", p)) for p, t in reported.items()
            ),
            what="the reported values stored",
        )
        expected = {
            "p0": float(int(reported["p0"]["value"])),
            "p1": float(reported["p1"]["value"]),
            "p2": 1.0 if reported["p2"]["value"] == "true" else 0.0,  # a boolean field reads back as 1/0 here
        }
        for prop, twin in reported.items():
            (value,) = [v for ts, v in samples(server, "dev-i", prop) if ts == twin["timestamp"]]
            assert value == expected[prop]
        # Export may give one series in several blocks: all with the same labels.
        for series in vm_series(server, '{__name__="plant_v",device="dev-i",property="p0"}'):
            assert series["metric"] == {
                "__name__": "plant_v",
                "site": "north",
                "namespace": "default",
                "device": "dev-i",
                "property": "p0",
                **{k: v for k, v in series["metric"].items() if k == "db"},  # the bucket, as VictoriaMetrics names it
            }
        status, body = await rest_get(mapper, "/api/v1/database/default/dev-i")
        assert status == 200 and "write-only" in body["series"][0]["error"]


async def test_outage_loses_nothing_and_collection_goes_on(server: Server, make_agent: Any, sockdir: Path) -> None:
    """10 properties at 100 ms; the server is stopped for OUTAGE_S (30 s, as the issue asks) and restarted."""
    types = ["INT"] * 10
    push = influx_push(f"http://127.0.0.1:{server.port}")
    async with seq_mapper(make_agent, sockdir, [seq_device("dev-o", types, push)], types) as (mapper, fleet):
        await until(lambda: len(samples(server, "dev-o", "p9")) >= 3, what="first points")
        dest = next(iter(mapper.push.destinations.values()))
        server.stop()
        before = dict(fleet.counts["dev-o"])
        await asyncio.sleep(OUTAGE_S)
        during = {k: v - before[k] for k, v in fleet.counts["dev-o"].items()}
        assert min(during.values()) > 10, during
        assert dest.stats.retries >= 1 and len(dest.queue) > 0
        await asyncio.to_thread(server.start)
        await until(lambda: not dest.queue, timeout=30, what="queue drained")
    # VictoriaMetrics makes the newest samples searchable a little after it took them, force_flush or not.
    await until(lambda: len(samples(server, "dev-o", "p9")) >= fleet.counts["dev-o"][9] - 1, what="last points")
    for i in range(10):
        got = samples(server, "dev-o", f"p{i}")
        assert_counted([int(v) for _, v in got], fleet.counts["dev-o"][i], f"p{i}")
    assert dest.stats.dropped == 0


@pytest.mark.parametrize(
    ("case", "expect"),
    [("unreachable", "cannot reach influxdb2 at http://127.0.0.1:9"), ("missing token", "cannot read the secret")],
)
async def test_bad_configuration_is_one_clear_error_and_other_sinks_go_on(
    case: str,
    expect: str,
    server: Server,
    tmp_path: Path,
    make_agent: Any,
    sockdir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = influx_push(f"http://127.0.0.1:{server.port}", "good")
    settings: dict[str, Any] = {"flush_on_stop_s": 0.5}
    if case == "unreachable":
        bad = influx_push("http://127.0.0.1:9")
    else:
        bad = influx_push(f"http://127.0.0.1:{server.port}")
        settings["influxdb2"] = {"token_file": str(tmp_path / "absent")}
        good = {"mqtt": {}}  # the token is per mapper: nothing else here can work
    caplog.set_level(logging.WARNING)
    devices = [seq_device("dev-bad", ["INT"], bad), seq_device("dev-good", ["INT"], good)]
    async with seq_mapper(make_agent, sockdir, devices, ["INT"], settings) as (_, fleet):
        await until(lambda: any(expect in r.getMessage() for r in caplog.records), timeout=15, what=expect)
        lines = [r.getMessage() for r in caplog.records if expect in r.getMessage()]
        assert len(lines) == 1, lines
        assert "device default/dev-bad property p0" in lines[0] and "influxdb2 http://127.0.0.1:" in lines[0]
        assert "hint:" in lines[0]
        reads = fleet.counts["dev-bad"][0]
        await until(lambda: fleet.counts["dev-bad"][0] > reads + 10, what="dev-bad keeps collecting")
        if case == "unreachable":
            await until(lambda: len(samples(server, "dev-good", "p0", "good")) > 5, what="the other sink works")
