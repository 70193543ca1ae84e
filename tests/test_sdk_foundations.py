"""SDK building blocks: twin value formatting, typed driver config from edgecore-packed configData,
the device view built from what the agent sends, and the thread adapter for blocking drivers."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from dmi.anypack import pack_map
from dmi.convert import device_to_proto, model_to_proto
from dmi.resources import parse_device, parse_model
from mapper_framework.device import DEFAULT_CYCLE_MS, device_spec
from mapper_framework.driver import BlockingDriver, ConfigError, ThreadedDriver, parse_config
from mapper_framework.values import PropertyValueError, format_value, formatter, model_type, parse_value, reportable
from tests import crs

# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("value", "type_", "text"),
    [
        (21, "int", "21"),
        (21.0, "int", "21"),
        (True, "int", "1"),
        (-350.0, "float", "-350"),
        (-3.5e2, "double", "-350"),
        (0.1, "float", "0.1"),
        (1e-7, "double", "0.0000001"),
        (1.5e20, "double", "150000000000000000000"),
        (True, "boolean", "true"),
        ("off", "boolean", "false"),
        (b"\xfb\xff", "bytes", "-_8"),
        ("ttyUSB0", "string", "ttyUSB0"),
    ],
)
def test_format_value_is_plain_and_passes_edgecore(value: Any, type_: str, text: str) -> None:
    assert format_value(value, type_) == text
    assert formatter(type_)(value) == text  # the per-property shortcut the collect loop uses
    assert reportable(text)


def test_format_value_errors() -> None:
    with pytest.raises(PropertyValueError, match="not an integer"):
        format_value(2.5, "int")
    with pytest.raises(PropertyValueError, match="not an integer"):
        formatter("int")(2.5)
    with pytest.raises(PropertyValueError, match="not a finite number"):
        formatter("double")(float("inf"))
    with pytest.raises(PropertyValueError, match="not a finite number"):
        format_value(float("nan"), "float")
    with pytest.raises(PropertyValueError, match="not a boolean"):
        format_value("maybe", "boolean")


def test_parse_value_for_writes() -> None:
    assert parse_value("21", "int") == 21
    assert parse_value("0x10", "int") == 16
    assert parse_value("0xE", "int") == 14
    assert parse_value("21.0", "int") == 21
    assert parse_value("21.5", "float") == 21.5
    assert parse_value("true", "boolean") is True
    assert parse_value("-_8", "bytes") == b"\xfb\xff"
    assert parse_value("a b", "string") == "a b"
    with pytest.raises(PropertyValueError, match=r"'21\.5' is not an integer"):
        parse_value("21.5", "int")
    with pytest.raises(PropertyValueError, match="'warm' is not a valid float"):
        parse_value("warm", "float")


def test_model_type_and_reportable() -> None:
    assert model_type("FLOAT") == "float" and model_type("STREAM") == "stream" and model_type("weird") == "string"
    assert not reportable("a b") and not reportable("-3.5e+2") and reportable("")


# --------------------------------------------------------------------------- typed config


@dataclass
class ModbusLike:
    ip: str
    port: int = 502
    slaveID: int = 1  # configData keys are camelCase, as in the CRs
    timeout: float = 1.0
    parity: Literal["none", "even", "odd"] = "none"
    swap: bool = False
    label: str | None = None


def test_parse_config_accepts_what_edgecore_sends() -> None:
    # edgecore packs every number as float32: 1502 and 2 arrive as floats.
    packed = pack_map({"ip": "10.0.0.5", "port": 1502, "slaveID": 2, "timeout": 0.5, "swap": True, "extra": "x"})
    from dmi.anypack import unpack_map

    cfg = parse_config(ModbusLike, unpack_map(packed), "device default/d1 protocol")
    assert cfg == ModbusLike(ip="10.0.0.5", port=1502, slaveID=2, timeout=0.5, swap=True)
    assert isinstance(cfg.port, int) and isinstance(cfg.slaveID, int)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "device default/d1 protocol: configData.ip is required"),
        ({"ip": "h", "port": 502.5}, "device default/d1 protocol: configData.port: expected an integer, got 502.5"),
        ({"ip": "h", "port": True}, "configData.port: expected an integer, got True"),
        ({"ip": "h", "swap": "yes"}, "configData.swap: expected true or false, got 'yes'"),
        ({"ip": "h", "parity": "mark"}, "configData.parity: expected one of none, even, odd, got 'mark'"),
        ({"ip": "h", "timeout": "soon"}, "configData.timeout: expected a number, got 'soon'"),
    ],
)
def test_parse_config_errors_name_device_and_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(ModbusLike, data, "device default/d1 protocol")
    assert message in str(err.value)


# --------------------------------------------------------------------------- device view


def test_device_spec_from_what_the_agent_sends() -> None:
    model = crs.model("thermo")
    model["spec"]["properties"][0]["type"] = "FLOAT"
    device = crs.device("d1", "thermo", desired="21")
    device["spec"]["properties"][1]["collectCycle"] = 0
    device["spec"]["stateReport"] = {"reportCycle": 5000, "reportToCloud": True}
    m, d = parse_model(model), parse_device(device)
    spec = device_spec(device_to_proto(d, m), model_to_proto(m))
    assert (spec.namespace, spec.name, spec.model, spec.protocol_name) == ("default", "d1", "thermo", "testproto")
    assert spec.protocol_data == {"slaveID": 1.0}
    temp, setpoint = spec.properties
    assert (temp.type, temp.access_mode, temp.writable, temp.desired) == ("float", "ReadOnly", False, None)
    assert temp.visitor_data == {"register": "HoldingRegister", "offset": 3.0}
    assert (setpoint.type, setpoint.writable, setpoint.desired) == ("int", True, "21")
    assert setpoint.collect_cycle_ms == DEFAULT_CYCLE_MS and setpoint.report_cycle_ms == 1000
    assert (spec.state_report_cycle_ms, spec.state_report_to_cloud) == (5000, True)
    assert str(spec) == "default/d1" and spec.property("setpoint") is setpoint


# --------------------------------------------------------------------------- thread adapter


@dataclass
class PinConfig:
    pin: int


@dataclass
class Reading:
    reading: str


class SlowSensor(BlockingDriver[PinConfig, Reading]):
    protocol_config = PinConfig
    visitor_config = Reading

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.order: list[str] = []

    def connect(self, config: PinConfig) -> None:
        self.threads.add(threading.current_thread().name)
        self.order.append(f"connect {config.pin}")

    def read(self, visitor: Reading) -> Any:
        threading.Event().wait(0.05)  # a blocking call, as GPIO bit-banging is
        self.threads.add(threading.current_thread().name)
        self.order.append(f"read {visitor.reading}")
        return 21.5


async def test_threaded_driver_keeps_the_loop_free_and_calls_in_order() -> None:
    inner = SlowSensor()
    driver = ThreadedDriver(inner)
    await driver.connect(PinConfig(pin=4))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    results = await driver.read_many([Reading("temperature"), Reading("humidity")])
    task.cancel()
    assert results == [21.5, 21.5]
    assert inner.order == ["connect 4", "read temperature", "read humidity"]
    assert threading.current_thread().name not in inner.threads and len(inner.threads) == 1
    assert ticks >= 5  # the loop kept running while the reads blocked their thread
    assert await driver.state() == "ok"
    await driver.close()


# --------------------------------------------------------------------------- overload accounting


async def test_rounds_that_overrun_their_cycle_count_missed_reads() -> None:
    """A round that takes 3.5 cycles skips two rounds: each property's skipped reads are counted, not hidden."""
    from mapper_framework.runtime import DeviceRuntime
    from tests.sdk_driver import FakeDevice, FakeDriver

    class Sluggish(FakeDriver):
        async def read_many(self, visitors: list[Any]) -> list[Any]:
            await asyncio.sleep(0.35)  # 3.5 cycles of 100 ms
            return [self.device.registers.get(v.offset, 0) for v in visitors]

    props = [
        {
            "name": name,
            "collectCycle": 100,
            "reportCycle": 100,
            "visitors": {"protocolName": "testproto", "configData": {"offset": i}},
        }
        for i, name in enumerate(["a", "b"])
    ]
    model = parse_model(crs.model("thermo", properties=[{"name": "a", "type": "INT"}, {"name": "b", "type": "INT"}]))
    device = parse_device(crs.device("slow", "thermo", properties=props))
    spec = device_spec(device_to_proto(device, model), model_to_proto(model))
    runtime = DeviceRuntime(spec, Sluggish(FakeDevice()), lambda key, twins: None, lambda key, state: None)
    runtime.start()
    try:
        while sum(t.reads for t in runtime.twins.values()) < 2 * 4:
            await asyncio.sleep(0.05)
        rounds = runtime.twins["a"].reads
        # A round lasts 3.5 cycles: 2.5 rounds lost per round made, two properties each (the first round,
        # started at once before the device's phase, may lose one round more or less).
        assert 5 * (rounds - 1) - 2 <= runtime.missed_reads <= 5 * (rounds + 1)
        assert runtime.missed_reads > 0
    finally:
        await runtime.stop()


