"""The agent with a cluster: Devices of this node from the (simulated) Kubernetes API reach the mapper, twins and
state come back as DeviceStatus objects with KubeEdge's field names, and the cache carries an API outage."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dmi.agent.app import Agent, AgentConfig
from mapper_framework.mapper import Mapper
from tests import crs
from tests.k8s_sim import KubeApiSimulator
from tests.sdk_driver import FakeFleet, fast_device, start_fake_mapper, until

GVP_DEVICES = "devices"
GVP_STATUS = "devicestatuses"


def on_node(doc: dict[str, Any], node: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["nodeName"] = node
    return doc


@pytest.fixture
async def api() -> AsyncIterator[KubeApiSimulator]:
    sim = KubeApiSimulator()
    await sim.start()
    yield sim
    await sim.stop()


async def start_agent(
    api: KubeApiSimulator, sockdir: Path, tmp_path: Path, target: str = "devicestatus", namespace: str = ""
) -> Agent:
    kubeconfig = tmp_path / "kubeconfig"
    api.kubeconfig(kubeconfig)
    agent = Agent(
        AgentConfig(
            socket=sockdir / "dmi.sock",
            state_dir=tmp_path / "state",
            kubeconfig=kubeconfig,
            node="edge-1",
            namespace=namespace,
            status_target="device" if target == "device" else "devicestatus",
            status_interval_s=0.2,
            cluster_wait_s=3.0,
            call_timeout=2.0,
        )
    )
    await agent.start()
    return agent


async def start_mapper(agent: Agent, sockdir: Path) -> tuple[Mapper, FakeFleet]:
    return await start_fake_mapper(agent.socket_path, sockdir)


async def one_device_served(
    api: KubeApiSimulator, sockdir: Path, tmp_path: Path, target: str = "devicestatus"
) -> tuple[Agent, Mapper, FakeFleet]:
    """The thermo model and dev-a on this node, the agent and a mapper, dev-a being collected."""
    api.create(crs.model("thermo"))
    api.create(on_node(fast_device("dev-a"), "edge-1"))
    agent = await start_agent(api, sockdir, tmp_path, target)
    mapper, fleet = await start_mapper(agent, sockdir)
    await until(lambda: "dev-a" in fleet.devices, what="dev-a served")
    return agent, mapper, fleet


async def temperature_written(api: KubeApiSimulator, fleet: FakeFleet, value: int) -> None:
    """dev-a's temperature register set to ``value``, and waited for in its DeviceStatus."""
    fleet.devices["dev-a"].registers[0] = value
    await until(lambda: reported(status_of(api, "dev-a"), "temperature") == str(value), what=f"{value} written")


def status_of(api: KubeApiSimulator, name: str) -> dict[str, Any] | None:
    doc = api.get(GVP_STATUS, "default", name)
    return None if doc is None else doc.get("status")


def reported(status: dict[str, Any] | None, prop: str) -> str | None:
    for twin in (status or {}).get("twins", []):
        if twin["propertyName"] == prop:
            return str(twin["reported"]["value"])
    return None


async def test_this_nodes_devices_reach_the_mapper_and_status_comes_back(
    api: KubeApiSimulator, sockdir: Path, tmp_path: Path
) -> None:
    api.create(crs.model("thermo"))
    api.create(on_node(fast_device("dev-a", desired="21"), "edge-1"))
    api.create(on_node(fast_device("dev-b"), "edge-2"))  # another node's: never ours
    agent = await start_agent(api, sockdir, tmp_path)
    mapper, fleet = await start_mapper(agent, sockdir)
    try:
        await until(lambda: ("default", "dev-a") in mapper.registry.runtimes, what="dev-a served")
        assert ("default", "dev-b") not in mapper.registry.runtimes
        fleet.devices["dev-a"].registers[0] = 215
        await until(lambda: reported(status_of(api, "dev-a"), "temperature") == "215", what="DeviceStatus twin")
        doc = api.get(GVP_STATUS, "default", "dev-a")
        assert doc is not None
        owner = doc["metadata"]["ownerReferences"][0]
        device_doc = api.get(GVP_DEVICES, "default", "dev-a")
        assert device_doc is not None
        assert (owner["kind"], owner["name"], owner["controller"], owner["uid"]) == (
            "Device",
            "dev-a",
            True,
            device_doc["metadata"]["uid"],
        )
        twin = next(t for t in doc["status"]["twins"] if t["propertyName"] == "temperature")
        assert set(twin) == {"propertyName", "reported", "observedDesired"}
        assert set(twin["reported"]["metadata"]) == {"timestamp", "type"}
        await until(lambda: (status_of(api, "dev-a") or {}).get("state") == "ok", what="state ok")
        assert (status_of(api, "dev-a") or {}).get("lastOnlineTime")

        # The desired value edited on the cluster reaches the driver and comes back as observedDesired.
        api.merge_patch(
            GVP_DEVICES,
            "default",
            "dev-a",
            {"spec": {"properties": fast_device("dev-a", desired="25")["spec"]["properties"]}},
        )
        await until(lambda: (1, 25) in fleet.devices["dev-a"].writes, what="desired 25 written")

        def observed(prop: str) -> str | None:
            for t in (status_of(api, "dev-a") or {}).get("twins", []):
                if t["propertyName"] == prop:
                    return str(t["observedDesired"]["value"])
            return None

        await until(lambda: observed("setpoint") == "25", what="observedDesired 25")

        # Moved to another node: removed here.
        api.merge_patch(GVP_DEVICES, "default", "dev-a", {"spec": {"nodeName": "edge-2"}})
        await until(lambda: ("default", "dev-a") not in mapper.registry.runtimes, what="dev-a removed")
    finally:
        await mapper.stop()
        await agent.stop()


