"""SDK end to end: the agent and a mapper (test driver) over real Unix sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dmi.agent.app import Agent
from dmi.resources import ObjectKey
from mapper_framework.config import config_from_dict
from mapper_framework.mapper import Mapper
from tests import crs
from tests.sdk_driver import FakeDevice, FakeFleet, fast_device, stored, until


async def test_values_flow_from_driver_to_the_agent_store(stack: Any) -> None:
    h, mapper, fleet = stack
    fleet.devices["dev-a"].registers[0] = 215
    await until(lambda: stored(h.agent, "dev-a").get("temperature", (None,))[0] == "215", what="dev-a temperature")
    # The desired value was written to the device and comes back as observedDesired.
    await until(lambda: stored(h.agent, "dev-a").get("setpoint") == ("21", "21"), what="setpoint applied")
    assert fleet.devices["dev-a"].writes == [(1, 21)]
    assert fleet.drivers[0].connected is not None and fleet.drivers[0].connected.slaveID == 1
    # One report per device per cycle, carrying both twins.
    assert mapper.client.stats.twins_sent >= 2 * mapper.client.stats.reports_sent - 2
    await until(
        lambda: (s := h.agent.store.state(ObjectKey("default", "dev-a"))) is not None and s.state == "ok",
        what="state ok",
    )


async def test_desired_edit_reaches_the_driver_and_removal_stops_one_device(stack: Any) -> None:
    h, mapper, fleet = stack
    await until(lambda: stored(h.agent, "dev-a").get("setpoint") == ("21", "21"), what="first desired")
    crs.write(h.crs, "d.yaml", crs.model("thermo"), fast_device("dev-a", desired="25"), fast_device("dev-b"))
    await h.agent.reload()
    await until(lambda: stored(h.agent, "dev-a").get("setpoint") == ("25", "25"), what="new desired applied")
    assert fleet.devices["dev-a"].writes == [(1, 21), (1, 25)]
    # Remove dev-b: its runtime stops, dev-a goes on.
    crs.write(h.crs, "d.yaml", crs.model("thermo"), fast_device("dev-a", desired="25"))
    await h.agent.reload()
    await until(lambda: ("default", "dev-b") not in mapper.registry.runtimes, what="dev-b stopped")
    b_reads = fleet.devices["dev-b"].reads
    a_reads = fleet.devices["dev-a"].reads
    await asyncio.sleep(0.3)
    assert fleet.devices["dev-b"].reads == b_reads
    assert fleet.devices["dev-a"].reads > a_reads
    assert any(d.closed for d in fleet.drivers if d.device is fleet.devices["dev-b"])


async def test_device_failure_goes_offline_and_recovers(stack: Any) -> None:
    h, _, fleet = stack
    key = ObjectKey("default", "dev-b")
    await until(lambda: (s := h.agent.store.state(key)) is not None and s.state == "ok", what="ok")
    fleet.devices["dev-b"].registers[0] = 7
    await until(lambda: stored(h.agent, "dev-b").get("temperature", (None,))[0] == "7", what="value 7")
    fleet.devices["dev-b"].down = True
    await until(lambda: (s := h.agent.store.state(key)) is not None and s.state == "offline", what="offline")
    assert stored(h.agent, "dev-b")["temperature"][0] == "7"  # the last good value is kept
    fleet.devices["dev-b"].registers[0] = 8
    fleet.devices["dev-b"].down = False
    await until(lambda: (s := h.agent.store.state(key)) is not None and s.state == "ok", what="back ok")
    await until(lambda: stored(h.agent, "dev-b")["temperature"][0] == "8", what="value 8")


async def test_agent_restart_the_mapper_reregisters_and_reports_what_it_collected(stack: Any) -> None:
    h, mapper, fleet = stack
    await until(lambda: stored(h.agent, "dev-a").get("temperature") is not None, what="first report")
    registrations = mapper.client.stats.registrations
    await h.agent.stop()
    # The mapper keeps collecting while the agent is away.
    fleet.devices["dev-a"].registers[0] = 333
    fleet.devices["dev-b"].registers[0] = 444
    reads = fleet.devices["dev-a"].reads
    await until(lambda: fleet.devices["dev-a"].reads > reads + 5, what="collection during the outage")
    restarted = Agent(h.agent.config)
    await restarted.start()
    h.agent = restarted  # the fixture stops it
    await until(lambda: mapper.client.stats.registrations > registrations, what="re-registration")
    await until(lambda: stored(restarted, "dev-a").get("temperature", (None,))[0] == "333", what="dev-a after")
    await until(lambda: stored(restarted, "dev-b").get("temperature", (None,))[0] == "444", what="dev-b after")
    assert mapper.client.stats.dropped == 0


async def test_rate_limited_agent_is_back_pressure_not_loss(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent(rate_limit=(20.0, 5))
    crs.write(h.crs, "d.yaml", crs.model("thermo"), *(fast_device(f"dev-{i}") for i in range(6)))
    await h.agent.reload()
    fleet = FakeFleet()
    config = config_from_dict(
        {
            "grpc_server": {"socket_path": str(sockdir / "rl.sock")},
            "common": {
                "name": "rl-mapper",
                "protocol": "testproto",
                "edgecore_sock": str(h.agent.socket_path),
                "http_port": "0",
            },
            "report": {"retry_initial_s": 0.05, "retry_max_s": 0.2},
        }
    )
    mapper = Mapper(config, fleet)
    await mapper.start()
    try:
        for i in range(6):
            fleet.devices[f"dev-{i}"].registers[0] = 100 + i
        # 6 devices x 10 reports/s is 3x what the limiter admits: the latest values still all arrive.
        for i in range(6):
            await until(
                lambda i=i: stored(h.agent, f"dev-{i}").get("temperature", (None,))[0] == str(100 + i), what=f"dev-{i}"
            )
        await until(lambda: mapper.client.stats.rate_limited > 0, what="rate limiting seen")
        assert mapper.client.stats.dropped == 0
        for i in range(6):
            fleet.devices[f"dev-{i}"].registers[0] = 200 + i
        for i in range(6):
            await until(
                lambda i=i: stored(h.agent, f"dev-{i}").get("temperature", (None,))[0] == str(200 + i),
                what=f"dev-{i} second value",
            )
    finally:
        await mapper.stop()


async def test_a_failed_desired_write_is_retried_until_applied(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    crs.write(h.crs, "d.yaml", crs.model("thermo"), fast_device("dev-a", desired="19"))
    await h.agent.reload()
    fleet = FakeFleet()
    fleet.devices["dev-a"] = FakeDevice(down=True)  # unreachable when the desired value first arrives
    config = config_from_dict(
        {
            "grpc_server": {"socket_path": str(sockdir / "retry.sock")},
            "common": {
                "name": "retry-mapper",
                "protocol": "testproto",
                "edgecore_sock": str(h.agent.socket_path),
                "http_port": "0",
            },
            "state": {"probe_ms": 100, "failures_offline": 2},
        }
    )
    mapper = Mapper(config, fleet)
    await mapper.start()
    try:
        await until(
            lambda: (s := h.agent.store.state(ObjectKey("default", "dev-a"))) is not None and s.state == "offline",
            what="offline",
        )
        assert fleet.devices["dev-a"].writes == []
        fleet.devices["dev-a"].down = False
        await until(lambda: fleet.devices["dev-a"].writes == [(1, 19)], what="the write retried")
        await until(lambda: stored(h.agent, "dev-a").get("setpoint", (None, None))[1] == "19", what="observedDesired")
    finally:
        await mapper.stop()
