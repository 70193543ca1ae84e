"""Modbus configData: the KubeEdge forms accepted, every mistake reported naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from mapper_framework.driver import ConfigError, parse_config
from mappers.modbus.config import ModbusProtocolConfig, ModbusVisitorConfig


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"register": "Holding", "offset": 0}, "register: unknown register type 'Holding'"),
        ({"register": "HoldingRegister", "offset": 70000}, "offset: 70000 is outside 0-65535"),
        ({"register": "HoldingRegister", "offset": 0, "dataType": "float", "limit": 3}, "takes 1 or 2 or 4 registers"),
        ({"register": "HoldingRegister", "offset": 0, "dataType": "int32", "limit": 1}, "spans 2 register(s)"),
        ({"register": "HoldingRegister", "offset": 0, "dataType": "string"}, "needs limit"),
        ({"register": "HoldingRegister", "offset": 0, "dataType": "decimal"}, "dataType: unknown 'decimal'"),
        ({"register": "CoilRegister", "offset": 0, "dataType": "float"}, "float cannot be read from CoilRegister"),
        ({"register": "InputRegister", "offset": 0, "dataType": "bytes", "limit": 126}, "more than one request"),
        ({"register": "HoldingRegister", "offset": 65535, "dataType": "int32"}, "past the end of the address space"),
        ({"offset": 1}, "configData.register is required"),
    ],
)
def test_visitor_errors_name_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(ModbusVisitorConfig, config, "device default/boiler-1 property pressure visitors")
    assert str(err.value).startswith("device default/boiler-1 property pressure visitors: configData.")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "ip: give ip (Modbus TCP) or serialPort"),
        ({"ip": "10.0.0.1", "serialPort": "/dev/ttyS0"}, "communicateMode: both ip and serialPort"),
        ({"ip": "10.0.0.1", "communicateMode": "UDP"}, "communicateMode: expected TCP or RTU"),
        ({"serialPort": "/dev/ttyS0", "parity": "mark"}, "parity: expected none, even or odd"),
        ({"serialPort": "/dev/ttyS0", "stopBits": 3}, "stopBits: expected 1 or 2"),
        ({"ip": "10.0.0.1", "slaveID": 0}, "slaveID: expected 1 to 247"),
        ({"ip": "10.0.0.1", "port": "http"}, "port: expected an integer"),
    ],
)
def test_protocol_errors_name_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="configData") as err:
        parse_config(ModbusProtocolConfig, config, "device default/boiler-1 protocol")
    assert message in str(err.value)


def test_protocol_forms_kubeedge_uses() -> None:
    # KubeEdge's sample writes the port as a string; edgecore sends numbers as floats; parity may be one letter.
    tcp = parse_config(ModbusProtocolConfig, {"ip": "127.0.0.1", "port": "5502", "slaveID": 1.0}, "p")
    assert (tcp.mode, tcp.port, tcp.slaveID, tcp.endpoint) == ("tcp", 5502, 1, "tcp://127.0.0.1:5502")
    rtu = parse_config(
        ModbusProtocolConfig,
        {"serialPort": "/dev/ttyS1", "baudRate": 9600.0, "parity": "E", "communicateMode": "rtu", "ip": "x"},
        "p",
    )
    assert (rtu.mode, rtu.parity, rtu.line) == ("rtu", "E", "9600 8E1")
