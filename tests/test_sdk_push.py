"""Push methods against real peers: mosquitto (plain, TLS + password, wrong password) and an HTTP endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapper_framework.config import config_from_dict
from mapper_framework.mapper import Mapper
from tests import crs
from tests.brokers import USER, Broker, HttpSink, Subscriber, free_port, mosquitto
from tests.sdk_driver import FakeFleet, fast_device, stored, until


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with mosquitto(tmp_path) as b:
        yield b


def pushing_device(name: str, push: dict[str, Any]) -> dict[str, Any]:
    dev = fast_device(name)
    dev["spec"]["properties"][0]["pushMethod"] = push
    return dev


@pytest.fixture
async def run_mapper(make_agent: Any, sockdir: Path) -> AsyncIterator[Any]:
    started: list[Mapper] = []

    async def start(
        devices: list[dict[str, Any]], push_settings: dict[str, Any] | None = None
    ) -> tuple[Any, Mapper, FakeFleet]:
        h = await make_agent()
        crs.write(h.crs, "d.yaml", crs.model("thermo"), *devices)
        await h.agent.reload()
        fleet = FakeFleet()
        config = config_from_dict(
            {
                "grpc_server": {"socket_path": str(sockdir / "push.sock")},
                "common": {
                    "name": "push-mapper",
                    "protocol": "testproto",
                    "edgecore_sock": str(h.agent.socket_path),
                    "http_port": "0",
                },
                "push": push_settings or {},
            }
        )
        mapper = Mapper(config, fleet)
        await mapper.start()
        started.append(mapper)
        return h, mapper, fleet

    yield start
    for m in started:
        await m.stop()


async def test_mqtt_push_delivers_every_value(broker: Broker, run_mapper: Any) -> None:
    sub = Subscriber(broker.plain_port, "plant/temperature")
    try:
        push = {
            "mqtt": {
                "address": f"tcp://127.0.0.1:{broker.plain_port}",
                "topic": "plant/temperature",
                "qos": 1,
                "retained": True,
            }
        }
        _, mapper, fleet = await run_mapper([pushing_device("dev-a", push)])
        fleet.devices["dev-a"].registers[0] = 17
        await until(lambda: any(m["value"] == "17" for m in sub.messages), what="pushed value")
        msg = next(m for m in sub.messages if m["value"] == "17")
        assert {k: msg[k] for k in ("namespace", "device", "property", "value", "type")} == {
            "namespace": "default",
            "device": "dev-a",
            "property": "temperature",
            "value": "17",
            "type": "int",
        }
        assert msg["timestamp"] > 1_600_000_000_000
        # setpoint has no pushMethod: nothing of it on the broker.
        assert all(m["property"] == "temperature" for m in sub.messages)
        dest = next(iter(mapper.push.destinations.values()))
        assert dest.stats.sent >= 1 and dest.stats.dropped == 0
    finally:
        sub.close()


async def test_mqtt_push_over_tls_with_username_and_password(broker: Broker, run_mapper: Any, tmp_path: Path) -> None:
    sub = Subscriber(broker.plain_port, "secure/t")  # listeners share topics
    try:
        push = {"mqtt": {"address": f"ssl://127.0.0.1:{broker.tls_port}", "topic": "secure/t", "qos": 1}}
        settings = {
            "mqtt": {"username": USER, "password_file": str(broker.password_file), "ca_file": str(broker.certs["ca"])}
        }
        _, _, fleet = await run_mapper([pushing_device("dev-a", push)], settings)
        fleet.devices["dev-a"].registers[0] = 99
        await until(lambda: any(m["value"] == "99" for m in sub.messages), what="value over TLS")
    finally:
        sub.close()


async def test_wrong_mqtt_password_is_a_clear_error_and_collection_goes_on(
    broker: Broker, run_mapper: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-it\n")
    push = {"mqtt": {"address": f"ssl://127.0.0.1:{broker.tls_port}", "topic": "secure/t", "qos": 1}}
    settings = {"mqtt": {"username": USER, "password_file": str(wrong), "ca_file": str(broker.certs["ca"])}}
    caplog.set_level(logging.WARNING)
    h, mapper, fleet = await run_mapper([pushing_device("dev-a", push)], settings)
    fleet.devices["dev-a"].registers[0] = 5
    await until(
        lambda: any("refused the connection" in r.getMessage() for r in caplog.records),
        timeout=15,
        what="auth error logged",
    )
    line = next(r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage())
    assert "Not authorized" in line and "password_file" in line and "not-it" not in line
    # Collection and twin reports are not held up by the failing push.
    reads = fleet.devices["dev-a"].reads
    await until(lambda: fleet.devices["dev-a"].reads > reads + 10, what="reads go on")
    await until(lambda: stored(h.agent, "dev-a").get("temperature", (None,))[0] == "5", what="twin reported")
    dest = next(iter(mapper.push.destinations.values()))
    assert dest.stats.sent == 0 and dest.stats.failed >= 1


async def test_a_push_method_that_cannot_be_set_up_stops_only_its_push(
    broker: Broker, run_mapper: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing MQTT password file (mapper config) or a Redis address without a port number (CR) raised while
    the first value was pushed, which ended the device's collect loop without a word."""
    push = {"mqtt": {"address": f"ssl://127.0.0.1:{broker.tls_port}", "topic": "secure/t", "qos": 1}}
    settings = {"mqtt": {"username": USER, "password_file": str(tmp_path / "missing"), "ca_file": "/nonexistent"}}
    redis = {"dbMethod": {"redis": {"redisClientConfig": {"addr": "127.0.0.1:xyz"}}}}
    caplog.set_level(logging.WARNING)
    h, _mapper, fleet = await run_mapper([pushing_device("dev-a", push), pushing_device("dev-b", redis)], settings)
    for name in ("dev-a", "dev-b"):
        reads = fleet.devices[name].reads
        await until(lambda n=name, r=reads: fleet.devices[n].reads > r + 10, what=f"{name} reads go on")  # type: ignore[misc]
        fleet.devices[name].registers[0] = 7
        await until(lambda n=name: stored(h.agent, n).get("temperature", (None,))[0] == "7", what="twin reported")  # type: ignore[misc]
    said = [r.getMessage() for r in caplog.records if "push method cannot be set up" in r.getMessage()]
    assert any("dev-a property temperature" in m and "missing" in m for m in said), said
    assert not any("Traceback" in m for m in said)


