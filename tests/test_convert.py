"""CR documents <-> proto messages, both ways, with edgecore's merge of model defaults."""

from __future__ import annotations

from typing import Any

from dmi.anypack import unpack_map
from dmi.convert import device_from_proto, device_to_proto, model_from_proto, model_to_proto
from dmi.resources import parse_device, parse_model

API = "devices.kubeedge.io/v1beta1"

MODEL: dict[str, Any] = {
    "apiVersion": API,
    "kind": "DeviceModel",
    "metadata": {"name": "thermostat-model", "namespace": "plant"},
    "spec": {
        "protocol": "modbus",
        "protocolConfigData": {"port": 502, "timeout": 1000},
        "properties": [
            {
                "name": "temperature",
                "description": "room temperature",
                "type": "FLOAT",
                "accessMode": "ReadOnly",
                "minimum": "-40",
                "maximum": "85",
                "unit": "degC",
                "visitors": {
                    "protocolName": "modbus",
                    "configData": {"register": "HoldingRegister", "offset": 0, "limit": 1, "scale": 0.1},
                },
            },
            {"name": "target", "type": "INT", "accessMode": "ReadWrite"},
        ],
    },
}

PUSH: dict[str, Any] = {
    "http": {"hostName": "http://127.0.0.1", "port": 8080, "requestPath": "/ingest", "timeout": 500},
    "mqtt": {"address": "tcp://127.0.0.1:1883", "topic": "plant/t", "qos": 1, "retained": True},
    "otel": {"endpointURL": "http://127.0.0.1:4318/v1/metrics"},
    "anomalyDetection": {"algorithm": "zscore", "threshold": 3},
    "dbMethod": {
        "influxdb2": {
            "influxdb2ClientConfig": {"url": "http://i:8086", "org": "o", "bucket": "b"},
            "influxdb2DataConfig": {"measurement": "m", "tag": {"site": "a"}, "fieldKey": "v"},
        },
        "redis": {"redisClientConfig": {"addr": "127.0.0.1:6379", "db": 2, "poolsize": 10, "minIdleConns": 1}},
        "TDEngine": {"TDEngineClientConfig": {"addr": "127.0.0.1:6041", "dbName": "plant"}},
        "mysql": {"mysqlClientConfig": {"addr": "127.0.0.1:3306", "database": "plant", "userName": "mapper"}},
    },
}

DEVICE: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Device",
    "metadata": {"name": "thermostat-1", "namespace": "plant"},
    "spec": {
        "deviceModelRef": {"name": "thermostat-model"},
        "nodeName": "edge-1",
        "protocol": {"protocolName": "modbus", "configData": {"ip": "10.0.0.5", "slaveID": 1, "port": 1502}},
        "properties": [
            {
                "name": "temperature",
                "collectCycle": 1000,
                "reportCycle": 2000,
                "reportToCloud": True,
                "visitors": {"protocolName": "ignored-by-merge", "configData": {"offset": 4, "isSwap": True}},
                "pushMethod": PUSH,
            },
            {
                "name": "target",
                "desired": {"value": "21", "metadata": {"type": "int"}},
                "collectCycle": 500,
                "reportCycle": 500,
                "reportToCloud": False,
                "visitors": {
                    "protocolName": "modbus",
                    "configData": {"register": "HoldingRegister", "offset": 10},
                },
            },
        ],
        "methods": [{"name": "set-target", "description": "write the target", "propertyNames": ["target"]}],
        "stateReport": {"reportCycle": 5000, "reportToCloud": True},
    },
}