async def test_status_target_device_writes_the_devices_own_status(
    api: KubeApiSimulator, sockdir: Path, tmp_path: Path
) -> None:
    agent, mapper, fleet = await one_device_served(api, sockdir, tmp_path, target="device")
    try:
        fleet.devices["dev-a"].registers[0] = 7

        def device_status() -> dict[str, Any]:
            doc = api.get(GVP_DEVICES, "default", "dev-a") or {}
            return doc.get("status") or {}

        await until(lambda: reported(device_status(), "temperature") == "7", what="Device .status twin")
        assert api.get(GVP_STATUS, "default", "dev-a") is None  # no DeviceStatus object on this target
        # Our own status writes change the Device's resourceVersion: they must not look like Device changes to
        # the mapper (an UpdateDevice would restart the device with a new driver).
        fleet.devices["dev-a"].registers[0] = 8
        await until(lambda: reported(device_status(), "temperature") == "8", what="second write")
        assert len(fleet.drivers) == 1
    finally:
        await mapper.stop()
        await agent.stop()


async def test_a_slow_status_write_is_never_overtaken_by_a_newer_one(
    api: KubeApiSimulator, sockdir: Path, tmp_path: Path
) -> None:
    agent, mapper, fleet = await one_device_served(api, sockdir, tmp_path)
    try:
        await temperature_written(api, fleet, 300)
        # The API server holds the next status write for 1.5 s, far beyond the 0.2 s write interval; the value
        # changes meanwhile. A second write sent now would land first and then be overwritten by the held one.
        api.delay_next("patch", GVP_STATUS, 1.5)
        fleet.devices["dev-a"].registers[0] = 301
        await asyncio.sleep(0.5)
        fleet.devices["dev-a"].registers[0] = 302
        await until(lambda: reported(status_of(api, "dev-a"), "temperature") == "302", what="302 written", timeout=10)
        await until(lambda: all(r.code for r in api.writes), what="the held write answered")
        values = [
            int(v)
            for v in (
                reported((e.obj or {}).get("status"), "temperature")
                for e in api._history
                if e.rtype.plural == GVP_STATUS and e.type == "MODIFIED"
            )
            if v is not None
        ]
        assert values == sorted(values), f"an older value landed after a newer one: {values}"
        assert reported(status_of(api, "dev-a"), "temperature") == "302"
    finally:
        await mapper.stop()
        await agent.stop()