async def test_a_device_whose_config_was_refused_can_be_stopped() -> None:
    """Its loops never started, so stopping it waits on nothing (it raised 'Set of Tasks/Futures is empty', so the
    mapper could neither update nor remove such a device); its driver is still closed."""
    from mapper_framework.runtime import DeviceRuntime
    from tests.sdk_driver import FakeDevice, FakeDriver

    props = [{"name": "a", "visitors": {"protocolName": "testproto", "configData": {"offset": "not a number"}}}]
    model = parse_model(crs.model("thermo", properties=[{"name": "a", "type": "INT"}]))
    device = parse_device(crs.device("refused", "thermo", properties=props))
    spec = device_spec(device_to_proto(device, model), model_to_proto(model))
    driver = FakeDriver(FakeDevice())
    runtime = DeviceRuntime(spec, driver, lambda key, twins: None, lambda key, state: None)
    runtime.start()
    while runtime.state != "unhealthy":
        await asyncio.sleep(0.01)
    assert "configData.offset" in runtime.error
    assert runtime.twins["a"].error.startswith("the device is not started: ")  # what the REST API shows
    await asyncio.wait_for(runtime.stop(), 5)
    assert driver.closed


async def test_a_desired_value_that_can_never_be_written_is_said_once_not_retried() -> None:
    from mapper_framework.runtime import DeviceRuntime
    from mapper_framework.values import PropertyValueError
    from tests.sdk_driver import FakeDevice, FakeDriver

    class Picky(FakeDriver):
        attempts = 0

        async def write(self, visitor: Any, value: Any) -> None:
            Picky.attempts += 1
            raise PropertyValueError(f"{value} does not fit 1 register")

    props = [{"name": "sp", "desired": {"value": "70000"}, "visitors": {"protocolName": "testproto"}}]
    model = parse_model(crs.model("thermo", properties=[{"name": "sp", "type": "INT", "accessMode": "ReadWrite"}]))
    device = parse_device(crs.device("picky", "thermo", properties=props))
    spec = device_spec(device_to_proto(device, model), model_to_proto(model))
    runtime = DeviceRuntime(spec, Picky(FakeDevice()), lambda key, twins: None, lambda key, state: None)
    runtime.start()  # which applies the desired values once
    try:
        while Picky.attempts == 0:
            await asyncio.sleep(0.01)
        await runtime.apply_desired()
        await runtime.apply_desired(force=True)  # the device came back online: still nothing to retry
        assert Picky.attempts == 1
        assert runtime.twins["sp"].observed_desired == ""
    finally:
        await runtime.stop()