async def test_http_push_and_an_endpoint_that_comes_back(run_mapper: Any) -> None:
    sink = HttpSink()
    await sink.start()
    try:
        push = {"http": {"hostName": "http://127.0.0.1", "port": sink.port, "requestPath": "/ingest", "timeout": 1000}}
        _, mapper, fleet = await run_mapper([pushing_device("dev-a", push)])
        fleet.devices["dev-a"].registers[0] = 11
        await until(lambda: any(r["value"] == "11" for r in sink.received), what="HTTP push")
        assert sink.received[0]["device"] == "dev-a" and sink.received[0]["type"] == "int"
        # The endpoint goes away: records queue up (bounded); reads go on; when it is back, they arrive in order.
        await sink.stop()
        fleet.devices["dev-a"].registers[0] = 12
        reads = fleet.devices["dev-a"].reads
        await until(lambda: fleet.devices["dev-a"].reads > reads + 10, what="reads during the outage")
        dest = next(iter(mapper.push.destinations.values()))
        await until(lambda: dest.stats.failed >= 1, what="a failed send")
        restarted = HttpSink()
        await restarted.start(port=sink.port)
        sink = restarted
        await until(lambda: any(r["value"] == "12" for r in sink.received), timeout=20, what="queued values")
        stamps = [r["timestamp"] for r in sink.received]
        assert stamps == sorted(stamps)
    finally:
        await sink.stop()


async def test_http_push_never_posts_an_accepted_value_twice(run_mapper: Any) -> None:
    """Every third POST fails: the batch is retried from the value that failed, not from its start."""
    sink = HttpSink(fail_every=3)
    await sink.start()
    try:
        push = {"http": {"hostName": "127.0.0.1", "port": sink.port, "requestPath": "/ingest", "timeout": 1000}}
        _, _mapper, fleet = await run_mapper([pushing_device("dev-a", push)])
        for value in range(40):
            fleet.devices["dev-a"].registers[0] = value
            await asyncio.sleep(0.06)  # a collect cycle is 50 ms: every value is read
        await until(lambda: len(sink.received) >= 30, timeout=20, what="30 values delivered")
        stamps = [r["timestamp"] for r in sink.received]
        assert len(stamps) == len(set(stamps)), "a value was POSTed twice"
        assert stamps == sorted(stamps)
    finally:
        await sink.stop()