def test_device_to_proto_follows_edgecore() -> None:
    proto = device_to_proto(parse_device(DEVICE), parse_model(MODEL))
    assert (proto.name, proto.namespace, proto.spec.deviceModelReference) == (
        "thermostat-1",
        "plant",
        "thermostat-model",
    )
    assert proto.spec.protocol.protocolName == "modbus"
    # protocolConfigData sits under the device's configData, key by key.
    assert unpack_map(proto.spec.protocol.configData.data) == {
        "ip": "10.0.0.5",
        "slaveID": 1.0,
        "port": 1502.0,
        "timeout": 1000.0,
    }
    temp, target = proto.spec.properties
    # The model's visitors replace the device's (protocolName included); the device's keys override.
    assert temp.visitors.protocolName == "modbus"
    assert unpack_map(temp.visitors.configData.data) == {
        "register": "HoldingRegister",
        "offset": 4.0,
        "limit": 1.0,
        "scale": 0.1,
        "isSwap": True,
    }
    # A property without model visitors keeps its own.
    assert unpack_map(target.visitors.configData.data) == {"register": "HoldingRegister", "offset": 10.0}
    assert (temp.collectCycle, temp.reportCycle, temp.reportToCloud) == (1000, 2000, True)
    assert target.desired.value == "21" and dict(target.desired.metadata) == {"type": "int"}
    assert not temp.HasField("desired")
    assert proto.spec.methods[0].propertyNames == ["target"]
    assert (proto.status.reportCycle, proto.status.reportToCloud) == (5000, True)


def test_push_method_names_are_mapped() -> None:
    proto = device_to_proto(parse_device(DEVICE), parse_model(MODEL))
    push = proto.spec.properties[0].pushMethod
    assert (push.http.hostname, push.http.port, push.http.requestpath, push.http.timeout) == (
        "http://127.0.0.1",
        8080,
        "/ingest",
        500,
    )
    assert (push.mqtt.address, push.mqtt.topic, push.mqtt.qos, push.mqtt.retained) == (
        "tcp://127.0.0.1:1883",
        "plant/t",
        1,
        True,
    )
    assert push.otel.endpointURL.endswith("/v1/metrics")
    assert unpack_map(push.anomalyDetection.data) == {"algorithm": "zscore", "threshold": 3.0}
    assert push.dbMethod.tdengine.tdEngineClientConfig.dbname == "plant"
    assert dict(push.dbMethod.influxdb2.influxdb2DataConfig.tag) == {"site": "a"}
    assert push.dbMethod.redis.redisClientConfig.db == 2
    assert push.dbMethod.mysql.mysqlClientConfig.userName == "mapper"


def test_proto_back_to_cr() -> None:
    proto = device_to_proto(parse_device(DEVICE), parse_model(MODEL))
    doc = device_from_proto(proto)
    assert doc["spec"]["deviceModelRef"] == {"name": "thermostat-model"}
    assert doc["spec"]["stateReport"] == {"reportCycle": 5000, "reportToCloud": True}
    assert doc["spec"]["properties"][0]["pushMethod"] == PUSH
    assert doc["spec"]["protocol"]["configData"] == {
        "ip": "10.0.0.5",
        "port": 1502,
        "slaveID": 1,
        "timeout": 1000,
    }
    assert doc["spec"]["properties"][1]["desired"] == {"value": "21", "metadata": {"type": "int"}}
    assert doc["spec"]["methods"] == DEVICE["spec"]["methods"]
    # And round again: the proto is stable through CR form.
    again = device_to_proto(parse_device(doc), None, packing="edgecore")
    assert again == proto


def test_model_round_trip() -> None:
    model = parse_model(MODEL)
    proto = model_to_proto(model)
    assert [p.name for p in proto.spec.properties] == ["temperature", "target"]
    assert proto.spec.properties[0].type == "FLOAT" and proto.spec.properties[0].unit == "degC"
    doc = model_from_proto(proto, protocol="modbus")
    assert doc["spec"]["protocol"] == "modbus"
    assert doc["spec"]["properties"][0] == {k: v for k, v in MODEL["spec"]["properties"][0].items() if k != "visitors"}


def test_legacy_status_report_flows_through() -> None:
    legacy = {
        **DEVICE,
        "spec": {k: v for k, v in DEVICE["spec"].items() if k != "stateReport"},
        "status": {"reportCycle": 7000, "reportToCloud": False},
    }
    proto = device_to_proto(parse_device(legacy))
    assert proto.HasField("status") and proto.status.reportCycle == 7000
    bare = {**DEVICE, "spec": {k: v for k, v in DEVICE["spec"].items() if k != "stateReport"}}
    assert not device_to_proto(parse_device(bare)).HasField("status")


def test_typed_packing_option() -> None:
    proto = device_to_proto(parse_device(DEVICE), parse_model(MODEL), packing="typed")
    data = proto.spec.protocol.configData.data
    assert data["slaveID"].type_url.endswith("Int64Value")
    assert unpack_map(data)["slaveID"] == 1
