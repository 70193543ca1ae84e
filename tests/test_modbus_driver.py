"""The Modbus driver against real pymodbus servers: our simulator over TCP and over a socat serial line.

Coalescing (requests counted by the driver's endpoint and by the server), split fallback, exception responses
with their clear message, shared connections, writes, and the simulator's own behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from mapper_framework.device import DeviceSpec
from mapper_framework.driver import ConfigError
from mappers.modbus.connection import EndpointPool, EndpointUnreachable, ModbusExceptionResponse
from mappers.modbus.driver import ModbusDriver
from mappers.modbus.simulator import (
    Motion,
    SimulatorError,
    build_endpoints,
    start_servers,
)
from tests.modbus_peers import Point, docs, free_port, serial_line, spec, typed
from tests.peers import short_tmpdir


def holding(offset: int, data_type: str = "int16", **extra: Any) -> dict[str, Any]:
    return {"register": "HoldingRegister", "offset": offset, "dataType": data_type, **extra}


def ten_registers() -> list[Point]:
    return [Point(f"p{i}", "INT", holding(i)) for i in range(10)]


def device(name: str, points: list[Point], port: int, slave: int = 1, **protocol: Any) -> DeviceSpec:
    model, dev = docs(name, points, {"ip": "127.0.0.1", "port": port, "slaveID": slave, **protocol})
    return spec(model, dev)


async def connected(spec_: DeviceSpec, pool: EndpointPool) -> tuple[ModbusDriver, list[Any]]:
    protocol, visitors = typed(spec_)
    drv = ModbusDriver(str(spec_), pool=pool)
    await drv.connect(protocol)
    return drv, visitors


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[EndpointPool]:
    yield EndpointPool()


async def test_a_slave_missing_behind_a_tcp_gateway_is_unhealthy_not_offline(pool: EndpointPool) -> None:
    """The gateway (here the simulator) answers "gateway target device failed to respond" for a slave it cannot
    reach: the connection is fine, that device is not. Its coalesced group is not split over it either."""
    port = free_port()
    servers = await start_servers(build_endpoints([device("present", ten_registers(), port, slave=1)]))
    try:
        missing = device("missing", ten_registers(), port, slave=9)
        drv, visitors = await connected(missing, pool)
        for _ in range(3):
            results = await drv.read_many(visitors)
            assert all(isinstance(r, ModbusExceptionResponse) and r.code == 11 for r in results), results
        assert await drv.state() == "unhealthy"
        assert drv._ready()[1].requests <= 3 + 1  # one request a round (plus the connect's): never split up
        await drv.close()
    finally:
        for s in servers:
            await s.shutdown()  # type: ignore[no-untyped-call]


async def test_coalesced_reads_one_request_per_table(pool: EndpointPool) -> None:
    port = free_port()
    points = [
        *ten_registers(),
        Point("flag", "BOOLEAN", {"register": "CoilRegister", "offset": 0}),
        Point("flag2", "BOOLEAN", {"register": "CoilRegister", "offset": 9}),
        Point("level", "FLOAT", {"register": "InputRegister", "offset": 4, "dataType": "float32"}),
    ]
    dev = device("coalesced", points, port)
    servers = await start_servers(build_endpoints([dev]))
    try:
        drv, visitors = await connected(dev, pool)
        before = drv._ready()[1].requests
        results = await drv.read_many(visitors)
        assert not [r for r in results if isinstance(r, BaseException)], results
        # 10 holding registers, 2 coils and 1 float: three requests, not thirteen.
        assert drv._ready()[1].requests - before == 3

        per_property = device("per-property", points, port, coalesce=False)
        drv2, visitors2 = await connected(per_property, pool)
        before = drv2._ready()[1].requests
        await drv2.read_many(visitors2)
        assert drv2._ready()[1].requests - before == len(points)
        await drv.close()
        await drv2.close()
    finally:
        for s in servers:
            await s.shutdown()  # type: ignore[no-untyped-call]


async def test_exception_responses_are_clear_and_do_not_stop_other_properties(
    pool: EndpointPool, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    served = [Point("temperature", "INT", holding(0)), Point("humidity", "INT", holding(1))]
    servers = await start_servers(build_endpoints([device("boiler-1", served, port)]), pad=0)
    try:
        # The mapper's CR names a register the device does not have (offset 16, far) and one inside the gap of a
        # coalesced request (offset 5, the simulator serves no padding here).
        asked = [*served, Point("pressure", "INT", holding(16)), Point("valve", "INT", holding(5))]
        dev = device("boiler-1", asked, port)
        drv, visitors = await connected(dev, pool)
        endpoint = drv._ready()[1]
        with caplog.at_level(logging.INFO):
            results = await drv.read_many(visitors)
        assert isinstance(results[0], int) and isinstance(results[1], int), results
        assert isinstance(results[2], ModbusExceptionResponse)
        assert str(results[2]) == (
            f"illegal data address 40017 (HoldingRegister offset 16, 1 register) from slave 1 at tcp://127.0.0.1:{port}"
        )
        assert str(results[3]).startswith("illegal data address 40006 (HoldingRegister offset 5, 1 register)")
        assert "refused as one request; reading its 3 properties one by one from now on" in caplog.text
        # The refused group stays split: offsets 0, 1, 5 one by one, plus 16: four requests per round.
        before = endpoint.requests
        results = await drv.read_many(visitors)
        assert endpoint.requests - before == 4
        assert [isinstance(r, ModbusExceptionResponse) for r in results] == [False, False, True, True]
        assert await drv.state() == "online"  # the device answers: an exception is not an outage
        await drv.close()
    finally:
        for s in servers:
            await s.shutdown()  # type: ignore[no-untyped-call]


async def test_illegal_function_from_a_device_without_input_registers(pool: EndpointPool) -> None:
    port = free_port()

    async def no_fc4(fc: int, *_args: Any) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_FUNCTION if fc == 4 else None

    regs = [SimData(0, count=10, values=0, datatype=DataType.REGISTERS)]
    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
    server = ModbusTcpServer(
        [SimDevice(3, simdata=(bits, list(bits), regs, list(regs)), action=no_fc4)], address=("127.0.0.1", port)
    )
    await server.serve_forever(background=True)
    try:
        points = [Point("level", "INT", {"register": "InputRegister", "offset": 2}), Point("sp", "INT", holding(2))]
        drv, visitors = await connected(device("old-plc", points, port, slave=3), pool)
        level, sp = await drv.read_many(visitors)
        assert (
            str(level)
            == f"illegal function 30003 (InputRegister offset 2, 1 register) from slave 3 at tcp://127.0.0.1:{port}"
        )
        assert sp == 0
        await drv.close()
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def test_devices_on_one_endpoint_share_one_connection(pool: EndpointPool) -> None:
    port = free_port()
    a = device("meter-a", ten_registers(), port, slave=1)
    b = device("meter-b", ten_registers(), port, slave=2)
    servers = await start_servers(build_endpoints([a, b]))
    try:
        drv_a, va = await connected(a, pool)
        drv_b, vb = await connected(b, pool)
        assert len(pool) == 1 and drv_a._ready()[1] is drv_b._ready()[1]
        # Concurrent rounds of both devices are serialised on the one connection and both succeed.
        ra, rb = await asyncio.gather(drv_a.read_many(va), drv_b.read_many(vb))
        assert not [r for r in [*ra, *rb] if isinstance(r, BaseException)]
        assert len(servers[0].active_connections) == 1
        await drv_a.close()
        assert len(pool) == 1
        await drv_b.close()
        assert len(pool) == 0
    finally:
        for s in servers:
            await s.shutdown()  # type: ignore[no-untyped-call]


async def test_server_down_then_back(pool: EndpointPool) -> None:
    port = free_port()
    dev = device("flaky", ten_registers(), port)
    endpoints = build_endpoints([dev])
    servers = await start_servers(endpoints)
    drv, visitors = await connected(dev, pool)
    assert await drv.state() == "online"
    for s in servers:
        await s.shutdown()  # type: ignore[no-untyped-call]
    await asyncio.sleep(0.1)
    results = await drv.read_many(visitors)
    assert all(isinstance(r, EndpointUnreachable) for r in results)
    assert await drv.state() == "offline"
    servers = await start_servers(endpoints)
    try:
        for _ in range(100):  # the backoff starts at 0.25 s
            results = await drv.read_many(visitors)
            if not any(isinstance(r, BaseException) for r in results):
                break
            await asyncio.sleep(0.1)
        assert not any(isinstance(r, BaseException) for r in results), results
        assert await drv.state() == "online"
        await drv.close()
    finally:
        for s in servers:
            await s.shutdown()  # type: ignore[no-untyped-call]


async def test_simulator_values_move_and_writes_hold(pool: EndpointPool) -> None:
    port = free_port()
    points = [
        Point("ramp", "INT", holding(0), minimum="0", maximum="1000"),
        Point("setpoint", "FLOAT", holding(1, "float32"), access="ReadWrite", desired="21.5"),
        Point("name", "STRING", holding(10, "string", limit=4)),
    ]
    dev = device("sim", points, port)
    endpoints = build_endpoints([dev], motions={"ramp": "ramp:0:1000:2"})
    servers = await start_servers(endpoints)
    try:
        drv, visitors = await connected(dev, pool)
        first = await drv.read_many(visitors)
        await asyncio.sleep(0.3)
        second = await drv.read_many(visitors)
        assert first[0] != second[0], "a ramp over 2 s moves within 0.3 s"
        assert first[1] == second[1] == 21.5  # a ReadWrite property starts at its desired value and stays
        assert first[2] == "sim"
        await drv.write(visitors[1], 30.25)
        await asyncio.sleep(0.1)
        assert (await drv.read_many(visitors))[1] == 30.25
        # A written ReadOnly point holds too (a client wrote it): the ramp stops.
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        await client.write_register(0, 7, device_id=1)
        client.close()
        await asyncio.sleep(0.2)
        assert (await drv.read_many(visitors))[0] == 7
        await drv.close()
    finally:
        for s in servers:
            await s.shutdown()  # type: ignore[no-untyped-call]


def test_simulator_refuses_what_it_cannot_serve() -> None:
    port = free_port()
    a = device("a", ten_registers(), port, slave=4)
    b = device("b", ten_registers(), port, slave=4)
    with pytest.raises(SimulatorError, match=r"devices default/a and default/b are both slave 4"):
        build_endpoints([a, b])
    overlapping = [Point("wide", "INT", holding(0, "int32")), Point("inside", "INT", holding(1))]
    with pytest.raises(SimulatorError, match="properties wide and inside overlap at 40002"):
        build_endpoints([device("c", overlapping, port)])
    with pytest.raises(SimulatorError, match="motion 'wobble': expected one of static, ramp, sine, walk, toggle"):
        Motion.parse("wobble", Motion())
    with pytest.raises(SimulatorError, match="register: unknown register type"):
        build_endpoints([device("d", [Point("x", "INT", {"register": "Nope", "offset": 0})], port)])
    one = [device("e", [Point("level", "INT", holding(0), minimum="0", maximum="10")], port)]
    with pytest.raises(SimulatorError, match=r"--motion levle: no simulated property by that name \(properties: level"):
        build_endpoints(one, overrides={"levle": "sine"})
    with pytest.raises(SimulatorError, match="motion 'wobble': expected one of"):
        build_endpoints(one, overrides={"level": "wobble"})
    for tcp, said in (("nonsense", "expected HOST:PORT"), ("127.0.0.1:99999", "out of range"), (":5020", "HOST:PORT")):
        with pytest.raises(SimulatorError, match=said):
            build_endpoints(one, tcp=tcp)


def test_command_line_motions_win_over_the_crs_annotations() -> None:
    dev = device("f", [Point("level", "INT", holding(0), minimum="0", maximum="10")], free_port())
    annotated = {"default/f/level": "ramp:0:10:5"}
    [endpoint] = build_endpoints([dev], annotated)
    assert endpoint.slaves[1].points[0].motion.kind == "ramp"
    [endpoint] = build_endpoints([dev], annotated, overrides={"level": "sine:2:8:30"})
    motion = endpoint.slaves[1].points[0].motion
    assert (motion.kind, motion.low, motion.high, motion.period) == ("sine", 2.0, 8.0, 30.0)


# --------------------------------------------------------------------------- RTU over a real serial line


@pytest.fixture
def line() -> Iterator[tuple[str, str]]:
    with short_tmpdir() as folder, serial_line(Path(folder)) as ends:
        yield ends


async def test_rtu_a_late_answer_is_never_taken_for_the_next_request(
    pool: EndpointPool, line: tuple[str, str], tmp_path: Path
) -> None:
    """RTU frames carry no transaction id. A slave that answers after the timeout (here: the simulator process
    stopped for longer than the timeout) must not have that answer read as the next request's, which asks for as many
    registers of the same table: every value read is the value of its own property."""
    mapper_end, device_end = line
    serial = {"serialPort": mapper_end, "baudRate": 19200, "parity": "none", "slaveID": 1}
    points = [Point("a", "INT", holding(0)), Point("b", "INT", holding(1)), Point("c", "INT", holding(2))]
    model, dev = docs("late", points, {**serial, "timeout": 300, "retries": 0, "coalesce": False})
    crs = tmp_path / "crs"
    crs.mkdir()
    (crs / "late.yaml").write_text(yaml.safe_dump_all([model, dev]))
    sim = subprocess.Popen(
        [sys.executable, "-m", "mapper_cli.main", "simulate", "modbus", "-f", str(crs), "--rtu", device_end,
         "-m", "a=static:111:111", "-m", "b=static:222:222", "-m", "c=static:333:333", "--log-level", "warning"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        drv, visitors = await connected(spec(model, dev), pool)
        for _ in range(100):  # until the simulator serves
            if (await drv.read_many(visitors)) == [111, 222, 333]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the simulator never answered: {sim.stderr.read() if sim.poll() else ''!r}")
        seen: dict[str, set[Any]] = {"a": set(), "b": set(), "c": set()}
        timeouts = 0
        for pause in (0.35, 0.4, 0.35, 0.4):
            asyncio.get_running_loop().call_later(0.05, os.kill, sim.pid, signal.SIGSTOP)
            asyncio.get_running_loop().call_later(0.05 + pause, os.kill, sim.pid, signal.SIGCONT)
            deadline = asyncio.get_running_loop().time() + pause + 0.8
            while asyncio.get_running_loop().time() < deadline:
                for name, value in zip("abc", await drv.read_many(visitors), strict=True):
                    if isinstance(value, BaseException):
                        timeouts += 1
                    else:
                        seen[name].add(value)
        assert timeouts > 0, "the pauses made no request time out: the test proves nothing"
        assert seen == {"a": {111}, "b": {222}, "c": {333}}
        await drv.close()
    finally:
        os.kill(sim.pid, signal.SIGCONT)
        sim.terminate()
        sim.wait(timeout=10)


def test_simulator_on_a_line_that_refuses_its_settings_says_so(line: tuple[str, str], tmp_path: Path) -> None:
    _mapper_end, device_end = line
    model, dev = docs("even", [Point("a", "INT", holding(0))], {"serialPort": "/dev/ttyS9", "parity": "even"})
    (tmp_path / "even.yaml").write_text(yaml.safe_dump_all([model, dev]))
    done = subprocess.run(
        [sys.executable, "-m", "mapper_cli.main", "simulate", "modbus", "-f", str(tmp_path), "--rtu", device_end],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "cannot open rtu" in done.stderr and " 8E1: " in done.stderr and "Traceback" not in done.stderr


async def test_simulator_does_not_log_every_poll_of_a_slave_it_lacks(tmp_path: Path) -> None:
    port = free_port()
    model, dev = docs("one", [Point("a", "INT", holding(0))], {"ip": "127.0.0.1", "port": port, "slaveID": 1})
    (tmp_path / "one.yaml").write_text(yaml.safe_dump_all([model, dev]))
    sim = subprocess.Popen(
        [sys.executable, "-m", "mapper_cli.main", "simulate", "modbus", "-f", str(tmp_path)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.3, retries=0)
        for _ in range(100):
            if await client.connect():
                break
            await asyncio.sleep(0.1)
        assert not (await client.read_holding_registers(0, count=1, device_id=1)).isError()
        for _ in range(10):
            with contextlib.suppress(Exception):
                await client.read_holding_registers(0, count=1, device_id=9)
        client.close()
    finally:
        sim.terminate()
        _out, err = sim.communicate(timeout=10)
    assert "does not exist" not in err and err.count("\n") < 10, err


async def test_rtu_over_a_serial_line_with_two_slaves(pool: EndpointPool, line: tuple[str, str]) -> None:
    mapper_end, device_end = line
    # 8N1: a Linux pty refuses to re-apply even/odd parity (EINVAL), so a socat line cannot carry it.
    serial = {"serialPort": mapper_end, "baudRate": 19200, "parity": "none", "dataBits": 8, "stopBits": 1}
    meter_points = [
        Point(
            "voltage",
            "FLOAT",
            {"register": "InputRegister", "offset": 0, "dataType": "float", "limit": 2, "isRegisterSwap": True},
            minimum="220",
            maximum="240",
        ),
        Point("energy", "INT", {"register": "HoldingRegister", "offset": 10, "dataType": "uint32"}),
        Point("relay", "BOOLEAN", {"register": "CoilRegister", "offset": 0}, access="ReadWrite"),
    ]
    model_a, dev_a = docs("meter-a", meter_points, {**serial, "slaveID": 1})
    model_b, dev_b = docs("meter-b", meter_points, {**serial, "slaveID": 2})
    a, b = spec(model_a, dev_a), spec(model_b, dev_b)
    servers = await start_servers(build_endpoints([a, b], rtu=device_end))
    try:
        drv_a, va = await connected(a, pool)
        drv_b, vb = await connected(b, pool)
        assert len(pool) == 1  # one serial port, one connection, two slaves
        for _ in range(3):
            ra, rb = await asyncio.gather(drv_a.read_many(va), drv_b.read_many(vb))
            for value in (ra[0], rb[0]):
                assert isinstance(value, float) and 220 <= value <= 240, (ra, rb)
            assert isinstance(ra[1], int) and isinstance(ra[2], bool)
        await drv_b.write(vb[2], True)
        assert (await drv_b.read_many(vb))[2] is True
        assert (await drv_a.read_many(va))[2] is False  # the other slave's relay did not move
        # A slave nobody answers for: the line is fine, that device is unhealthy after a timeout.
        model_c, dev_c = docs("ghost", meter_points[:1], {**serial, "slaveID": 9, "timeout": 200})
        c = spec(model_c, dev_c)
        drv_c, vc = await connected(c, pool)
        (ghost,) = await drv_c.read_many(vc)
        assert isinstance(ghost, TimeoutError)
        assert "no response from slave 9 at rtu://" in str(ghost)
        assert await drv_c.state() == "unhealthy"
        assert not [r for r in await drv_a.read_many(va) if isinstance(r, BaseException)]
        for drv in (drv_a, drv_b, drv_c):
            await drv.close()
    finally:
        for s in servers:
            await s.shutdown()  # type: ignore[no-untyped-call]


async def test_rtu_line_settings_must_agree(pool: EndpointPool, line: tuple[str, str]) -> None:
    mapper_end, _ = line
    points = [Point("v", "INT", holding(0))]
    first = docs("first", points, {"serialPort": mapper_end, "baudRate": 9600, "slaveID": 1})
    second = docs("second", points, {"serialPort": mapper_end, "baudRate": 19200, "slaveID": 2})
    drv, _ = await connected(spec(*first), pool)
    with pytest.raises(ConfigError, match=r"is already open at 9600 8N1 for device default/first; this device asks"):
        await connected(spec(*second), pool)
    # Both CRs move to 19200 baud, the first device restarts first: the port is still held by the other one at
    # 9600, and the error names that one (it named the restarting device itself).
    third = docs("third", points, {"serialPort": mapper_end, "baudRate": 9600, "slaveID": 3})
    drv3, _ = await connected(spec(*third), pool)
    await drv.close()
    first_moved = docs("first", points, {"serialPort": mapper_end, "baudRate": 19200, "slaveID": 1})
    with pytest.raises(ConfigError, match=r"already open at 9600 8N1 for device default/third; this device asks"):
        await connected(spec(*first_moved), pool)
    await drv3.close()


async def test_missing_serial_port_is_named(pool: EndpointPool) -> None:
    dev = spec(*docs("usb", [Point("v", "INT", holding(0))], {"serialPort": "/dev/ttyNOPE9", "slaveID": 1}))
    drv, visitors = await connected(dev, pool)
    (result,) = await drv.read_many(visitors)
    assert "serial port /dev/ttyNOPE9 does not exist" in str(result)
    assert await drv.state() == "offline"
    await drv.close()


async def test_shipped_samples_read_cleanly_through_the_simulator(pool: EndpointPool) -> None:
    from dataclasses import replace

    from mapper_cli.cmd_simulate import load_specs

    root = Path(__file__).resolve().parent.parent
    specs, motions, problems = load_specs([root / "crds" / "samples"], "modbus")
    assert not problems
    port = free_port()
    tcp = [s for s in specs if "ip" in s.protocol_data]
    assert {s.name for s in tcp} == {"modbus-tcp-thermostat", "modbus-tcp-plc"}
    moved = [replace(s, protocol_data={**s.protocol_data, "port": port}) for s in tcp]
    servers = await start_servers(build_endpoints(moved, motions))
    try:
        for dev in moved:
            drv, visitors = await connected(dev, pool)
            results = await drv.read_many(visitors)
            failed = {p.name: r for p, r in zip(dev.properties, results, strict=True) if isinstance(r, BaseException)}
            assert not failed, failed
            values = dict(zip((p.name for p in dev.properties), results, strict=True))
            if dev.name == "modbus-tcp-plc":
                assert values["setpoint-float-scaled"] == 42.5 and values["label-string"] == "line-7"
                assert isinstance(values["serial-bytes"], bytes) and isinstance(values["outputs-coil-bits"], int)
            await drv.close()
    finally:
        for s in servers:
            await s.shutdown()  # type: ignore[no-untyped-call]