async def test_api_outage_and_agent_restart_serve_from_cache_and_catch_up(
    api: KubeApiSimulator, sockdir: Path, tmp_path: Path
) -> None:
    agent, mapper, fleet = await one_device_served(api, sockdir, tmp_path)
    try:
        await temperature_written(api, fleet, 1)
        await api.stop()  # the cluster goes away for a minute
        down_at = asyncio.get_running_loop().time()
        fleet.devices["dev-a"].registers[0] = 2
        await asyncio.sleep(0.5)
        await agent.stop()  # and the agent restarts while it is away
        agent = await start_agent(api, sockdir, tmp_path)
        assert ("default", "dev-a") in {(k.namespace, k.name) for k in agent.inventory.devices}
        reads = fleet.devices["dev-a"].reads
        await until(lambda: fleet.devices["dev-a"].reads > reads + 5, what="collection during the outage")
        for i, value in enumerate(range(3, 9)):  # values keep coming during the outage; the last one matters
            fleet.devices["dev-a"].registers[0] = value
            left = down_at + 60 - asyncio.get_running_loop().time()
            await asyncio.sleep(max(0.0, left / (6 - i)))
        assert asyncio.get_running_loop().time() - down_at >= 59
        assert ("default", "dev-a") in mapper.registry.runtimes  # served from the cache all along
        writes_before = api.writes_to("devicestatuses", "default", "dev-a")
        await api.start()  # back, same port, same objects
        await until(lambda: reported(status_of(api, "dev-a"), "temperature") == "8", timeout=20, what="latest")
        # Caught up with a handful of writes (one per interval at most), not one per report made meanwhile.
        assert api.writes_to("devicestatuses", "default", "dev-a") - writes_before <= 5
    finally:
        await mapper.stop()
        await agent.stop()


async def test_broken_watches_and_410_lose_nothing_and_dispatch_nothing_twice(
    api: KubeApiSimulator, sockdir: Path, tmp_path: Path
) -> None:
    agent, mapper, fleet = await one_device_served(api, sockdir, tmp_path)
    try:
        await api.wait_watches(2)
        # A stream cut mid-body, and a device created while it was down: the resumed watch brings it.
        api.break_watches()
        api.create(on_node(fast_device("dev-c"), "edge-1"))
        await until(lambda: ("default", "dev-c") in mapper.registry.runtimes, what="dev-c after a broken watch")
        # History compacted and dev-c deleted while the watch is away: the resume gets 410, the relist shows the
        # deletion the watch never told.
        await api.wait_watches(2)
        api.break_watches()  # the agent reconnects after a short pause; before it does:
        api.delete("devices", "default", "dev-c")
        api.compact()
        await until(lambda: ("default", "dev-c") not in mapper.registry.runtimes, what="dev-c gone after 410")
        assert agent.kube_source.relists >= 3  # two initial lists and at least one after the 410
        # Nothing was dispatched twice: dev-a was never re-sent (a re-send restarts it with a new driver).
        assert sum(1 for d in fleet.drivers if d.device is fleet.devices["dev-a"]) == 1
    finally:
        await mapper.stop()
        await agent.stop()


async def test_crds_install_applies_the_three_crds_and_can_run_again(api: KubeApiSimulator, tmp_path: Path) -> None:
    import sys

    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    for _ in range(2):  # server-side apply: the second run updates in place
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mapper_cli.main", "crds", "install", "--kubeconfig", str(kubeconfig),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        assert out.decode().count("serverside-applied") == 3
    names = sorted(doc["metadata"]["name"] for doc in api.list("customresourcedefinitions"))
    assert names == [
        "devicemodels.devices.kubeedge.io",
        "devices.devices.kubeedge.io",
        "devicestatuses.devices.kubeedge.io",
    ]
    assert all(w.content_type.startswith("application/apply-patch") for w in api.writes)
    device_crd = api.get("customresourcedefinitions", None, "devices.devices.kubeedge.io")
    assert device_crd is not None and device_crd["spec"]["names"]["kind"] == "Device"


def in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = namespace
    return doc


async def test_every_namespace_by_default_or_only_the_one_asked_for(
    api: KubeApiSimulator, sockdir: Path, tmp_path: Path
) -> None:
    """The kubeconfig's context namespace ("default" here) does not limit what is served; --namespace does (for
    clusters that grant the agent a namespaced Role only)."""
    for ns in ("default", "plant-a"):
        api.create(in_namespace(crs.model("thermo"), ns))
        api.create(in_namespace(on_node(fast_device(f"dev-{ns}"), "edge-1"), ns))
    for namespace, expected in (("", {"dev-default", "dev-plant-a"}), ("plant-a", {"dev-plant-a"})):
        state = tmp_path / (namespace or "all")
        state.mkdir()
        agent = await start_agent(api, sockdir, state, namespace=namespace)
        mapper, fleet = await start_mapper(agent, sockdir)
        try:
            await until(lambda f=fleet, e=expected: set(f.devices) >= e, what=f"{sorted(expected)} served")
            await asyncio.sleep(0.5)  # anything more would have arrived by now
            assert set(fleet.devices) == expected
        finally:
            await mapper.stop()
            await agent.stop()
