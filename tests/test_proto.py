"""The DMI v1beta1 contract: names, numbers, and stubs that match the .proto."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from dmi.v1beta1 import api_pb2

ROOT = Path(__file__).resolve().parent.parent

EXPECTED_METHODS = [
    "/v1beta1.DeviceManagerService/MapperRegister",
    "/v1beta1.DeviceManagerService/ReportDeviceStatus",
    "/v1beta1.DeviceManagerService/ReportDeviceStates",
    "/v1beta1.DeviceMapperService/RegisterDevice",
    "/v1beta1.DeviceMapperService/RemoveDevice",
    "/v1beta1.DeviceMapperService/UpdateDevice",
    "/v1beta1.DeviceMapperService/CreateDeviceModel",
    "/v1beta1.DeviceMapperService/RemoveDeviceModel",
    "/v1beta1.DeviceMapperService/UpdateDeviceModel",
    "/v1beta1.DeviceMapperService/GetDevice",
]

# (message, field) -> (number, type, label) from KubeEdge's DMI v1beta1 (see DESIGN.md "Wire facts").
S, B, BY, I32, I64 = "string", "bool", "bytes", "int32", "int64"
EXPECTED_FIELDS: dict[str, dict[str, tuple[int, str]]] = {
    "MapperRegisterRequest": {"withData": (1, B), "mapper": (2, "MapperInfo")},
    "MapperRegisterResponse": {"modelList": (1, "[]DeviceModel"), "deviceList": (2, "[]Device")},
    "DeviceModel": {"name": (1, S), "spec": (2, "DeviceModelSpec"), "namespace": (3, S)},
    "DeviceModelSpec": {"properties": (1, "[]ModelProperty"), "commands": (2, "[]DeviceCommand")},
    "ModelProperty": {
        "name": (1, S),
        "description": (2, S),
        "type": (3, S),
        "accessMode": (4, S),
        "minimum": (5, S),
        "maximum": (6, S),
        "unit": (7, S),
    },
    "DeviceCommand": {
        "name": (1, S),
        "url": (2, S),
        "method": (3, S),
        "status_code": (4, "[]string"),
        "parameters": (5, "[]string"),
        "response": (6, BY),
    },
    "Device": {"name": (1, S), "spec": (2, "DeviceSpec"), "status": (3, "DeviceStatus"), "namespace": (4, S)},
    "DeviceSpec": {
        "deviceModelReference": (1, S),
        "protocol": (2, "ProtocolConfig"),
        "properties": (3, "[]DeviceProperty"),
        "methods": (4, "[]DeviceMethod"),
    },
    "DeviceMethod": {"name": (1, S), "description": (2, S), "propertyNames": (3, "[]string")},
    "DeviceProperty": {
        "name": (1, S),
        "desired": (2, "TwinProperty"),
        "visitors": (3, "VisitorConfig"),
        "reportCycle": (4, I64),
        "collectCycle": (5, I64),
        "reportToCloud": (6, B),
        "pushMethod": (7, "PushMethod"),
    },
    "ProtocolConfig": {"protocolName": (1, S), "configData": (2, "CustomizedValue")},
    "VisitorConfig": {"protocolName": (1, S), "configData": (2, "CustomizedValue")},
    "CustomizedValue": {"data": (1, "map<string,Any>")},
    "PushMethod": {
        "http": (1, "PushMethodHTTP"),
        "mqtt": (2, "PushMethodMQTT"),
        "dbMethod": (3, "DBMethod"),
        "otel": (4, "PushMethodOTEL"),
        "anomalyDetection": (5, "AnomalyDetection"),
    },
    "PushMethodHTTP": {"hostname": (1, S), "port": (2, I64), "requestpath": (3, S), "timeout": (4, I64)},
    "PushMethodMQTT": {"address": (1, S), "topic": (2, S), "qos": (3, I32), "retained": (4, B)},
    "PushMethodOTEL": {"endpointURL": (1, S)},
    "DBMethod": {
        "influxdb2": (1, "DBMethodInfluxdb2"),
        "redis": (2, "DBMethodRedis"),
        "tdengine": (3, "DBMethodTDEngine"),
        "mysql": (4, "DBMethodMySQL"),
    },
    "DBMethodInfluxdb2": {
        "influxdb2ClientConfig": (1, "Influxdb2ClientConfig"),
        "influxdb2DataConfig": (2, "Influxdb2DataConfig"),
    },
    "Influxdb2DataConfig": {"measurement": (1, S), "tag": (2, "map<string,string>"), "fieldKey": (3, S)},
    "Influxdb2ClientConfig": {"url": (1, S), "org": (2, S), "bucket": (3, S)},
    "DBMethodRedis": {"redisClientConfig": (1, "RedisClientConfig")},
    "RedisClientConfig": {"addr": (1, S), "db": (2, I32), "poolsize": (3, I32), "minIdleConns": (4, I32)},
    "DBMethodTDEngine": {"tdEngineClientConfig": (1, "TDEngineClientConfig")},
    "TDEngineClientConfig": {"addr": (1, S), "dbname": (2, S)},
    "DBMethodMySQL": {"mysqlClientConfig": (1, "MySQLClientConfig")},
    "MySQLClientConfig": {"addr": (1, S), "database": (2, S), "userName": (3, S)},
    "DBMethodOTEL": {"otelExporterConfig": (1, "OTELExporterConfig")},
    "OTELExporterConfig": {"endpointURL": (1, S)},
    "AnomalyDetection": {"data": (1, "map<string,Any>")},
    "MapperInfo": {
        "name": (1, S),
        "version": (2, S),
        "api_version": (3, S),
        "protocol": (4, S),
        "address": (5, BY),
        "state": (6, S),
    },
    "ReportDeviceStatusRequest": {
        "deviceName": (1, S),
        "reportedDevice": (2, "DeviceStatus"),
        "deviceNamespace": (3, S),
    },
    "ReportDeviceStatesRequest": {"deviceName": (1, S), "deviceNamespace": (2, S), "state": (3, S)},
    "DeviceStatus": {"twins": (1, "[]Twin"), "reportToCloud": (2, B), "reportCycle": (3, I64)},
    "Twin": {"propertyName": (1, S), "observedDesired": (2, "TwinProperty"), "reported": (3, "TwinProperty")},
    "TwinProperty": {"value": (1, S), "metadata": (2, "map<string,string>")},
    "ReportDeviceStatusResponse": {},
    "ReportDeviceStatesResponse": {},
    "RegisterDeviceRequest": {"device": (1, "Device")},
    "RegisterDeviceResponse": {"deviceName": (1, S), "deviceNamespace": (2, S)},
    "CreateDeviceModelRequest": {"model": (1, "DeviceModel")},
    "CreateDeviceModelResponse": {"deviceModelName": (1, S), "deviceModelNamespace": (2, S)},
    "RemoveDeviceRequest": {"deviceName": (1, S), "deviceNamespace": (2, S)},
    "RemoveDeviceResponse": {},
    "RemoveDeviceModelRequest": {"modelName": (1, S), "modelNamespace": (2, S)},
    "RemoveDeviceModelResponse": {},
    "UpdateDeviceRequest": {"device": (1, "Device")},
    "UpdateDeviceResponse": {},
    "UpdateDeviceModelRequest": {"model": (1, "DeviceModel")},
    "UpdateDeviceModelResponse": {},
    "GetDeviceRequest": {"deviceName": (1, S), "deviceNamespace": (2, S)},
    "GetDeviceResponse": {"device": (1, "Device")},
}

_SCALARS = {9: "string", 8: "bool", 12: "bytes", 5: "int32", 3: "int64"}


def _describe(field: object) -> str:
    f = field  # FieldDescriptor
    if f.message_type is not None and f.message_type.GetOptions().map_entry:  # type: ignore[attr-defined]
        key, value = f.message_type.fields  # type: ignore[attr-defined]
        vt = value.message_type.name if value.message_type is not None else _SCALARS[value.type]
        return f"map<{_SCALARS[key.type]},{vt}>"
    base = f.message_type.name if f.message_type is not None else _SCALARS[f.type]  # type: ignore[attr-defined]
    repeated = f.is_repeated  # type: ignore[attr-defined]
    return f"[]{base}" if repeated else base


def test_full_method_names_are_kubeedges() -> None:
    names = [
        f"/{service.full_name}/{method.name}"
        for service in api_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert names == EXPECTED_METHODS
    grpc_source = (ROOT / "dmi/v1beta1/api_pb2_grpc.py").read_text()
    for name in EXPECTED_METHODS:
        assert f"'{name}'" in grpc_source, name


def test_package_and_every_field_number() -> None:
    assert api_pb2.DESCRIPTOR.package == "v1beta1"
    assert api_pb2.DESCRIPTOR.dependencies[0].name == "google/protobuf/any.proto"
    messages = api_pb2.DESCRIPTOR.message_types_by_name
    assert set(messages) == set(EXPECTED_FIELDS)
    for name, fields in EXPECTED_FIELDS.items():
        got = {f.name: (f.number, _describe(f)) for f in messages[name].fields}
        assert got == fields, name


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    """Regenerate from api.proto with grpcio-tools: same descriptor and same service code."""
    subprocess.run([sys.executable, str(ROOT / "tools/gen_proto.py"), str(tmp_path)], check=True, capture_output=True)
    fresh_dir = tmp_path / "dmi/v1beta1"

    def serialized_descriptor(path: Path) -> bytes:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
                arg = node.args[0]
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, bytes)
                return arg.value
        raise AssertionError(f"no serialized descriptor in {path}")

    committed = serialized_descriptor(ROOT / "dmi/v1beta1/api_pb2.py")
    fresh = serialized_descriptor(fresh_dir / "api_pb2.py")
    a, b = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    a.ParseFromString(committed)
    b.ParseFromString(fresh)
    assert a == b, "dmi/v1beta1/api_pb2.py is stale: run `make proto`"
    for name in ("api_pb2_grpc.py", "api_pb2.pyi", "api_pb2.py"):
        assert (fresh_dir / name).read_text() == (ROOT / "dmi/v1beta1" / name).read_text(), (
            f"dmi/v1beta1/{name} differs from a fresh generation: run `make proto`"
        )
    assert importlib.util.find_spec("dmi.v1beta1.api_pb2_grpc") is not None
