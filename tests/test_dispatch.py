"""CR file changes reach the owning mapper's DeviceMapperService, in order, with retries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dmi.agent.status import StatusReader
from dmi.v1beta1 import api_pb2 as pb
from tests import crs
from tests.peers import RecordingMapper, register_request, serve_mapper
from tests.sdk_driver import until


async def _settle(h: Any) -> None:
    await h.agent.reload()
    await asyncio.wait_for(h.agent.settle(), 10)


@contextlib.asynccontextmanager
async def _serving_dev_a(h: Any, sockdir: Path) -> AsyncIterator[Any]:
    """A recording mapper registered for testproto, serving dev-a (model thermo) from a.yaml; its calls so far
    cleared."""
    msock = sockdir / "m.sock"
    async with serve_mapper(msock) as mapper:
        await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
        await _settle(h)
        mapper.calls.clear()
        yield mapper


async def test_add_change_remove_reach_the_mapper_in_model_before_device_order(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    msock = sockdir / "m.sock"
    async with serve_mapper(msock) as mapper:
        await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"), crs.device("dev-b", "thermo"))
        await _settle(h)
        assert mapper.summary()[0] == ("CreateDeviceModel", "thermo")
        assert sorted(mapper.summary()[1:]) == [("RegisterDevice", "dev-a"), ("RegisterDevice", "dev-b")]

        # Desired value edited in the file -> UpdateDevice carrying it.
        mapper.calls.clear()
        crs.write(
            h.crs,
            "a.yaml",
            crs.model("thermo"),
            crs.device("dev-a", "thermo", desired="23"),
            crs.device("dev-b", "thermo"),
        )
        await _settle(h)
        assert mapper.summary() == [("UpdateDevice", "dev-a")]
        setpoint = next(p for p in mapper.calls[0].request.device.spec.properties if p.name == "setpoint")
        assert setpoint.desired.value == "23"

        # Removing one device removes only it; removing the file removes device before model.
        mapper.calls.clear()
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo", desired="23"))
        await _settle(h)
        assert mapper.summary() == [("RemoveDevice", "dev-b")]
        mapper.calls.clear()
        (h.crs / "a.yaml").unlink()
        await _settle(h)
        assert mapper.summary() == [("RemoveDevice", "dev-a"), ("RemoveDeviceModel", "thermo")]


async def test_the_folder_is_watched_without_reload(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    msock = sockdir / "m.sock"
    async with serve_mapper(msock) as mapper:
        await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
        await mapper.wait_for(2)  # the poller (0.1 s here) notices on its own
        assert mapper.summary() == [("CreateDeviceModel", "thermo"), ("RegisterDevice", "dev-a")]


async def test_model_change_updates_model_and_devices_whose_merged_view_changed(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    async with _serving_dev_a(h, sockdir) as mapper:
        # protocolConfigData is not part of the model on the wire: only the device's merged view changes.
        changed = crs.model("thermo", protocolConfigData={"timeout": 500})
        crs.write(h.crs, "a.yaml", changed, crs.device("dev-a", "thermo"))
        await _settle(h)
        assert mapper.summary() == [("UpdateDevice", "dev-a")]
        proto = mapper.devices[("default", "dev-a")]
        assert "timeout" in proto.spec.protocol.configData.data
        # The unit is on the model (UpdateDeviceModel); the visitor only reaches the device (UpdateDevice).
        mapper.calls.clear()
        props = crs.model("thermo")["spec"]["properties"]
        props[0]["unit"] = "degC"
        props[0]["visitors"]["configData"]["register"] = "InputRegister"
        crs.write(
            h.crs,
            "a.yaml",
            crs.model("thermo", properties=props, protocolConfigData={"timeout": 500}),
            crs.device("dev-a", "thermo"),
        )
        await _settle(h)
        assert mapper.summary() == [("UpdateDeviceModel", "thermo"), ("UpdateDevice", "dev-a")]
        assert mapper.models[("default", "thermo")].spec.properties[0].unit == "degC"


async def test_unreachable_mapper_gets_calls_when_back_and_does_not_block_others(
    make_agent: Any, sockdir: Path
) -> None:
    h = await make_agent()
    down_sock, up_sock = sockdir / "down.sock", sockdir / "up.sock"
    async with serve_mapper(up_sock) as healthy:
        await h.stub.MapperRegister(register_request("down", "testproto", str(down_sock)))
        await h.stub.MapperRegister(register_request("up", "other", str(up_sock)))
        crs.write(
            h.crs,
            "a.yaml",
            crs.model("thermo"),
            crs.device("dev-a", "thermo"),
            crs.model("cam", protocol="other"),
            crs.device("cam-1", "cam", protocol="other"),
        )
        await h.agent.reload()
        # The healthy mapper is served at once although the other one is down.
        await healthy.wait_for(2, timeout=5)
        assert healthy.summary() == [("CreateDeviceModel", "cam"), ("RegisterDevice", "cam-1")]
        link = h.agent.dispatcher.links()["testproto"]
        for _ in range(100):
            if link.stats.retries >= 2:
                break
            await asyncio.sleep(0.05)
        assert link.stats.retries >= 2 and link.pending == 2
        # The mapper comes up: the queued calls arrive, in order.
        late = RecordingMapper()
        async with serve_mapper(down_sock, late):
            await late.wait_for(2, timeout=15)
            assert late.summary() == [("CreateDeviceModel", "thermo"), ("RegisterDevice", "dev-a")]


async def test_protocol_change_moves_the_device_between_mappers(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    a_sock, b_sock = sockdir / "a.sock", sockdir / "b.sock"
    async with serve_mapper(a_sock) as a, serve_mapper(b_sock) as b:
        await h.stub.MapperRegister(register_request("a", "testproto", str(a_sock)))
        await h.stub.MapperRegister(register_request("b", "other", str(b_sock)))
        crs.write(h.crs, "x.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
        await _settle(h)
        a.calls.clear()
        crs.write(h.crs, "x.yaml", crs.model("thermo"), crs.device("dev-a", "thermo", protocol="other"))
        await _settle(h)
        assert a.summary() == [("RemoveDevice", "dev-a")]
        assert b.summary() == [("RegisterDevice", "dev-a")]


async def test_broken_file_keeps_its_last_good_objects(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    async with _serving_dev_a(h, sockdir) as mapper:
        (h.crs / "a.yaml").write_text("apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: [\n")
        await _settle(h)
        assert mapper.calls == []  # nothing removed
        assert h.agent.inventory.device(crs_key("dev-a")) is not None


async def test_device_waits_for_its_model(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    msock = sockdir / "m.sock"
    async with serve_mapper(msock) as mapper:
        await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        crs.write(h.crs, "dev.yaml", crs.device("dev-a", "thermo"))
        await _settle(h)
        answer = await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        assert len(answer.deviceList) == 0 and mapper.calls == []
        crs.write(h.crs, "model.yaml", crs.model("thermo"))
        await _settle(h)
        assert mapper.summary() == [("CreateDeviceModel", "thermo"), ("RegisterDevice", "dev-a")]


async def test_changes_made_while_the_agent_was_down_reach_the_mapper(make_agent: Any, sockdir: Path) -> None:
    from dmi.agent.app import Agent

    h = await make_agent()
    msock = sockdir / "m.sock"
    async with serve_mapper(msock) as mapper:
        await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
        await _settle(h)
        await h.agent.stop()
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo", desired="30"))
        mapper.calls.clear()
        restarted = Agent(h.agent.config)
        await restarted.start()
        h.agent = restarted  # the fixture stops it
        await asyncio.wait_for(restarted.settle(), 10)
        assert mapper.summary() == [("UpdateDevice", "dev-a")]


@pytest.mark.parametrize(
    "broken",
    [
        "schema",  # a field of the wrong type: the file parses, that document is refused
        "yaml",  # the file does not parse at all
    ],
)
async def test_a_file_broken_while_the_agent_was_down_takes_nothing_away(
    make_agent: Any, sockdir: Path, broken: str
) -> None:
    from dmi.agent.app import Agent

    h = await make_agent()
    msock = sockdir / "m.sock"
    async with serve_mapper(msock) as mapper:
        await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
        crs.write(h.crs, "b.yaml", crs.model("other"), crs.device("dev-b", "other"))
        await _settle(h)
        await h.agent.stop()
        if broken == "schema":
            text = (h.crs / "a.yaml").read_text().replace("collectCycle: 1000", "collectCycle: oops", 1)
            assert "oops" in text
            (h.crs / "a.yaml").write_text(text)
        else:
            (h.crs / "a.yaml").write_text("apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: [\n")
        (h.crs / "b.yaml").unlink()  # a real removal while down still reaches the mapper
        mapper.calls.clear()
        restarted = Agent(h.agent.config)
        await restarted.start()
        h.agent = restarted  # the fixture stops it
        await asyncio.wait_for(restarted.settle(), 10)
        assert restarted.inventory.device(crs_key("dev-a")) is not None
        assert restarted.inventory.device(crs_key("dev-b")) is None
        assert sorted(mapper.summary()) == [("RemoveDevice", "dev-b"), ("RemoveDeviceModel", "other")]
        answer = await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        assert [d.name for d in answer.deviceList] == ["dev-a"]


async def test_twins_of_removed_properties_and_devices_go_with_them(make_agent: Any, sockdir: Path) -> None:
    """As on a cluster, where a DeviceStatus is deleted with its Device: a property removed from a Device no longer
    shows its old twin, and a Device deleted and created again starts empty. But only once it stayed away for the
    grace time: a device missing from one snapshot only (a file caught mid-write) keeps its twins."""
    from tests.peers import twin

    h = await make_agent(forget_after_s=1.5)
    key = crs_key("dev-a")
    crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
    await _settle(h)
    report = pb.ReportDeviceStatusRequest(
        deviceName="dev-a",
        deviceNamespace="default",
        reportedDevice=pb.DeviceStatus(twins=[twin("temperature", "21"), twin("setpoint", "20")]),
    )
    await h.stub.ReportDeviceStatus(report)
    await h.stub.ReportDeviceStates(
        pb.ReportDeviceStatesRequest(deviceName="dev-a", deviceNamespace="default", state="ok")
    )
    assert {t.property for t in h.agent.store.twins(key)} == {"temperature", "setpoint"}

    (h.crs / "a.yaml").write_text("")  # a moment without the device
    await _settle(h)
    crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
    await _settle(h)
    await asyncio.sleep(2.0)
    assert {t.property for t in h.agent.store.twins(key)} == {"temperature", "setpoint"}

    only_temperature = crs.device("dev-a", "thermo")
    only_temperature["spec"]["properties"] = only_temperature["spec"]["properties"][:1]
    crs.write(h.crs, "a.yaml", crs.model("thermo"), only_temperature)
    await _settle(h)
    await until(lambda: [t.property for t in h.agent.store.twins(key)] == ["temperature"], what="setpoint's twin gone")
    reader = StatusReader(h.agent.config.state_dir)
    try:
        view = reader.device(key)
        assert view is not None and [t.property for t in view.twins] == ["temperature"]  # SQLite, not only the copy
    finally:
        reader.close()

    (h.crs / "a.yaml").unlink()
    await _settle(h)
    await until(lambda: h.agent.store.state(key) is None and h.agent.store.twins(key) == [], what="dev-a forgotten")
    crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
    await _settle(h)
    assert h.agent.store.twins(key) == [] and h.agent.store.state(key) is None


async def test_a_model_edited_while_queued_still_precedes_its_devices(make_agent: Any, sockdir: Path) -> None:
    """A model's create, folded with a later edit while the mapper is busy, keeps its place in the queue: it went
    to the end, behind the RegisterDevice that needs it."""
    from tests.peers import RecordingMapper

    gate = asyncio.Event()

    class Busy(RecordingMapper):
        async def CreateDeviceModel(self, request: Any, context: Any) -> Any:
            if request.model.name == "first":
                await gate.wait()  # the mapper is busy with this call while the others queue up
            return await super().CreateDeviceModel(request, context)

    h = await make_agent()
    msock = sockdir / "m.sock"
    async with serve_mapper(msock, Busy()) as mapper:
        await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        crs.write(h.crs, "0.yaml", crs.model("first"))
        await h.agent.reload()
        await asyncio.sleep(0.2)  # its create is in flight
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"))
        await h.agent.reload()
        edited = crs.model("thermo")
        edited["spec"]["properties"][0]["description"] = "edited while queued"
        crs.write(h.crs, "a.yaml", edited, crs.device("dev-a", "thermo"))
        await h.agent.reload()
        gate.set()
        await asyncio.wait_for(h.agent.settle(), 10)
        assert mapper.summary() == [
            ("CreateDeviceModel", "first"),
            ("CreateDeviceModel", "thermo"),
            ("RegisterDevice", "dev-a"),
        ]
        assert mapper.calls[1].request.model.spec.properties[0].description == "edited while queued"


async def test_a_duplicate_in_a_new_file_does_not_replace_the_served_device(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    async with _serving_dev_a(h, sockdir) as mapper:
        served = h.agent.inventory.device(crs_key("dev-a"))
        # A copy with another desired value, in a file that sorts first (the validator blames the later file).
        crs.write(h.crs, "0-copy.yaml", crs.device("dev-a", "thermo", desired="99"))
        await _settle(h)
        assert mapper.calls == []
        assert h.agent.inventory.device(crs_key("dev-a")) == served
        (h.crs / "0-copy.yaml").unlink()
        await _settle(h)
        assert mapper.calls == [] and h.agent.inventory.device(crs_key("dev-a")) == served


def crs_key(name: str) -> Any:
    from dmi.resources import ObjectKey

    return ObjectKey("default", name)


async def test_register_answer_matches_what_register_device_sent(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    msock = sockdir / "m.sock"
    async with serve_mapper(msock) as mapper:
        await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo", desired="3"))
        await _settle(h)
        answer = await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        assert list(answer.deviceList) == [mapper.devices[("default", "dev-a")]]
        assert isinstance(answer.modelList[0], pb.DeviceModel)


async def test_a_broken_document_keeps_its_last_version_while_its_neighbours_apply(
    make_agent: Any, sockdir: Path
) -> None:
    h = await make_agent()
    msock = sockdir / "m.sock"
    async with serve_mapper(msock) as mapper:
        await h.stub.MapperRegister(register_request("m", "testproto", str(msock)))
        crs.write(h.crs, "a.yaml", crs.model("thermo"), crs.device("dev-a", "thermo"), crs.device("dev-b", "thermo"))
        await _settle(h)
        mapper.calls.clear()
        broken = crs.device("dev-a", "thermo", desired="99")
        broken["spec"]["properties"][0]["collectCycle"] = "fast"
        crs.write(
            h.crs,
            "a.yaml",
            crs.model("thermo"),
            broken,
            crs.device("dev-b", "thermo", desired="5"),
            crs.device("dev-new-broken", "nope"),
        )
        await _settle(h)
        # dev-b's edit applies; dev-a stays as it was (not removed, not updated); the new broken one is not served.
        assert mapper.summary() == [("UpdateDevice", "dev-b")]
        assert h.agent.inventory.device(crs_key("dev-a")) is not None
        assert h.agent.inventory.device(crs_key("dev-new-broken")) is None


async def test_edits_while_a_mapper_is_down_fold_into_one_call_per_object(make_agent: Any, sockdir: Path) -> None:
    h = await make_agent()
    msock = sockdir / "late.sock"
    await h.stub.MapperRegister(register_request("late", "testproto", str(msock)))
    for n in range(5):
        crs.write(
            h.crs,
            "a.yaml",
            crs.model("thermo"),
            crs.device("dev-a", "thermo", desired=str(20 + n)),
            *([crs.device("ghost", "thermo")] if n == 1 else []),
        )
        await h.agent.reload()
    link = h.agent.dispatcher.links()["testproto"]
    # dev-a: one register carrying the newest edit; ghost: created and removed before the mapper heard of it.
    assert link.pending == 2 and link.stats.coalesced == 6
    late = RecordingMapper()
    async with serve_mapper(msock, late):
        await asyncio.wait_for(h.agent.settle(), 15)
    assert late.summary() == [("CreateDeviceModel", "thermo"), ("RegisterDevice", "dev-a")]
    assert late.devices[("default", "dev-a")].spec.properties[1].desired.value == "24"
