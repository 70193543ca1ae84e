"""The mapper's REST API over real HTTP, every route and its errors."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests import crs
from tests.sdk_driver import fast_device, stored, until


async def _get(mapper: Any, path: str) -> tuple[int, Any]:
    assert mapper.rest is not None
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{mapper.rest.port}{path}") as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def test_ping_and_property(stack: Any) -> None:
    _, mapper, fleet = stack
    assert mapper.rest.port != 0 and mapper.config.rest.bind == "127.0.0.1"
    status, body = await _get(mapper, "/api/v1/ping")
    assert (status, body["message"], body["protocol"], body["devices"]) == (200, "pong", "testproto", 2)
    fleet.devices["dev-a"].registers[0] = 42
    await until(lambda: mapper.registry.runtimes[("default", "dev-a")].twins["temperature"].value == "42")
    status, body = await _get(mapper, "/api/v1/device/default/dev-a/temperature")
    assert status == 200
    assert {k: body[k] for k in ("namespace", "name", "property", "value", "type", "stale")} == {
        "namespace": "default",
        "name": "dev-a",
        "property": "temperature",
        "value": "42",
        "type": "int",
        "stale": False,
    }
    assert body["timestamp"] > 1_600_000_000_000
    assert (await _get(mapper, "/api/v1/device/default/nope/temperature")) == (
        404,
        {"error": "device default/nope is not served by this mapper"},
    )
    assert (await _get(mapper, "/api/v1/device/default/dev-a/pressure")) == (
        404,
        {"error": "device default/dev-a has no property 'pressure'"},
    )


async def test_device_methods_write_through_the_driver(stack: Any) -> None:
    h, mapper, fleet = stack
    dev = fast_device("dev-a", desired="21")
    dev["spec"]["methods"] = [
        {"name": "set-target", "description": "change the set point", "propertyNames": ["setpoint"]}
    ]
    model = crs.model("thermo")
    model["spec"]["properties"][1].update({"minimum": "5", "maximum": "30"})
    crs.write(h.crs, "d.yaml", model, dev, fast_device("dev-b"))
    await h.agent.reload()
    await until(lambda: mapper.registry.runtimes[("default", "dev-a")].spec.methods != (), what="method arrives")
    status, body = await _get(mapper, "/api/v1/devicemethod/default/dev-a")
    assert status == 200 and body["methods"] == [
        {
            "name": "set-target",
            "description": "change the set point",
            "propertyNames": ["setpoint"],
            "path": "/api/v1/devicemethod/default/dev-a/set-target/{propertyName}/{value}",
        }
    ]
    status, body = await _get(mapper, "/api/v1/devicemethod/default/dev-a/set-target/setpoint/23")
    assert (status, body["written"]) == (200, "23")
    assert fleet.devices["dev-a"].writes[-1] == (1, 23)
    # Errors: unknown method, property outside the method, bad value, out of range, read-only, device down.
    assert (await _get(mapper, "/api/v1/devicemethod/default/dev-a/reboot/setpoint/1"))[0] == 404
    status, body = await _get(mapper, "/api/v1/devicemethod/default/dev-a/set-target/temperature/1")
    assert status == 400 and "does not cover property 'temperature'" in body["error"]
    status, body = await _get(mapper, "/api/v1/devicemethod/default/dev-a/set-target/setpoint/warm")
    assert (status, body["error"]) == (400, "'warm' is not a valid int")
    status, body = await _get(mapper, "/api/v1/devicemethod/default/dev-a/set-target/setpoint/99")
    assert (status, body["error"]) == (400, "99 is above the maximum 30 of property setpoint")
    fleet.devices["dev-a"].down = True
    status, body = await _get(mapper, "/api/v1/devicemethod/default/dev-a/set-target/setpoint/20")
    assert status == 502 and "device does not answer" in body["error"]
    fleet.devices["dev-a"].down = False
    assert (await _get(mapper, "/api/v1/devicemethod/default/ghost"))[0] == 404


async def test_read_only_property_write_is_refused(stack: Any) -> None:
    h, mapper, _ = stack
    dev = fast_device("dev-a", desired="21")
    dev["spec"]["methods"] = [{"name": "poke", "propertyNames": ["temperature"]}]
    crs.write(h.crs, "d.yaml", crs.model("thermo"), dev, fast_device("dev-b"))
    await h.agent.reload()
    await until(lambda: mapper.registry.runtimes[("default", "dev-a")].spec.methods != (), what="method arrives")
    status, body = await _get(mapper, "/api/v1/devicemethod/default/dev-a/poke/temperature/1")
    assert (status, body["error"]) == (403, "device default/dev-a property temperature is ReadOnly")


async def test_a_write_to_a_device_whose_config_was_refused_says_why(stack: Any) -> None:
    h, mapper, _ = stack
    dev = fast_device("dev-a")
    dev["spec"]["properties"][1]["visitors"]["configData"]["offset"] = "one"
    dev["spec"]["methods"] = [{"name": "set", "propertyNames": ["setpoint"]}]
    crs.write(h.crs, "d.yaml", crs.model("thermo"), dev, fast_device("dev-b"))
    await h.agent.reload()
    await until(lambda: mapper.registry.runtimes[("default", "dev-a")].spec.methods != (), what="method arrives")
    await until(lambda: mapper.registry.runtimes[("default", "dev-a")].state == "unhealthy", what="refused")
    status, body = await _get(mapper, "/api/v1/devicemethod/default/dev-a/set/setpoint/20")
    assert status == 503, body
    assert body["error"].startswith("device default/dev-a is not started: ") and "configData.offset" in body["error"]


async def test_model_database_and_metrics(stack: Any) -> None:
    h, mapper, _ = stack
    await until(lambda: stored(h.agent, "dev-a").get("temperature") is not None, what="a report")
    status, body = await _get(mapper, "/api/v1/meta/model/default/thermo")
    assert status == 200 and body["name"] == "thermo"
    assert [p["name"] for p in body["spec"]["properties"]] == ["temperature", "setpoint"]
    assert (await _get(mapper, "/api/v1/meta/model/default/nope"))[0] == 404
    status, body = await _get(mapper, "/api/v1/database/default/dev-a")
    assert status == 404 and "no database push method" in body["error"]
    status, text = await _get(mapper, "/metrics")
    assert status == 200
    assert "# TYPE mapper_property_reads_total counter" in text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('mapper_property_reads_total{namespace="default",device="dev-a",property="temperature"}')
    )
    assert int(line.split()[-1]) > 0
    reports = next(x for x in text.splitlines() if x.startswith("mapper_reports_total "))
    # The mapper shares this event loop: more reports may go out after the scrape, never fewer.
    assert 0 < int(reports.split()[-1]) <= mapper.client.stats.reports_sent
