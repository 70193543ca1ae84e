"""The Kubernetes API simulator, driven by lightkube's AsyncClient as the agent drives a real API server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import OnErrorAction, OnErrorResult, PatchType, on_error_retry

from tests.k8s_sim import DEVICE, KubeApiSimulator, ResourceType

API = "devices.kubeedge.io/v1beta1"
Device = create_namespaced_resource("devices.kubeedge.io", "v1beta1", "Device", "devices")
DeviceStatus = create_namespaced_resource("devices.kubeedge.io", "v1beta1", "DeviceStatus", "devicestatuses")
CustomResourceDefinition = create_global_resource(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions"
)
CRD_FILE = Path(__file__).resolve().parent.parent / "crds" / "devices_v1beta1_device.yaml"


def device_doc(name: str, node: str = "edge-1", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "labels": labels or {"node": node}},
        "spec": {"nodeName": node, "deviceModelRef": {"name": "thermo"}, "properties": [{"name": "t"}]},
    }


@pytest.fixture
async def sim() -> AsyncIterator[KubeApiSimulator]:
    simulator = KubeApiSimulator()
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def client(sim: KubeApiSimulator) -> AsyncIterator[AsyncClient]:
    kube = AsyncClient(config=sim.lightkube_config(), field_manager="test-suite")
    try:
        yield kube
    finally:
        await kube.close()


async def collect(stream: Any, count: int, timeout: float = 5.0) -> list[tuple[str, Any]]:
    """The first ``count`` events of a lightkube watch."""
    events: list[tuple[str, Any]] = []

    async def run() -> None:
        # Closed here, not left to the garbage collector: an abandoned watch generator logs errors at exit.
        async with contextlib.aclosing(stream):
            async for kind, obj in stream:
                events.append((kind, obj))
                if len(events) == count:
                    return

    await asyncio.wait_for(run(), timeout)
    return events


def rv(obj: Any) -> int:
    return int(obj.metadata.resourceVersion)


async def test_create_get_list_patch_delete(sim: KubeApiSimulator, client: AsyncClient) -> None:
    start = sim.resource_version
    created = await client.create(Device(device_doc("d1")))
    assert created.metadata.uid and created.metadata.creationTimestamp
    assert created.metadata.generation == 1
    assert rv(created) == start + 1
    await client.create(Device(device_doc("d2", node="edge-2")))

    got = await client.get(Device, "d1", namespace="default")
    assert got.spec == {"nodeName": "edge-1", "deviceModelRef": {"name": "thermo"}, "properties": [{"name": "t"}]}

    listing = client.list(Device, namespace="default")
    names = [d.metadata.name async for d in listing]
    assert names == ["d1", "d2"]
    assert listing.resourceVersion == str(start + 2)
    assert [d.metadata.name async for d in client.list(Device, namespace="*", labels={"node": "edge-2"})] == ["d2"]
    assert [d.metadata.name async for d in client.list(Device, fields={"metadata.name": "d1"})] == ["d1"]
    assert [d.metadata.name async for d in client.list(Device, namespace="other")] == []

    # Merge patch: objects merge, null deletes, lists replace; a spec change bumps generation.
    patched = await client.patch(
        Device,
        "d1",
        {"metadata": {"labels": {"node": None, "x": "1"}}, "spec": {"properties": [{"name": "u"}]}},
        namespace="default",
        patch_type=PatchType.MERGE,
    )
    assert patched.metadata.labels == {"x": "1"}
    assert patched.spec["properties"] == [{"name": "u"}]
    assert patched.spec["nodeName"] == "edge-1"
    assert patched.metadata.generation == 2
    assert rv(patched) == start + 3
    # A label-only change keeps generation; a no-op patch writes nothing (same resourceVersion).
    relabelled = await client.patch(
        Device, "d1", {"metadata": {"labels": {"y": "2"}}}, namespace="default", patch_type=PatchType.MERGE
    )
    assert relabelled.metadata.generation == 2
    noop = await client.patch(
        Device, "d1", {"metadata": {"labels": {"y": "2"}}}, namespace="default", patch_type=PatchType.MERGE
    )
    assert rv(noop) == rv(relabelled) == start + 4

    await client.delete(Device, "d1", namespace="default")
    assert sim.get("devices", "default", "d1") is None
    assert sim.resource_version == start + 5
    with pytest.raises(ApiError) as err:
        await client.get(Device, "d1", namespace="default")
    assert (err.value.status.code, err.value.status.reason) == (404, "NotFound")

    assert sim.requests[("create", "devices")] == 2
    assert sim.requests[("patch", "devices")] == 3
    assert sim.writes_to("devices", "default", "d1") == 5  # create, 3 patches, delete
    assert [w.verb for w in sim.writes] == ["create", "create", "patch", "patch", "patch", "delete"]
    assert sim.writes[2].content_type == "application/merge-patch+json"
    assert sim.writes[2].query["fieldManager"] == "test-suite"


async def test_errors_are_status_objects(sim: KubeApiSimulator, client: AsyncClient) -> None:
    await client.create(Device(device_doc("d1")))
    with pytest.raises(ApiError) as err:
        await client.create(Device(device_doc("d1")))
    assert (err.value.status.code, err.value.status.reason) == (409, "AlreadyExists")

    # Custom resources refuse unconditional and stale updates.
    current = await client.get(Device, "d1", namespace="default")
    stale_doc = device_doc("d1")
    # Built from a dict: assigning to a generic resource's metadata attribute afterwards is not kept.
    stale_doc["metadata"]["resourceVersion"] = str(rv(current) - 1)
    stale = Device(stale_doc)
    with pytest.raises(ApiError) as err:
        await client.replace(stale)
    assert (err.value.status.code, err.value.status.reason) == (409, "Conflict")
    with pytest.raises(ApiError) as err:
        await client.replace(Device(device_doc("d1")))
    assert (err.value.status.code, err.value.status.reason) == (422, "Invalid")
    fresh = device_doc("d1", node="edge-9")
    fresh["metadata"]["resourceVersion"] = current.metadata.resourceVersion
    replaced = await client.replace(Device(fresh))
    assert replaced.spec["nodeName"] == "edge-9"
    assert replaced.metadata.uid == current.metadata.uid

    # A patch carrying a stale resourceVersion is a failed precondition.
    with pytest.raises(ApiError) as err:
        await client.patch(
            Device,
            "d1",
            {"metadata": {"resourceVersion": current.metadata.resourceVersion}, "spec": {"nodeName": "x"}},
            namespace="default",
            patch_type=PatchType.MERGE,
        )
    assert err.value.status.code == 409

    # Field selectors on CRD spec fields are not supported by the real API server either.
    with pytest.raises(ApiError) as err:
        _ = [d async for d in client.list(Device, fields={"spec.nodeName": "edge-1"})]
    assert (err.value.status.code, err.value.status.reason) == (400, "BadRequest")

    # Our CRDs declare no status subresource: /status does not exist.
    with pytest.raises(ApiError) as err:
        await client.patch(Device.Status, "d1", {"status": {"x": 1}}, namespace="default", patch_type=PatchType.MERGE)
    assert err.value.status.code == 404
    with pytest.raises(ApiError) as err:
        await client.get(Device.Status, "d1", namespace="default")
    assert err.value.status.code == 404

    with pytest.raises(ApiError) as err:
        await client.patch(Device, "nope", {"spec": {}}, namespace="default", patch_type=PatchType.MERGE)
    assert err.value.status.code == 404


async def test_status_subresource_when_declared() -> None:
    sim = KubeApiSimulator([ResourceType("example.io", "v1", "widgets", "Widget", status_subresource=True)])
    await sim.start()
    Widget = create_namespaced_resource("example.io", "v1", "Widget", "widgets")
    client = AsyncClient(config=sim.lightkube_config())
    try:
        doc = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"a": 1}}
        created = await client.create(Widget({**doc, "status": {"ignored": True}}))
        assert created.status is None  # create drops the status
        written = await client.patch(
            Widget.Status, "w", {"status": {"ok": True}, "spec": {"a": 2}}, patch_type=PatchType.MERGE
        )
        assert written.status == {"ok": True}
        assert written.spec == {"a": 1}  # only status changes through /status
        assert written.metadata.generation == 1
        main = await client.patch(Widget, "w", {"status": {"ok": False}, "spec": {"a": 3}}, patch_type=PatchType.MERGE)
        assert main.status == {"ok": True} and main.spec == {"a": 3}
        assert main.metadata.generation == 2
        assert sim.requests[("patch", "widgets/status")] == 1
    finally:
        await client.close()
        await sim.stop()


async def test_watch_sees_writes_in_order(sim: KubeApiSimulator, client: AsyncClient) -> None:
    sim.create(device_doc("before"))
    stream = client.watch(Device, namespace="default")
    events_task = asyncio.create_task(collect(stream, 4))
    await sim.wait_watches(1)
    await client.create(Device(device_doc("d1")))
    await client.patch(Device, "d1", {"spec": {"nodeName": "edge-2"}}, namespace="default", patch_type=PatchType.MERGE)
    await client.delete(Device, "d1", namespace="default")
    events = await events_task

    assert [(kind, obj.metadata.name) for kind, obj in events] == [
        ("ADDED", "before"),  # no resourceVersion: the current state first
        ("ADDED", "d1"),
        ("MODIFIED", "d1"),
        ("DELETED", "d1"),
    ]
    versions = [rv(obj) for _, obj in events]
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert versions[-1] == sim.resource_version
    assert events[2][1].spec["nodeName"] == "edge-2"
    assert sim.requests[("watch", "devices")] == 1


async def test_watch_resume_replays_exactly_the_missed_events(sim: KubeApiSimulator, client: AsyncClient) -> None:
    sim.create(device_doc("a"))
    sim.create(device_doc("b"))
    listing = client.list(Device, namespace="default")
    assert [d.metadata.name async for d in listing] == ["a", "b"]
    seen = listing.resourceVersion

    # Written while no one watches, partly "by a cluster user" (no HTTP), partly through the API.
    sim.merge_patch("devices", "default", "a", {"spec": {"nodeName": "edge-3"}})
    await client.create(Device(device_doc("c")))
    sim.delete("devices", "default", "b")
    sim.create({**device_doc("elsewhere"), "metadata": {"name": "elsewhere", "namespace": "other"}})

    events = await collect(client.watch(Device, namespace="default", resource_version=seen), 3)
    assert [(kind, obj.metadata.name) for kind, obj in events] == [("MODIFIED", "a"), ("ADDED", "c"), ("DELETED", "b")]
    assert [rv(obj) for _, obj in events] == [int(seen) + 1, int(seen) + 2, int(seen) + 3]

    # Resuming from the last event seen replays nothing: the next event is a live one, once.
    stream = client.watch(Device, namespace="default", resource_version=events[-1][1].metadata.resourceVersion)
    task = asyncio.create_task(collect(stream, 1))
    await sim.wait_watches(1)
    sim.merge_patch("devices", "default", "c", {"metadata": {"labels": {"new": "yes"}}})
    [(kind, obj)] = await task
    assert (kind, obj.metadata.name, obj.metadata.labels) == ("MODIFIED", "c", {"node": "edge-1", "new": "yes"})


async def test_watch_label_selector_transitions(sim: KubeApiSimulator, client: AsyncClient) -> None:
    sim.create(device_doc("d1", node="edge-1"))
    task = asyncio.create_task(collect(client.watch(Device, namespace="default", labels={"node": "edge-2"}), 2))
    await sim.wait_watches(1)
    sim.merge_patch("devices", "default", "d1", {"metadata": {"labels": {"node": "edge-2"}}})  # enters
    sim.merge_patch("devices", "default", "d1", {"metadata": {"labels": {"node": "edge-3"}}})  # leaves
    events = await task
    assert [(k, o.metadata.labels["node"]) for k, o in events] == [("ADDED", "edge-2"), ("DELETED", "edge-3")]


async def test_compacted_history_gives_410(sim: KubeApiSimulator, client: AsyncClient) -> None:
    sim.create(device_doc("a"))
    old = str(sim.resource_version)
    sim.merge_patch("devices", "default", "a", {"spec": {"nodeName": "edge-2"}})
    sim.compact()

    # lightkube raises the in-stream ERROR event as ApiError (default on_error: raise).
    with pytest.raises(ApiError) as err:
        await collect(client.watch(Device, namespace="default", resource_version=old), 1)
    assert (err.value.status.code, err.value.status.reason) == (410, "Expired")
    assert "too old resource version" in err.value.status.message

    # With on_error_retry lightkube restarts without a resourceVersion: the current state comes as ADDED.
    events = await collect(client.watch(Device, namespace="default", resource_version=old, on_error=on_error_retry), 1)
    assert [(k, o.metadata.name, o.spec["nodeName"]) for k, o in events] == [("ADDED", "a", "edge-2")]

    # A fresh list's resourceVersion can be watched from after a compaction.
    listing = client.list(Device, namespace="default")
    _ = [d async for d in listing]
    task = asyncio.create_task(
        collect(client.watch(Device, namespace="default", resource_version=listing.resourceVersion), 1)
    )
    await sim.wait_watches(1)
    sim.delete("devices", "default", "a")
    assert [k for k, _ in await task] == ["DELETED"]


async def test_bounded_history_expires_old_versions() -> None:
    sim = KubeApiSimulator(history_size=3)
    await sim.start()
    client = AsyncClient(config=sim.lightkube_config())
    try:
        sim.create(device_doc("a"))
        first = str(sim.resource_version)
        for i in range(3):
            sim.merge_patch("devices", "default", "a", {"spec": {"n": i}})
        # Three events kept, all after `first`: resuming from it still works.
        events = await collect(client.watch(Device, namespace="default", resource_version=first), 3)
        assert [o.spec["n"] for _, o in events] == [0, 1, 2]
        sim.merge_patch("devices", "default", "a", {"spec": {"n": 3}})  # the event after `first` is dropped
        with pytest.raises(ApiError) as err:
            await collect(client.watch(Device, namespace="default", resource_version=first), 1)
        assert err.value.status.code == 410
    finally:
        await client.close()
        await sim.stop()


async def test_break_watches_cuts_the_stream(sim: KubeApiSimulator, client: AsyncClient) -> None:
    sim.create(device_doc("a"))
    received: list[str] = []

    async def consume() -> None:
        stream = client.watch(Device, namespace="default")
        async with contextlib.aclosing(stream):
            async for kind, obj in stream:
                received.append(f"{kind} {obj.metadata.name}")

    task = asyncio.create_task(consume())
    await sim.wait_watches(1)
    assert sim.break_watches() == 1
    # A cut mid-body: httpx reports a protocol error, which lightkube raises by default.
    with pytest.raises(httpx2.RemoteProtocolError):
        await asyncio.wait_for(task, 5)
    assert received == ["ADDED a"]
    assert sim.open_watches == 0

    # With on_error_retry, lightkube resumes from the last version it saw: no loss, no duplicate.
    errors: list[Exception] = []

    def retry(exc: Exception, count: int) -> OnErrorResult:
        errors.append(exc)
        return OnErrorResult(OnErrorAction.RETRY)

    stream = client.watch(Device, namespace="default", on_error=retry)
    task = asyncio.create_task(collect(stream, 3))
    await sim.wait_watches(1)
    sim.break_watches()
    sim.create(device_doc("b"))  # written while the client reconnects
    await sim.wait_watches(1)
    sim.create(device_doc("c"))
    events = await task
    assert [(k, o.metadata.name) for k, o in events] == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
    assert len(errors) == 1 and isinstance(errors[0], httpx2.RemoteProtocolError)
    assert sim.requests[("watch", "devices")] == 3


async def test_end_watches_and_timeout_reconnect_silently(sim: KubeApiSimulator, client: AsyncClient) -> None:
    stream = client.watch(Device, namespace="default", server_timeout=1)
    task = asyncio.create_task(collect(stream, 1))
    await sim.wait_watches(1)
    assert sim.end_watches() == 1  # a clean end: lightkube opens a new watch on its own
    await asyncio.sleep(0.05)
    await sim.wait_watches(1)
    await asyncio.sleep(1.1)  # the server-side timeout ends the second one the same way
    await sim.wait_watches(1)
    sim.create(device_doc("late"))
    [(kind, obj)] = await task
    assert (kind, obj.metadata.name) == ("ADDED", "late")
    assert sim.requests[("watch", "devices")] == 3
    assert sim.writes == []  # direct writes are not HTTP writes


async def test_bookmarks() -> None:
    sim = KubeApiSimulator(bookmark_interval=0.2)
    await sim.start()
    try:
        async with httpx2.AsyncClient(base_url=sim.url, headers={"Authorization": f"Bearer {sim.token}"}) as http:
            params = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
            async with http.stream("GET", "/apis/devices.kubeedge.io/v1beta1/devices", params=params) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"] == "application/json"
                lines = [yaml.safe_load(line) async for line in resp.aiter_lines()]
        assert lines and {e["type"] for e in lines} == {"BOOKMARK"}
        assert lines[0]["object"]["metadata"] == {"resourceVersion": str(sim.resource_version)}
        assert 3 <= len(lines) <= 6
    finally:
        await sim.stop()


async def test_outage_keeps_objects_and_port(sim: KubeApiSimulator, client: AsyncClient) -> None:
    await client.create(Device(device_doc("a")))
    port = sim.port
    await sim.stop()
    with pytest.raises(httpx2.ConnectError):
        await client.get(Device, "a", namespace="default")
    sim.merge_patch("devices", "default", "a", {"spec": {"nodeName": "moved"}})  # changed during the outage
    await sim.start()
    assert sim.port == port
    got = await client.get(Device, "a", namespace="default")
    assert got.spec["nodeName"] == "moved"
    assert got.metadata.generation == 2


async def test_stop_cuts_open_watches(sim: KubeApiSimulator, client: AsyncClient) -> None:
    task = asyncio.create_task(collect(client.watch(Device, namespace="default"), 1))
    await sim.wait_watches(1)
    await asyncio.wait_for(sim.stop(), 3)
    with pytest.raises(httpx2.RemoteProtocolError):
        await asyncio.wait_for(task, 5)
    await sim.start()  # the fixture stops it again


async def test_server_side_apply_of_a_crd(sim: KubeApiSimulator, client: AsyncClient) -> None:
    doc = yaml.safe_load(CRD_FILE.read_text())
    name = doc["metadata"]["name"]
    created = await client.apply(
        CustomResourceDefinition(**doc), name=name, field_manager="kubeedge-mapper", force=True
    )
    assert created.metadata.name == "devices.devices.kubeedge.io"
    assert created.spec["names"]["kind"] == "Device"
    assert created.metadata.generation == 1
    assert sim.writes[0].content_type == "application/apply-patch+yaml"
    assert sim.writes[0].query == {"fieldManager": "kubeedge-mapper", "force": "true"}
    assert sim.writes[0].code == 201

    again = await client.apply(CustomResourceDefinition(**doc), name=name, field_manager="kubeedge-mapper", force=True)
    assert rv(again) == rv(created)  # same configuration: nothing written
    doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "changed"
    updated = await client.apply(
        CustomResourceDefinition(**doc), name=name, field_manager="kubeedge-mapper", force=True
    )
    assert updated.metadata.uid == created.metadata.uid
    assert updated.metadata.generation == 2
    assert updated.spec["versions"][0]["schema"]["openAPIV3Schema"]["description"] == "changed"
    assert [w.code for w in sim.writes] == [201, 200, 200]
    assert [m.manager for m in updated.metadata.managedFields] == ["kubeedge-mapper"]
    assert sim.list("customresourcedefinitions")[0]["metadata"]["name"] == name

    # Fields the manager stops applying are removed.
    del doc["spec"]["names"]["singular"]
    pruned = await client.apply(CustomResourceDefinition(**doc), name=name, field_manager="kubeedge-mapper", force=True)
    assert "singular" not in pruned.spec["names"]


async def test_apply_creates_and_merges_custom_resources(sim: KubeApiSimulator, client: AsyncClient) -> None:
    applied = await client.apply(Device(device_doc("d1")), field_manager="agent")
    assert applied.metadata.generation == 1
    sim.merge_patch("devices", "default", "d1", {"spec": {"extra": True}})  # someone else's field
    again = await client.apply(Device(device_doc("d1", node="edge-5")), field_manager="agent")
    assert again.spec["nodeName"] == "edge-5" and again.spec["extra"] is True


async def test_fail_next_and_counters(sim: KubeApiSimulator, client: AsyncClient) -> None:
    sim.create(
        {"apiVersion": API, "kind": "DeviceStatus", "metadata": {"name": "s", "namespace": "default"}, "spec": {}}
    )
    sim.fail_next("patch", "devicestatuses", 409)
    sim.fail_next("get", "devicestatuses", 500, times=2)
    with pytest.raises(ApiError) as err:
        await client.patch(DeviceStatus, "s", {"status": {"a": 1}}, namespace="default", patch_type=PatchType.MERGE)
    assert (err.value.status.code, err.value.status.reason) == (409, "Conflict")
    ok = await client.patch(DeviceStatus, "s", {"status": {"a": 1}}, namespace="default", patch_type=PatchType.MERGE)
    assert ok.status == {"a": 1}
    for _ in range(2):
        with pytest.raises(ApiError) as err:
            await client.get(DeviceStatus, "s", namespace="default")
        assert (err.value.status.code, err.value.status.reason) == (500, "InternalError")
    assert (await client.get(DeviceStatus, "s", namespace="default")).status == {"a": 1}
    assert sim.requests[("patch", "devicestatuses")] == 2
    assert sim.requests[("get", "devicestatuses")] == 3
    assert sim.writes_to("devicestatuses", "default", "s") == 2
    assert [w.code for w in sim.writes] == [409, 200]
    assert sim.writes[1].body == {"status": {"a": 1}}


async def test_json_patch(sim: KubeApiSimulator, client: AsyncClient) -> None:
    sim.create(device_doc("d1"))
    patched = await client.patch(
        Device,
        "d1",
        [
            {"op": "add", "path": "/spec/properties/-", "value": {"name": "h"}},
            {"op": "replace", "path": "/spec/nodeName", "value": "edge-7"},
            {"op": "remove", "path": "/metadata/labels/node"},
        ],
        namespace="default",
        patch_type=PatchType.JSON,
    )
    assert patched.spec["properties"] == [{"name": "t"}, {"name": "h"}]
    assert patched.spec["nodeName"] == "edge-7"
    assert patched.metadata.labels is None or patched.metadata.labels == {}
    with pytest.raises(ApiError) as err:
        await client.patch(
            Device, "d1", [{"op": "test", "path": "/spec/nodeName", "value": "no"}], patch_type=PatchType.JSON
        )
    assert err.value.status.code == 422


async def test_kubeconfig_file_and_token(sim: KubeApiSimulator, tmp_path: Path) -> None:
    path = sim.kubeconfig(tmp_path / "kubeconfig")
    config = KubeConfig.from_file(str(path))
    client = AsyncClient(config=config)
    try:
        await client.create(Device(device_doc("d1")))
        assert client.namespace == "default"
        assert sim.get(DEVICE, "default", "d1") is not None
    finally:
        await client.close()
    bad = sim.kubeconfig_dict()
    bad["users"][0]["user"]["token"] = "wrong"
    intruder = AsyncClient(config=KubeConfig.from_dict(bad))
    try:
        with pytest.raises(ApiError) as err:
            await intruder.get(Device, "d1", namespace="default")
        assert (err.value.status.code, err.value.status.reason) == (401, "Unauthorized")
    finally:
        await intruder.close()


async def test_finalizers_delay_deletion(sim: KubeApiSimulator, client: AsyncClient) -> None:
    doc = device_doc("d1")
    doc["metadata"]["finalizers"] = ["example.io/cleanup"]
    sim.create(doc)
    await client.delete(Device, "d1", namespace="default")
    marked = sim.get("devices", "default", "d1")
    assert marked is not None and marked["metadata"]["deletionTimestamp"]
    await client.patch(Device, "d1", {"metadata": {"finalizers": None}}, patch_type=PatchType.MERGE)
    assert sim.get("devices", "default", "d1") is None