async def test_a_desired_value_is_written_again_when_its_property_moves() -> None:
    """A CR edit that moves a property (a new register) restarts the device: the new place never held the desired
    value, so it is written there; an edit elsewhere does not write it again."""
    from mapper_framework.agent_client import Outbox
    from mapper_framework.config import StateSettings
    from mapper_framework.registry import DeviceRegistry
    from tests.sdk_driver import FakeDevice, FakeDriver

    hardware = FakeDevice()
    registry = DeviceRegistry(lambda spec: FakeDriver(hardware), Outbox(), StateSettings())
    model_doc = crs.model("thermo", properties=[{"name": "sp", "type": "INT", "accessMode": "ReadWrite"}])
    model = parse_model(model_doc)

    def at(offset: int, cycle: int = 1000) -> Any:
        props = [
            {
                "name": "sp",
                "desired": {"value": "42"},
                "collectCycle": cycle,
                "visitors": {"protocolName": "testproto", "configData": {"offset": offset}},
            }
        ]
        return device_to_proto(parse_device(crs.device("mover", "thermo", properties=props)), model)

    async def settled() -> None:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if registry.runtimes[("default", "mover")].twins["sp"].observed_desired == "42":
                return
        raise AssertionError("the desired value was not applied")

    try:
        await registry.put_device(at(1), model_to_proto(model))
        await settled()
        assert hardware.writes == [(1, 42)]
        await registry.put_device(at(1, cycle=2000))  # not moved: nothing written again
        await settled()
        assert hardware.writes == [(1, 42)]
        await registry.put_device(at(9))  # moved to register 9: written there
        await settled()
        assert hardware.writes == [(1, 42), (9, 42)]
    finally:
        await registry.remove_device("default", "mover")


