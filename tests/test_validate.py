"""Validation of device CRs (dmi.validate), the shipped CRDs and samples, and ``mapper validate``."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from dmi.validate import (
    Issue,
    LoadedDocument,
    ValidationReport,
    iter_cr_files,
    load_crd_schema,
    validate_documents,
    validate_paths,
)
from mapper_cli import cmd_validate

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "crds"
SAMPLES = CRDS / "samples"
API = "devices.kubeedge.io/v1beta1"

MODEL: dict[str, Any] = {
    "apiVersion": API,
    "kind": "DeviceModel",
    "metadata": {"name": "meter-model", "namespace": "default"},
    "spec": {
        "protocol": "modbus",
        "properties": [
            {"name": "temperature", "type": "INT", "accessMode": "ReadOnly", "unit": "celsius"},
            {"name": "setpoint", "type": "INT", "accessMode": "ReadWrite", "minimum": "0", "maximum": "100"},
        ],
    },
}
DEVICE: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Device",
    "metadata": {"name": "meter", "namespace": "default"},
    "spec": {
        "deviceModelRef": {"name": "meter-model"},
        "nodeName": "edge-node-1",
        "protocol": {"protocolName": "modbus", "configData": {"ip": "127.0.0.1", "port": 502, "slaveID": 1}},
        "properties": [
            {
                "name": "temperature",
                "collectCycle": 1000,
                "reportCycle": 1000,
                "reportToCloud": True,
                "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": 0}},
                "pushMethod": {
                    "http": {"hostName": "127.0.0.1", "port": 8080, "requestPath": "/v1", "timeout": 500},
                    "mqtt": {"address": "tcp://127.0.0.1:1883", "topic": "meter", "qos": 1, "retained": False},
                },
            },
            {
                "name": "setpoint",
                "desired": {"value": "20", "metadata": {"type": "int"}},
                "collectCycle": 1000,
                "visitors": {"protocolName": "modbus", "configData": {"register": "HoldingRegister", "offset": 1}},
            },
        ],
        "methods": [{"name": "set", "description": "write the set point", "propertyNames": ["setpoint"]}],
        "stateReport": {"reportCycle": 5000, "reportToCloud": True},
    },
}


def model() -> dict[str, Any]:
    return copy.deepcopy(MODEL)


def device() -> dict[str, Any]:
    return copy.deepcopy(DEVICE)


def write(folder: Path, name: str, *docs: dict[str, Any] | str) -> Path:
    """Write documents (mappings, or raw YAML text) as one multi-document file."""
    parts = [d if isinstance(d, str) else yaml.safe_dump(d, sort_keys=False) for d in docs]
    path = folder / name
    path.write_text("---\n".join(parts), encoding="utf-8")
    return path


def lines(report: ValidationReport) -> list[str]:
    return [str(issue) for issue in report.issues]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Relative paths keep the expected issue strings short and exact.
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- the shipped samples and CRDs


def test_samples_validate_clean() -> None:
    report = validate_paths([SAMPLES])
    assert lines(report) == []
    assert report.ok
    assert len(report.documents) == 10
    files = {Path(d.file).name for d in report.documents}
    assert files == {
        "modbus-tcp-thermostat.yaml",
        "modbus-tcp-plc.yaml",
        "modbus-rtu-meter.yaml",
        "onvif-camera.yaml",
        "dht11-sensor.yaml",
    }


def test_samples_follow_the_conventions() -> None:
    for path in sorted(SAMPLES.glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        assert [d["kind"] for d in docs] == ["DeviceModel", "Device"], path.name
        model_doc, device_doc = docs
        assert device_doc["metadata"]["name"] == path.stem
        for doc in docs:
            assert doc["apiVersion"] == API
            assert doc["metadata"]["namespace"] == "default"
        assert device_doc["spec"]["nodeName"] == "edge-node-1"
        assert device_doc["spec"]["deviceModelRef"]["name"] == model_doc["metadata"]["name"]
        assert device_doc["spec"]["protocol"]["protocolName"] == model_doc["spec"]["protocol"]
        for prop in model_doc["spec"]["properties"]:
            assert prop["type"] == prop["type"].upper()
        config_maps = [device_doc["spec"]["protocol"]["configData"]] + [
            p["visitors"]["configData"] for p in device_doc["spec"]["properties"]
        ]
        for config in config_maps:
            for value in config.values():
                assert isinstance(value, str | int | float | bool), (path.name, value)
                if isinstance(value, int) and not isinstance(value, bool):
                    assert abs(value) < 2**24


def test_thermostat_sample_content() -> None:
    model_doc, device_doc = yaml.safe_load_all((SAMPLES / "modbus-tcp-thermostat.yaml").read_text())
    assert model_doc["spec"]["protocol"] == "modbus"
    assert device_doc["spec"]["protocol"]["configData"] == {"ip": "127.0.0.1", "port": 5020, "slaveID": 1}
    props = {p["name"]: p for p in device_doc["spec"]["properties"]}
    assert set(props) == {"temperature", "target-temperature", "power", "humidity", "alarm"}
    assert props["target-temperature"]["desired"] == {"value": "21"}
    registers = {name: p["visitors"]["configData"]["register"] for name, p in props.items()}
    assert registers == {
        "temperature": "HoldingRegister",
        "target-temperature": "HoldingRegister",
        "power": "CoilRegister",
        "humidity": "InputRegister",
        "alarm": "DiscreteInputRegister",
    }
    for prop in props.values():
        assert set(prop["visitors"]["configData"]) == {
            "register",
            "offset",
            "limit",
            "scale",
            "isSwap",
            "isRegisterSwap",
            "dataType",
        }
        assert (prop["collectCycle"], prop["reportCycle"], prop["reportToCloud"]) == (1000, 1000, True)
    assert device_doc["spec"]["methods"] == [
        {
            "name": "set-target",
            "description": "Change the temperature set point",
            "propertyNames": ["target-temperature"],
        }
    ]


def schema_fields(schema: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Every field of a schema as ``path -> type[/format]``; array items are written ``[]``."""
    out: dict[str, str] = {}
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        kind = sub.get("type", "?")
        out[path] = f"{kind}/{sub['format']}" if "format" in sub else kind
        out.update(schema_fields(sub, path))
        if "items" in sub:
            item = sub["items"]
            out[f"{path}[]"] = item.get("type", "?")
            out.update(schema_fields(item, f"{path}[]"))
        if "additionalProperties" in sub:
            out[f"{path}{{}}"] = sub["additionalProperties"]["type"]
    return out