async def test_mqtt_qos1_is_not_published_again_while_the_broker_is_slow(broker: Broker, run_mapper: Any) -> None:
    """The broker stops answering for longer than the 5 s acknowledgement wait: the values paho holds are waited
    for, not published a second time under new message ids (the subscriber got each up to 3 times)."""
    sub = Subscriber(broker.plain_port, "slow/t")
    try:
        push = {"mqtt": {"address": f"tcp://127.0.0.1:{broker.plain_port}", "topic": "slow/t", "qos": 1}}
        _, mapper, fleet = await run_mapper([pushing_device("dev-a", push)])
        fleet.devices["dev-a"].registers[0] = 1
        await until(lambda: any(m["value"] == "1" for m in sub.messages), what="first value")
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            for value in range(2, 12):
                fleet.devices["dev-a"].registers[0] = value
                await asyncio.sleep(0.7)
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        dest = next(iter(mapper.push.destinations.values()))
        assert dest.stats.failed >= 1, "the stall was not long enough to fail a send: the test proves nothing"
        await until(lambda: any(m["value"] == "11" for m in sub.messages), timeout=30, what="values after the stall")
        await asyncio.sleep(1.0)
        stamps = [m["timestamp"] for m in sub.messages]
        assert len(stamps) == len(set(stamps)), sorted(stamps)
    finally:
        sub.close()


async def test_a_destination_the_crs_no_longer_name_is_retired(
    run_mapper: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An address corrected in the CR: the old destination stops retrying (its queue is dropped, said once) and
    the new one gets the values; a removed device stops feeding its destinations too."""
    sink = HttpSink()
    await sink.start()
    try:
        wrong = {"http": {"hostName": "127.0.0.1", "port": free_port(), "requestPath": "/ingest", "timeout": 200}}
        h, mapper, fleet = await run_mapper([pushing_device("dev-a", wrong)])
        await until(lambda: any(d.stats.failed for d in mapper.push.destinations.values()), what="failing sends")
        [old] = mapper.push.destinations.values()
        right = {"http": {"hostName": "127.0.0.1", "port": sink.port, "requestPath": "/ingest", "timeout": 1000}}
        caplog.set_level(logging.WARNING)
        crs.write(h.crs, "d.yaml", crs.model("thermo"), pushing_device("dev-a", right))
        await h.agent.reload()
        fleet.devices["dev-a"].registers[0] = 31
        await until(lambda: any(r["value"] == "31" for r in sink.received), what="values at the corrected address")
        assert old.name not in mapper.push.destinations and old.task is not None
        await until(lambda: old.task.done(), what="the old worker stopped")  # type: ignore[union-attr]
        assert any("no property pushes here any more" in r.getMessage() for r in caplog.records)

        crs.write(h.crs, "d.yaml", crs.model("thermo"))
        await h.agent.reload()
        await until(lambda: not mapper.push.destinations, what="the removed device's destination retired")
    finally:
        await sink.stop()


async def test_full_push_queue_drops_oldest_and_counts(run_mapper: Any) -> None:
    push = {"http": {"hostName": "http://127.0.0.1", "port": 9, "requestPath": "/ingest", "timeout": 200}}
    _, mapper, _ = await run_mapper([pushing_device("dev-a", push)], {"queue_limit": 5})
    await until(
        lambda: mapper.push.destinations and next(iter(mapper.push.destinations.values())).stats.dropped > 0,
        what="drops counted",
    )
    dest = next(iter(mapper.push.destinations.values()))
    assert len(dest.queue) <= 5
    await asyncio.sleep(0)


async def test_an_mqtt_message_acknowledged_after_its_wait_gave_up_is_not_published_again() -> None:
    """The ack lands during the backoff sleep, after the 5 s wait gave up: the retry sees it delivered."""
    from mapper_framework.push import PartialSend, PushManager, Record

    class Info:
        rc = 0
        published = False

        def is_published(self) -> bool:
            return self.published

    class Link:
        def __init__(self) -> None:
            self.published: list[Info] = []

        async def ready(self) -> None:
            return None

        def publish(self, topic: str, payload: bytes, qos: int, retained: bool) -> Info:
            self.published.append(Info())
            return self.published[-1]

        async def acknowledged(self, info: Info) -> None:
            if not info.published:
                raise ConnectionError("broker did not acknowledge the publish")

        def close(self) -> None:
            return None

    pm = PushManager()
    link = Link()
    pm._mqtt["tcp://broker:1883"] = link  # type: ignore[assignment]
    send = pm._mqtt_sender("tcp://broker:1883", "t", 1, False)
    batch = [Record("default", "d", "p", str(n), "int", n) for n in (1, 2)]
    with pytest.raises(PartialSend) as failed:
        await send(batch)
    assert failed.value.done == 0 and len(link.published) == 1
    link.published[0].published = True  # the broker answers, late
    with pytest.raises(PartialSend) as second:  # the second record's ack does not come this time
        await send(batch)
    assert second.value.done == 1  # the first counts as delivered...
    assert len(link.published) == 2  # ...and was not published again: only the second record was
    await pm.close()