def test_http_push_urls_keep_ipv6_brackets_and_a_path_prefix() -> None:
    from mapper_framework.push import _http_url

    assert _http_url("127.0.0.1", 8080, "/v1") == "http://127.0.0.1:8080/v1"
    assert _http_url("[::1]", 18081, "/ingest") == "http://[::1]:18081/ingest"
    assert _http_url("::1", 80, "a") == "http://[::1]:80/a"
    assert _http_url("http://[::1]:81", 80, "/a") == "http://[::1]:81/a"
    assert (
        _http_url("https://collector.example/prefix/", 443, "ingest") == "https://collector.example:443/prefix/ingest"
    )


async def test_nan_never_passes_a_range() -> None:
    from mapper_framework.device import PropertySpec
    from mapper_framework.runtime import _check_range
    from mapper_framework.values import PropertyValueError, parse_value

    prop = PropertySpec("t", "float", "ReadWrite", 1000, 1000, True, minimum="5", maximum="35")
    for text in ("nan", "-nan", "NaN"):
        with pytest.raises(PropertyValueError, match="nan is not within the range of property t"):
            _check_range(prop, parse_value(text, "float"))
    _check_range(PropertySpec("u", "float", "ReadWrite", 1000, 1000, True), float("nan"))  # no range: no check


async def test_a_read_failure_is_logged_once_and_again_when_its_cause_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mapper_framework.runtime import DeviceRuntime
    from tests.sdk_driver import FakeDevice, FakeDriver

    causes: list[BaseException] = [ConnectionError("unreachable")] * 3 + [TimeoutError("no answer")] * 3

    class Failing(FakeDriver):
        async def read_many(self, visitors: list[Any]) -> list[Any]:
            return [causes.pop(0) if causes else 1 for _ in visitors]

    props = [{"name": "a", "collectCycle": 20, "visitors": {"protocolName": "testproto"}}]
    model = parse_model(crs.model("thermo", properties=[{"name": "a", "type": "INT"}]))
    spec = device_spec(device_to_proto(parse_device(crs.device("flaky", "thermo", properties=props)), model),
                       model_to_proto(model))  # fmt: skip
    runtime = DeviceRuntime(spec, Failing(FakeDevice()), lambda key, twins: None, lambda key, state: None)
    caplog.set_level(logging.INFO)
    runtime.start()
    try:
        while runtime.twins["a"].value != "1":
            await asyncio.sleep(0.01)
    finally:
        await runtime.stop()
    said = [r.getMessage() for r in caplog.records if "property a: read" in r.getMessage()]
    assert said == [
        "device default/flaky property a: read failed: unreachable",
        "device default/flaky property a: read failed: no answer",
        "device default/flaky property a: reads recovered",
    ]


async def test_a_refused_config_fixed_in_the_cr_clears_the_error_it_left() -> None:
    from mapper_framework.agent_client import Outbox
    from mapper_framework.config import StateSettings
    from mapper_framework.registry import DeviceRegistry
    from tests.sdk_driver import FakeDevice, FakeDriver

    registry = DeviceRegistry(lambda spec: FakeDriver(FakeDevice()), Outbox(), StateSettings())
    model = parse_model(crs.model("thermo", properties=[{"name": "t", "type": "INT"}]))

    def with_offset(offset: Any) -> Any:
        props = [
            {
                "name": "t",
                "collectCycle": 20,
                "visitors": {"protocolName": "testproto", "configData": {"offset": offset}},
            }
        ]
        return device_to_proto(parse_device(crs.device("fixme", "thermo", properties=props)), model)

    try:
        await registry.put_device(with_offset("bad"), model_to_proto(model))
        runtime = registry.runtimes[("default", "fixme")]
        while not runtime.twins["t"].error:
            await asyncio.sleep(0.01)
        await registry.put_device(with_offset(1))
        runtime = registry.runtimes[("default", "fixme")]
        while runtime.twins["t"].reads < 3:
            await asyncio.sleep(0.01)
        assert runtime.twins["t"].error == ""  # it said "the device is not started" for ever
    finally:
        await registry.remove_device("default", "fixme")