def schema_marks(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Where the schema preserves unknown fields, restricts values or requires fields."""
    out: dict[str, Any] = {}
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        for mark in ("x-kubernetes-preserve-unknown-fields", "enum", "required"):
            if mark in sub:
                out[f"{path}:{mark}"] = sub[mark]
        out.update(schema_marks(sub, path))
        if "items" in sub:
            out.update(schema_marks(sub["items"], f"{path}[]"))
    return out


COMMON_FIELDS = {"apiVersion": "string", "kind": "string", "metadata": "object", "spec": "object"}
PRESERVE = "x-kubernetes-preserve-unknown-fields"

EXPECTED_FIELDS = {
    "DeviceModel": {
        **COMMON_FIELDS,
        "spec.protocol": "string",
        "spec.protocolConfigData": "object",
        "spec.properties": "array",
        "spec.properties[]": "object",
        "spec.properties[].name": "string",
        "spec.properties[].description": "string",
        "spec.properties[].type": "string",
        "spec.properties[].accessMode": "string",
        "spec.properties[].minimum": "string",
        "spec.properties[].maximum": "string",
        "spec.properties[].unit": "string",
        "spec.properties[].visitors": "object",
        "spec.properties[].visitors.protocolName": "string",
        "spec.properties[].visitors.configData": "object",
    },
    "Device": {
        **COMMON_FIELDS,
        "spec.deviceModelRef": "object",
        "spec.deviceModelRef.name": "string",
        "spec.nodeName": "string",
        "spec.protocol": "object",
        "spec.protocol.protocolName": "string",
        "spec.protocol.configData": "object",
        "spec.properties": "array",
        "spec.properties[]": "object",
        "spec.properties[].name": "string",
        "spec.properties[].desired": "object",
        "spec.properties[].desired.value": "string",
        "spec.properties[].desired.metadata": "object",
        "spec.properties[].desired.metadata{}": "string",
        "spec.properties[].visitors": "object",
        "spec.properties[].visitors.protocolName": "string",
        "spec.properties[].visitors.configData": "object",
        "spec.properties[].reportCycle": "integer/int64",
        "spec.properties[].collectCycle": "integer/int64",
        "spec.properties[].reportToCloud": "boolean",
        "spec.properties[].pushMethod": "object",
        "spec.properties[].pushMethod.http": "object",
        "spec.properties[].pushMethod.http.hostName": "string",
        "spec.properties[].pushMethod.http.port": "integer/int64",
        "spec.properties[].pushMethod.http.requestPath": "string",
        "spec.properties[].pushMethod.http.timeout": "integer/int64",
        "spec.properties[].pushMethod.mqtt": "object",
        "spec.properties[].pushMethod.mqtt.address": "string",
        "spec.properties[].pushMethod.mqtt.topic": "string",
        "spec.properties[].pushMethod.mqtt.qos": "integer/int32",
        "spec.properties[].pushMethod.mqtt.retained": "boolean",
        "spec.properties[].pushMethod.otel": "object",
        "spec.properties[].pushMethod.otel.endpointURL": "string",
        "spec.properties[].pushMethod.anomalyDetection": "object",
        "spec.properties[].pushMethod.dbMethod": "object",
        "spec.properties[].pushMethod.dbMethod.influxdb2": "object",
        "spec.properties[].pushMethod.dbMethod.influxdb2.influxdb2ClientConfig": "object",
        "spec.properties[].pushMethod.dbMethod.influxdb2.influxdb2ClientConfig.url": "string",
        "spec.properties[].pushMethod.dbMethod.influxdb2.influxdb2ClientConfig.org": "string",
        "spec.properties[].pushMethod.dbMethod.influxdb2.influxdb2ClientConfig.bucket": "string",
        "spec.properties[].pushMethod.dbMethod.influxdb2.influxdb2DataConfig": "object",
        "spec.properties[].pushMethod.dbMethod.influxdb2.influxdb2DataConfig.measurement": "string",
        "spec.properties[].pushMethod.dbMethod.influxdb2.influxdb2DataConfig.tag": "object",
        "spec.properties[].pushMethod.dbMethod.influxdb2.influxdb2DataConfig.tag{}": "string",
        "spec.properties[].pushMethod.dbMethod.influxdb2.influxdb2DataConfig.fieldKey": "string",
        "spec.properties[].pushMethod.dbMethod.redis": "object",
        "spec.properties[].pushMethod.dbMethod.redis.redisClientConfig": "object",
        "spec.properties[].pushMethod.dbMethod.redis.redisClientConfig.addr": "string",
        "spec.properties[].pushMethod.dbMethod.redis.redisClientConfig.db": "integer",
        "spec.properties[].pushMethod.dbMethod.redis.redisClientConfig.poolsize": "integer",
        "spec.properties[].pushMethod.dbMethod.redis.redisClientConfig.minIdleConns": "integer",
        "spec.properties[].pushMethod.dbMethod.TDEngine": "object",
        "spec.properties[].pushMethod.dbMethod.TDEngine.TDEngineClientConfig": "object",
        "spec.properties[].pushMethod.dbMethod.TDEngine.TDEngineClientConfig.addr": "string",
        "spec.properties[].pushMethod.dbMethod.TDEngine.TDEngineClientConfig.dbName": "string",
        "spec.properties[].pushMethod.dbMethod.mysql": "object",
        "spec.properties[].pushMethod.dbMethod.mysql.mysqlClientConfig": "object",
        "spec.properties[].pushMethod.dbMethod.mysql.mysqlClientConfig.addr": "string",
        "spec.properties[].pushMethod.dbMethod.mysql.mysqlClientConfig.database": "string",
        "spec.properties[].pushMethod.dbMethod.mysql.mysqlClientConfig.userName": "string",
        "spec.methods": "array",
        "spec.methods[]": "object",
        "spec.methods[].name": "string",
        "spec.methods[].description": "string",
        "spec.methods[].propertyNames": "array",
        "spec.methods[].propertyNames[]": "string",
        "spec.stateReport": "object",
        "spec.stateReport.reportCycle": "integer/int64",
        "spec.stateReport.reportToCloud": "boolean",
        "status": "object",
        "status.reportCycle": "integer/int64",
        "status.reportToCloud": "boolean",
    },
    "DeviceStatus": {
        **COMMON_FIELDS,
        "status": "object",
        "status.twins": "array",
        "status.twins[]": "object",
        "status.twins[].propertyName": "string",
        "status.twins[].reported": "object",
        "status.twins[].reported.value": "string",
        "status.twins[].reported.metadata": "object",
        "status.twins[].reported.metadata{}": "string",
        "status.twins[].observedDesired": "object",
        "status.twins[].observedDesired.value": "string",
        "status.twins[].observedDesired.metadata": "object",
        "status.twins[].observedDesired.metadata{}": "string",
        "status.state": "string",
        "status.lastOnlineTime": "string",
        "status.extensions": "object",
    },
}
PROPERTY_TYPES = ["INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM"]
EXPECTED_MARKS = {
    "DeviceModel": {
        f"spec.protocolConfigData:{PRESERVE}": True,
        "spec.properties[].type:enum": PROPERTY_TYPES,
        "spec.properties[].accessMode:enum": ["ReadWrite", "ReadOnly"],
        f"spec.properties[].visitors.configData:{PRESERVE}": True,
    },
    "Device": {
        f"spec.protocol.configData:{PRESERVE}": True,
        "spec.properties[].desired:required": ["value"],
        f"spec.properties[].visitors.configData:{PRESERVE}": True,
        f"spec.properties[].pushMethod.anomalyDetection:{PRESERVE}": True,
        f"status:{PRESERVE}": True,
    },
    "DeviceStatus": {
        "status.twins[].reported:required": ["value"],
        "status.twins[].observedDesired:required": ["value"],
        f"status.extensions:{PRESERVE}": True,
    },
}
NAMES = {
    "DeviceModel": ("devicemodels", "devicemodel", "DeviceModelList"),
    "Device": ("devices", "device", "DeviceList"),
    "DeviceStatus": ("devicestatuses", "devicestatus", "DeviceStatusList"),
}


@pytest.mark.parametrize("kind", ["DeviceModel", "Device", "DeviceStatus"])
def test_crd_files(kind: str) -> None:
    plural, singular, list_kind = NAMES[kind]
    crd = yaml.safe_load((CRDS / f"devices_v1beta1_{singular}.yaml").read_text())
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.devices.kubeedge.io"
    spec = crd["spec"]
    assert spec["group"] == "devices.kubeedge.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {"kind": kind, "listKind": list_kind, "plural": plural, "singular": singular}
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [("v1beta1", True, True)]
    version = spec["versions"][0]
    assert "subresources" not in version
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["type"] == "object"
    assert schema_fields(schema) == EXPECTED_FIELDS[kind]
    assert schema_marks(schema) == EXPECTED_MARKS[kind]
    assert load_crd_schema(kind) == schema
    assert load_crd_schema(kind) is load_crd_schema(kind)


def test_crd_schema_for_unknown_kind() -> None:
    with pytest.raises(KeyError):
        load_crd_schema("Widget")


# --------------------------------------------------------------------------- broken documents

Mutation = Callable[[dict[str, Any], dict[str, Any]], None]


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b[1].c`` in ``doc``."""
    node: Any = doc
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


def on_device(path: str, value: Any) -> Mutation:
    return lambda _m, d: _set(d, path, value)


def on_model(path: str, value: Any) -> Mutation:
    return lambda m, _d: _set(m, path, value)


def drop_from_device(path: str) -> Mutation:
    def mutate(_m: dict[str, Any], d: dict[str, Any]) -> None:
        parent, _, key = path.rpartition(".")
        node: Any = d
        for part in filter(None, parent.split(".")):
            node = node[part]
        del node[key]

    return mutate


def add_device_property(prop: dict[str, Any]) -> Mutation:
    return lambda _m, d: d["spec"]["properties"].append(prop)


def add_property_to_both(model_prop: dict[str, Any], device_prop: dict[str, Any]) -> Mutation:
    def mutate(m: dict[str, Any], d: dict[str, Any]) -> None:
        m["spec"]["properties"].append(model_prop)
        d["spec"]["properties"].append(device_prop)

    return mutate


ENUM_TYPES = "INT, FLOAT, DOUBLE, STRING, BOOLEAN, BYTES, STREAM"

BROKEN: dict[str, tuple[Mutation, list[str]]] = {
    "type mismatch": (
        on_device("spec.properties[0].collectCycle", "fast"),
        ['bad.yaml[1] spec.properties[0].collectCycle: expected integer, got "fast"'],
    ),
    "string field given a number": (
        on_device("spec.nodeName", 5),
        ["bad.yaml[1] spec.nodeName: expected string, got 5"],
    ),
    "enum type": (
        on_model("spec.properties[0].type", "int"),
        [f'bad.yaml[0] spec.properties[0].type: expected one of {ENUM_TYPES}, got "int"'],
    ),
    "enum accessMode": (
        on_model("spec.properties[1].accessMode", "RW"),
        ['bad.yaml[0] spec.properties[1].accessMode: expected one of ReadWrite, ReadOnly, got "RW"'],
    ),
    "unknown field": (
        on_device("spec.properties[0].foo", 1),
        ['bad.yaml[1] spec.properties[0]: unknown field "foo"'],
    ),
    "unknown field with a suggestion": (
        on_device("spec.properties[0].colectCycle", 1000),
        ['bad.yaml[1] spec.properties[0]: unknown field "colectCycle" (did you mean "collectCycle"?)'],
    ),
    "unknown top-level field": (
        on_model("status", {"x": 1}),
        ['bad.yaml[0]: unknown field "status"'],
    ),
    "unknown metadata field": (
        on_device("metadata.lables", {"a": "b"}),
        ['bad.yaml[1] metadata: unknown field "lables" (did you mean "labels"?)'],
    ),
    "missing desired.value": (
        on_device("spec.properties[1].desired", {"metadata": {"type": "int"}}),
        ['bad.yaml[1] spec.properties[1].desired: required field "value" is missing'],
    ),
    "bad name": (
        on_device("metadata.name", "Meter_1"),
        [
            'bad.yaml[1] metadata.name: "Meter_1" is not a valid name: use at most 253 lowercase letters, digits, '
            "'-' and '.', starting and ending with a letter or digit"
        ],
    ),
    "missing name": (
        on_model("metadata", {"namespace": "default"}),
        [
            'bad.yaml[0] metadata: required field "name" is missing',
            'bad.yaml[1] spec.deviceModelRef.name: DeviceModel "meter-model" not found in namespace "default"',
        ],
    ),
    "bad namespace": (
        on_model("metadata.namespace", "Plant.A"),
        [
            'bad.yaml[0] metadata.namespace: "Plant.A" is not a valid namespace: use at most 63 lowercase letters, '
            "digits and '-', starting and ending with a letter or digit",
            'bad.yaml[1] spec.deviceModelRef.name: DeviceModel "meter-model" not found in namespace "default"',
        ],
    ),
    "v1alpha2 apiVersion": (
        on_device("apiVersion", "devices.kubeedge.io/v1alpha2"),
        ["bad.yaml[1] apiVersion: devices.kubeedge.io/v1alpha2 is not supported, use devices.kubeedge.io/v1beta1"],
    ),
    "unknown kind in the group": (
        on_device("kind", "device"),
        ['bad.yaml[1] kind: unknown kind "device" in devices.kubeedge.io (did you mean "Device"?)'],
    ),
    "missing apiVersion": (
        drop_from_device("apiVersion"),
        ['bad.yaml[1]: required field "apiVersion" is missing'],
    ),
    "duplicate device property": (
        on_device("spec.properties[1].name", "temperature"),
        [
            'bad.yaml[1] spec.properties[1].name: duplicate property "temperature" (first at spec.properties[0])',
            'bad.yaml[1] spec.methods[0].propertyNames[0]: property "setpoint" is not defined in this Device',
            'warning: bad.yaml[1] spec.properties[1].desired: property "temperature" is ReadOnly in DeviceModel '
            '"meter-model": the desired value is never written',
        ],
    ),
    "duplicate model property": (
        on_model("spec.properties[1].name", "temperature"),
        [
            'bad.yaml[0] spec.properties[1].name: duplicate property "temperature" (first at spec.properties[0])',
            'bad.yaml[1] spec.properties[1].name: property "setpoint" is not defined in DeviceModel "meter-model"',
        ],
    ),
    "duplicate method": (
        lambda _m, d: d["spec"]["methods"].append({"name": "set", "propertyNames": ["temperature"]}),
        ['bad.yaml[1] spec.methods[1].name: duplicate method "set" (first at spec.methods[0])'],
    ),
    "empty property name": (
        on_model("spec.properties[0].name", ""),
        [
            "bad.yaml[0] spec.properties[0].name: must not be empty",
            'bad.yaml[1] spec.properties[0].name: property "temperature" is not defined in DeviceModel "meter-model"',
        ],
    ),
    "property without a name": (
        add_device_property({"collectCycle": 1000}),
        ['bad.yaml[1] spec.properties[2]: required field "name" is missing'],
    ),
    "missing model reference": (
        drop_from_device("spec.deviceModelRef"),
        ['bad.yaml[1] spec: required field "deviceModelRef" is missing'],
    ),
    "empty model reference": (
        on_device("spec.deviceModelRef", {"name": ""}),
        ['bad.yaml[1] spec.deviceModelRef: required field "name" is missing'],
    ),
    "model not found": (
        on_device("spec.deviceModelRef.name", "ghost"),
        ['bad.yaml[1] spec.deviceModelRef.name: DeviceModel "ghost" not found in namespace "default"'],
    ),
    "model in another namespace": (
        on_device("metadata.namespace", "plant"),
        ['bad.yaml[1] spec.deviceModelRef.name: DeviceModel "meter-model" not found in namespace "plant"'],
    ),
    "property not in model": (
        add_device_property({"name": "pressure", "collectCycle": 1000}),
        ['bad.yaml[1] spec.properties[2].name: property "pressure" is not defined in DeviceModel "meter-model"'],
    ),
    "method naming a missing property": (
        on_device("spec.methods[0].propertyNames", ["setpoint", "speed"]),
        ['bad.yaml[1] spec.methods[0].propertyNames[1]: property "speed" is not defined in this Device'],
    ),
    "missing protocol name": (
        on_device("spec.protocol", {"configData": {"ip": "127.0.0.1"}}),
        ['bad.yaml[1] spec.protocol: required field "protocolName" is missing'],
    ),
    "missing protocol": (
        drop_from_device("spec.protocol"),
        ['bad.yaml[1] spec: required field "protocol" is missing'],
    ),
    "negative cycle": (
        on_device("spec.properties[0].reportCycle", -1),
        ["bad.yaml[1] spec.properties[0].reportCycle: must not be negative, got -1"],
    ),
    "negative state report cycle": (
        on_device("spec.stateReport.reportCycle", -5),
        ["bad.yaml[1] spec.stateReport.reportCycle: must not be negative, got -5"],
    ),
    "bad port": (
        on_device("spec.properties[0].pushMethod.http.port", 70000),
        ["bad.yaml[1] spec.properties[0].pushMethod.http.port: must be between 1 and 65535, got 70000"],
    ),
    "zero port": (
        on_device("spec.properties[0].pushMethod.http.port", 0),
        ["bad.yaml[1] spec.properties[0].pushMethod.http.port: must be between 1 and 65535, got 0"],
    ),
    "bad qos": (
        on_device("spec.properties[0].pushMethod.mqtt.qos", 3),
        ["bad.yaml[1] spec.properties[0].pushMethod.mqtt.qos: must be 0, 1 or 2, got 3"],
    ),
    "qos beyond int32": (
        on_device("spec.properties[0].pushMethod.mqtt.qos", 2**31),
        [
            "bad.yaml[1] spec.properties[0].pushMethod.mqtt.qos: 2147483648 is out of the int32 range",
            "bad.yaml[1] spec.properties[0].pushMethod.mqtt.qos: must be 0, 1 or 2, got 2147483648",
        ],
    ),
    "integer as float": (
        on_device("spec.properties[0].collectCycle", 5.0),
        ["bad.yaml[1] spec.properties[0].collectCycle: expected integer, got 5.0"],
    ),
    "bool for integer": (
        on_device("spec.properties[0].reportCycle", True),
        ["bad.yaml[1] spec.properties[0].reportCycle: expected integer, got true"],
    ),
    "integer for bool": (
        on_device("spec.properties[0].reportToCloud", 1),
        ["bad.yaml[1] spec.properties[0].reportToCloud: expected boolean, got 1"],
    ),
    "typed map value not a string": (
        on_device("spec.properties[1].desired.metadata", {"type": "int", "scale": 10}),
        ["bad.yaml[1] spec.properties[1].desired.metadata.scale: expected string, got 10"],
    ),
    "label value not a string": (
        on_device("metadata.labels", {"site": "north", "floor": 3}),
        ["bad.yaml[1] metadata.labels.floor: expected string, got 3"],
    ),
    "array where an object belongs": (
        on_device("spec.protocol", ["modbus"]),
        [
            "bad.yaml[1] spec.protocol: expected object, got array",
        ],
    ),
    "object where a list belongs": (
        on_device("spec.methods", {"name": "set"}),
        ["bad.yaml[1] spec.methods: expected array, got object"],
    ),
    # Found by mutating the samples: a model property named by a mapping made the Device's check raise TypeError.
    "model property name not a string": (
        on_model("spec.properties[0].name", {"a": 1}),
        [
            "bad.yaml[0] spec.properties[0].name: expected string, got object",
            'bad.yaml[1] spec.properties[0].name: property "temperature" is not defined in DeviceModel "meter-model"',
        ],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_documents(workdir: Path, case: str) -> None:
    mutate, expected = BROKEN[case]
    m, d = model(), device()
    mutate(m, d)
    write(workdir, "bad.yaml", m, d)
    report = validate_paths([Path("bad.yaml")])
    assert lines(report) == expected
    assert not report.ok
    assert report.invalid_files() == {"bad.yaml"}
    assert len(report.documents) == 2


def test_unmodified_pair_is_clean(workdir: Path) -> None:
    write(workdir, "good.yaml", model(), device())
    report = validate_paths([Path("good.yaml")])
    assert lines(report) == []
    assert [(d.file, d.index, d.doc["kind"]) for d in report.documents] == [
        ("good.yaml", 0, "DeviceModel"),
        ("good.yaml", 1, "Device"),
    ]


def test_yaml_syntax_error_names_line_and_column(workdir: Path) -> None:
    text = "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata:\n  name: a\n   namespace: b\n"
    path = write(workdir, "bad.yaml", model(), text)
    # The bad line is the fifth of the second document.
    line = path.read_text().splitlines().index("   namespace: b") + 1
    problem = (
        "mapping values are not allowed in this context"
        if yaml.__with_libyaml__
        else "mapping values are not allowed here"
    )
    report = validate_paths([Path("bad.yaml")])
    # Document 0 is fine, but nothing of a file with a syntax error is used.
    assert lines(report) == [f"bad.yaml: invalid YAML at line {line}, column 13: {problem}"]
    assert line == len(yaml.safe_dump(model(), sort_keys=False).splitlines()) + 6
    assert report.documents == []
    assert report.issues[0].index is None
    assert report.invalid_files() == {"bad.yaml"}


def test_duplicate_yaml_key(workdir: Path) -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nkind: Secret\n"
    write(workdir, "dup.yaml", text)
    assert lines(validate_paths([Path("dup.yaml")])) == [
        'dup.yaml: invalid YAML at line 3, column 1: duplicate key "kind" (while reading a mapping at line 1, column 1)'
    ]


def test_yaml_is_read_like_the_api_server_reads_it(workdir: Path) -> None:
    text = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: m, annotations: {created: 2024-05-01}}
spec:
  protocol: modbus
  protocolConfigData: {1: one, true: yes}
  properties:
    - &base {name: a, type: INT, accessMode: ReadOnly, unit: "="}
    - <<: *base
      name: b
      unit: =
"""
    write(workdir, "m.yaml", text)
    report = validate_paths([Path("m.yaml")])
    assert lines(report) == []
    spec = report.documents[0].doc["spec"]
    # A merged key overridden by the mapping's own key is not a duplicate.
    assert [(p["name"], p["unit"]) for p in spec["properties"]] == [("a", "="), ("b", "=")]
    assert spec["protocolConfigData"] == {"1": "one", "true": True}
    assert report.documents[0].doc["metadata"]["annotations"] == {"created": "2024-05-01"}


def test_invalid_json(workdir: Path) -> None:
    (workdir / "bad.json").write_text('{"apiVersion": "v1",}')
    assert lines(validate_paths([Path("bad.json")])) == [
        "bad.json: invalid JSON at line 1, column 21: Expecting property name enclosed in double quotes"
    ]


def test_json_documents_are_read(workdir: Path) -> None:
    (workdir / "model.json").write_text(json.dumps(model()))
    write(workdir, "device.yaml", device())
    report = validate_paths([workdir])
    assert lines(report) == []
    assert [d.file for d in report.documents] == [str(workdir / "device.yaml"), str(workdir / "model.json")]


def test_non_mapping_documents(workdir: Path) -> None:
    write(workdir, "bad.yaml", "- a\n- b\n", '"just text"\n', model())
    report = validate_paths([Path("bad.yaml")])
    assert lines(report) == [
        "bad.yaml[0]: expected a Kubernetes object (a mapping), got array",
        'bad.yaml[1]: expected a Kubernetes object (a mapping), got "just text"',
    ]
    assert [d.index for d in report.documents] == [2]


def test_error_on_second_document_and_empty_documents(workdir: Path) -> None:
    broken = device()
    broken["spec"]["properties"][0]["collectCycle"] = "fast"
    # Document 1 is empty (a stray separator): skipped, but it still counts for the index.
    write(workdir, "multi.yaml", model(), "", broken)
    report = validate_paths([Path("multi.yaml")])
    assert lines(report) == ['multi.yaml[2] spec.properties[0].collectCycle: expected integer, got "fast"']
    assert [d.index for d in report.documents] == [0, 2]

    write(workdir, "two.yaml", model(), broken)
    assert lines(validate_paths([Path("two.yaml")])) == [
        'two.yaml[1] spec.properties[0].collectCycle: expected integer, got "fast"'
    ]


def test_duplicate_names_across_files(workdir: Path) -> None:
    write(workdir, "a.yaml", model(), device())
    write(workdir, "b.yaml", device())
    report = validate_paths([Path("a.yaml"), Path("b.yaml")])
    assert lines(report) == ['b.yaml[0] metadata.name: duplicate Device "default/meter": first defined in a.yaml[1]']
    assert report.invalid_files() == {"b.yaml"}


def test_same_name_in_other_namespace_or_kind_is_fine(workdir: Path) -> None:
    other_ns_model, other_ns_device = model(), device()
    other_ns_model["metadata"]["namespace"] = "plant"
    other_ns_device["metadata"]["namespace"] = "plant"
    status = {"apiVersion": API, "kind": "DeviceStatus", "metadata": {"name": "meter"}, "spec": {}}
    write(workdir, "a.yaml", model(), device(), other_ns_model, other_ns_device, status)
    assert lines(validate_paths([Path("a.yaml")])) == []


def test_device_status_documents(workdir: Path) -> None:
    # lastOnlineTime is an unquoted timestamp: it stays a string, as when the API server reads YAML.
    text = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceStatus
metadata:
  name: meter
  namespace: default
spec: {}
status:
  state: online
  lastOnlineTime: 2024-05-01T10:00:00Z
  extensions: {anything: {goes: [1, 2]}}
  twins:
    - propertyName: temperature
      reported: {value: "21", metadata: {timestamp: "1700000000000", type: string}}
      observedDesired: {value: ""}
    - propertyName: setpoint
      reported: {metadata: {}}
"""
    write(workdir, "status.yaml", text)
    report = validate_paths([Path("status.yaml")])
    assert lines(report) == ['status.yaml[0] status.twins[1].reported: required field "value" is missing']
    assert report.documents[0].doc["status"]["lastOnlineTime"] == "2024-05-01T10:00:00Z"


def test_nulls_are_treated_as_absent(workdir: Path) -> None:
    d = device()
    d["spec"]["properties"][0]["collectCycle"] = None
    d["spec"]["properties"][1]["desired"] = None
    write(workdir, "n.yaml", model(), d)
    assert lines(validate_paths([Path("n.yaml")])) == []


def test_several_errors_in_one_document_keep_their_order(workdir: Path) -> None:
    d = device()
    d["spec"]["properties"][0]["collectCycle"] = "fast"
    d["spec"]["properties"][0]["reportCycle"] = -10
    d["spec"]["properties"].append({"name": "pressure"})
    write(workdir, "bad.yaml", model(), d)
    assert lines(validate_paths([Path("bad.yaml")])) == [
        'bad.yaml[1] spec.properties[0].collectCycle: expected integer, got "fast"',
        "bad.yaml[1] spec.properties[0].reportCycle: must not be negative, got -10",
        'bad.yaml[1] spec.properties[2].name: property "pressure" is not defined in DeviceModel "meter-model"',
    ]


# --------------------------------------------------------------------------- warnings


WARNINGS: dict[str, tuple[Mutation, list[str]]] = {
    "nested configData": (
        on_device("spec.protocol.configData.serial", {"port": "/dev/ttyS0"}),
        [
            "warning: w.yaml[1] spec.protocol.configData.serial: nested object: edgecore would leave this device "
            "out; our agent sends it as a JSON string"
        ],
    ),
    "list in a visitor": (
        on_device("spec.properties[0].visitors.configData.offsets", [0, 1]),
        [
            "warning: w.yaml[1] spec.properties[0].visitors.configData.offsets: nested list: edgecore would leave "
            "this device out; our agent sends it as a JSON string"
        ],
    ),
    "key named data": (
        on_device("spec.protocol.configData.Data", "x"),
        ['warning: w.yaml[1] spec.protocol.configData.Data: a key named "Data" makes edgecore leave this device out'],
    ),
    "null value": (
        on_device("spec.protocol.configData.slaveID", None),
        ["warning: w.yaml[1] spec.protocol.configData.slaveID: null value: edgecore would leave this device out"],
    ),
    "big integer": (
        on_device("spec.protocol.configData.serial", 16777217),
        [
            "warning: w.yaml[1] spec.protocol.configData.serial: edgecore sends numbers as float32: 16777217 would "
            "arrive as 16777216"
        ],
    ),
    "big integer float32 can hold": (
        on_device("spec.protocol.configData.serial", 100000000),
        [
            "warning: w.yaml[1] spec.protocol.configData.serial: edgecore sends numbers as float32, exact for "
            "integers only up to 2^24: 100000000 happens to fit, but a quoted string is safer"
        ],
    ),
    "nested anomalyDetection": (
        on_device("spec.properties[0].pushMethod.anomalyDetection", {"threshold": 3, "window": {"size": 10}}),
        [
            "warning: w.yaml[1] spec.properties[0].pushMethod.anomalyDetection.window: nested object: edgecore "
            "would leave this device out; our agent sends it as a JSON string"
        ],
    ),
    "nested model protocolConfigData": (
        on_model("spec.protocolConfigData", {"serial": {"baud": 9600}}),
        [
            "warning: w.yaml[0] spec.protocolConfigData.serial: nested object: edgecore would leave every device "
            "of this model out; our agent sends it as a JSON string"
        ],
    ),
    "model visitor key data": (
        on_model("spec.properties[0].visitors", {"protocolName": "modbus", "configData": {"data": 1}}),
        [
            'warning: w.yaml[0] spec.properties[0].visitors.configData.data: a key named "data" makes edgecore '
            "leave every device of this model out"
        ],
    ),
    "protocol differs from the model": (
        on_device("spec.protocol.protocolName", "modbus-rtu"),
        [
            'warning: w.yaml[1] spec.protocol.protocolName: "modbus-rtu" differs from protocol "modbus" of '
            'DeviceModel "meter-model": model updates go to the mapper of the model\'s protocol'
        ],
    ),
    "desired on a ReadOnly property": (
        on_device("spec.properties[0].desired", {"value": "5"}),
        [
            'warning: w.yaml[1] spec.properties[0].desired: property "temperature" is ReadOnly in DeviceModel '
            '"meter-model": the desired value is never written'
        ],
    ),
    "property name edgecore cannot report": (
        add_property_to_both({"name": "room temp", "type": "FLOAT"}, {"name": "room temp"}),
        [
            'warning: w.yaml[1] spec.properties[2].name: edgecore drops reports of property "room temp": a name '
            "may only use letters, digits and -_.,:/@# (at most 128)"
        ],
    ),
}


@pytest.mark.parametrize("case", list(WARNINGS), ids=list(WARNINGS))
def test_warnings(workdir: Path, case: str) -> None:
    mutate, expected = WARNINGS[case]
    m, d = model(), device()
    mutate(m, d)
    write(workdir, "w.yaml", m, d)
    report = validate_paths([Path("w.yaml")])
    assert lines(report) == expected
    assert report.ok
    assert report.errors == []
    assert report.invalid_files() == set()
    assert all(i.severity == "warning" for i in report.warnings)


def test_other_api_groups_are_skipped_with_a_warning(workdir: Path) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    write(workdir, "mixed.yaml", model(), config_map, device())
    report = validate_paths([Path("mixed.yaml")])
    assert lines(report) == ["warning: mixed.yaml[1]: skipped: not a devices.kubeedge.io object"]
    assert report.ok
    # Every mapping is kept, so a caller can still see the ConfigMap.
    assert [d.doc["kind"] for d in report.documents] == ["DeviceModel", "ConfigMap", "Device"]


# --------------------------------------------------------------------------- API details


def test_issue_strings() -> None:
    assert str(Issue("a.yaml", 1, "spec.x", "bad")) == "a.yaml[1] spec.x: bad"
    assert str(Issue("a.yaml", 0, "", "bad")) == "a.yaml[0]: bad"
    assert str(Issue("a.yaml", None, "", "cannot read")) == "a.yaml: cannot read"
    assert str(Issue("a.yaml", 2, "spec", "hmm", "warning")) == "warning: a.yaml[2] spec: hmm"


def test_iter_cr_files(tmp_path: Path) -> None:
    for rel in ("b.yaml", "a.yml", "c.json", "notes.txt", ".hidden.yaml", "sub/d.yaml", ".git/e.yaml", "sub/x.YAML"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    explicit = tmp_path / "notes.txt"
    found = iter_cr_files([tmp_path, explicit, tmp_path / "missing.yaml", tmp_path / "b.yaml"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.yml",
        "b.yaml",
        "c.json",
        "sub/d.yaml",
        "sub/x.YAML",
        "notes.txt",
    ]


def test_iter_cr_files_survives_a_link_loop(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("{}")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert iter_cr_files([tmp_path]) == [tmp_path / "a.yaml"]


def test_missing_path_is_a_file_level_error(workdir: Path) -> None:
    report = validate_paths([Path("nope.yaml")])
    assert lines(report) == ["nope.yaml: does not exist"]
    assert not report.ok


def test_validate_documents_directly() -> None:
    docs = [LoadedDocument("x.yaml", 0, model()), LoadedDocument("x.yaml", 1, device())]
    assert validate_documents(docs) == []
    broken = device()
    broken["spec"]["deviceModelRef"]["name"] = "ghost"
    assert [str(i) for i in validate_documents([LoadedDocument("y.yaml", 3, broken)])] == [
        'y.yaml[3] spec.deviceModelRef.name: DeviceModel "ghost" not found in namespace "default"'
    ]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Keeps ``validate`` a subcommand even though it is the only one."""

    cmd_validate.register(app)
    return app


def test_cli_reports_errors(workdir: Path, cli: typer.Typer) -> None:
    d = device()
    d["spec"]["properties"][0]["collectCycle"] = "fast"
    d["spec"]["protocol"]["configData"]["data"] = "x"
    write(workdir, "bad.yaml", model(), d)
    result = CliRunner().invoke(cli, ["validate", "-f", "bad.yaml"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        'bad.yaml[1] spec.properties[0].collectCycle: expected integer, got "fast"'
        " (Device default/meter, property temperature)",
        'warning: bad.yaml[1] spec.protocol.configData.data: a key named "data" makes edgecore leave this device out'
        " (Device default/meter)",
        "2 documents checked: 1 error, 1 warning",
    ]


def test_cli_samples_are_ok(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["validate", "-f", str(SAMPLES)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["10 documents checked: ok"]


def test_cli_warnings_do_not_fail(workdir: Path, cli: typer.Typer) -> None:
    d = device()
    d["spec"]["protocol"]["configData"]["serial"] = 16777217
    write(workdir, "model.yaml", model())
    write(workdir, "device.yaml", d)
    result = CliRunner().invoke(cli, ["validate", "-f", "model.yaml", "--filename", "device.yaml"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "2 documents checked: 0 errors, 1 warning"


def test_cli_missing_path(workdir: Path, cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["validate", "-f", "nope.yaml"])
    assert result.exit_code == 2
    assert "error: nope.yaml does not exist" in result.stderr


def test_cli_requires_filename(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["validate"])
    assert result.exit_code == 2


def test_cli_json(workdir: Path, cli: typer.Typer) -> None:
    d = device()
    d["spec"]["deviceModelRef"]["name"] = "ghost"
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    write(workdir, "bad.yaml", d, config_map)
    result = CliRunner().invoke(cli, ["validate", "-f", "bad.yaml", "-o", "json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "documents": 2,
        "errors": [
            {
                "file": "bad.yaml",
                "index": 0,
                "path": "spec.deviceModelRef.name",
                "message": 'DeviceModel "ghost" not found in namespace "default"',
                "subject": "Device default/meter",
            }
        ],
        "warnings": [
            {
                "file": "bad.yaml",
                "index": 1,
                "path": "",
                "message": "skipped: not a devices.kubeedge.io object",
                "subject": "ConfigMap default/x",
            }
        ],
    }


def test_cli_json_on_samples(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["validate", "-f", str(SAMPLES), "--output", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"documents": 10, "errors": [], "warnings": []}
