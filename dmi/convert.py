"""Device and DeviceModel custom resources <-> DMI v1beta1 proto messages.

CR -> proto follows what edgecore hands a mapper:

* ``deviceModelRef.name`` becomes ``deviceModelReference``;
* ``spec.stateReport`` (or the legacy ``status.{reportCycle, reportToCloud}``)
  becomes ``Device.status``;
* the device is merged with its model's defaults: a model property's
  ``visitors`` replace the device property's (protocolName included) and the
  device's own ``configData`` keys override them; ``protocolConfigData`` of the
  model sits under the device's ``protocol.configData`` key by key; the device's
  ``protocolName`` always wins;
* ``configData`` values are packed by ``dmi.anypack`` (edgecore style by default);
* CR JSON names that differ from the proto are mapped (``hostName`` ->
  ``hostname``, ``requestPath`` -> ``requestpath``, ``TDEngine`` ->
  ``tdengine``, ``TDEngineClientConfig.dbName`` -> ``tdEngineClientConfig.dbname``).

proto -> CR produces plain CR documents (dicts ready for YAML), the inverse of the
above except for the merge, which cannot be undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmi import API_VERSION
from dmi.anypack import Packing, pack_map, to_cr_value, unpack_map
from dmi.resources import (
    DeviceModelResource,
    DeviceProperty,
    DeviceResource,
    Visitor,
)
from dmi.v1beta1 import api_pb2 as pb


def merge_model_defaults(device: DeviceResource, model: DeviceModelResource | None) -> DeviceResource:
    """The device as edgecore sends it: model defaults under the device's own settings."""
    if model is None:
        return device
    protocol = Visitor(
        device.protocol.protocol_name,
        {**model.protocol_config_data, **device.protocol.config_data},
    )
    properties = []
    for prop in device.properties:
        model_prop = model.property(prop.name)
        visitors = prop.visitors
        if model_prop is not None and model_prop.visitors is not None:
            own = prop.visitors.config_data if prop.visitors is not None else {}
            visitors = Visitor(model_prop.visitors.protocol_name, {**model_prop.visitors.config_data, **own})
        properties.append(_replace_visitors(prop, visitors))
    return DeviceResource(
        key=device.key,
        model_ref=device.model_ref,
        node_name=device.node_name,
        protocol=protocol,
        properties=tuple(properties),
        methods=device.methods,
        state_report=device.state_report,
        document=device.document,
    )


def _replace_visitors(prop: DeviceProperty, visitors: Visitor | None) -> DeviceProperty:
    return DeviceProperty(
        name=prop.name,
        desired=prop.desired,
        visitors=visitors,
        report_cycle=prop.report_cycle,
        collect_cycle=prop.collect_cycle,
        report_to_cloud=prop.report_to_cloud,
        push_method=prop.push_method,
    )


# --------------------------------------------------------------------------- CR -> proto


def model_to_proto(model: DeviceModelResource) -> pb.DeviceModel:
    return pb.DeviceModel(
        name=model.key.name,
        namespace=model.key.namespace,
        spec=pb.DeviceModelSpec(
            properties=[
                pb.ModelProperty(
                    name=p.name,
                    description=p.description,
                    type=p.type,
                    accessMode=p.access_mode,
                    minimum=p.minimum,
                    maximum=p.maximum,
                    unit=p.unit,
                )
                for p in model.properties
            ]
        ),
    )


def _visitor_config(visitor: Visitor, packing: Packing) -> tuple[str, pb.CustomizedValue]:
    return visitor.protocol_name, pb.CustomizedValue(data=pack_map(visitor.config_data, packing))


def device_to_proto(
    device: DeviceResource,
    model: DeviceModelResource | None = None,
    packing: Packing = "edgecore",
) -> pb.Device:
    """Convert a Device CR (merged with ``model`` when given) to the proto a mapper receives."""
    merged = merge_model_defaults(device, model)
    name, config = _visitor_config(merged.protocol, packing)
    spec = pb.DeviceSpec(
        deviceModelReference=merged.model_ref,
        protocol=pb.ProtocolConfig(protocolName=name, configData=config),
    )
    for prop in merged.properties:
        out = spec.properties.add(
            name=prop.name,
            reportCycle=prop.report_cycle,
            collectCycle=prop.collect_cycle,
            reportToCloud=prop.report_to_cloud,
        )
        if prop.desired is not None:
            out.desired.value = prop.desired.value
            out.desired.metadata.update(prop.desired.metadata)
        if prop.visitors is not None:
            vname, vconfig = _visitor_config(prop.visitors, packing)
            out.visitors.protocolName = vname
            out.visitors.configData.CopyFrom(vconfig)
        if prop.push_method is not None:
            out.pushMethod.CopyFrom(push_method_to_proto(prop.push_method, packing))
    for method in merged.methods:
        spec.methods.add(name=method.name, description=method.description, propertyNames=method.property_names)
    result = pb.Device(name=merged.key.name, namespace=merged.key.namespace, spec=spec)
    if merged.state_report is not None:
        result.status.reportCycle = merged.state_report.report_cycle
        result.status.reportToCloud = merged.state_report.report_to_cloud
    return result


def push_method_to_proto(raw: Mapping[str, Any], packing: Packing = "edgecore") -> pb.PushMethod:
    """Map a CR ``pushMethod`` (schema-valid) to the proto, renaming the fields whose JSON names differ."""
    out = pb.PushMethod()
    if (http := raw.get("http")) is not None:
        out.http.SetInParent()
        out.http.hostname = str(http.get("hostName", ""))
        out.http.port = int(http.get("port", 0))
        out.http.requestpath = str(http.get("requestPath", ""))
        out.http.timeout = int(http.get("timeout", 0))
    if (mqtt := raw.get("mqtt")) is not None:
        out.mqtt.SetInParent()
        out.mqtt.address = str(mqtt.get("address", ""))
        out.mqtt.topic = str(mqtt.get("topic", ""))
        out.mqtt.qos = int(mqtt.get("qos", 0))
        out.mqtt.retained = bool(mqtt.get("retained", False))
    if (otel := raw.get("otel")) is not None:
        out.otel.SetInParent()
        out.otel.endpointURL = str(otel.get("endpointURL", ""))
    if (anomaly := raw.get("anomalyDetection")) is not None:
        out.anomalyDetection.SetInParent()
        for key, value in pack_map(anomaly, packing).items():
            out.anomalyDetection.data[key].CopyFrom(value)
    if (db := raw.get("dbMethod")) is not None:
        out.dbMethod.SetInParent()
        _db_method_to_proto(db, out.dbMethod)
    return out


def _db_method_to_proto(db: Mapping[str, Any], out: pb.DBMethod) -> None:
    if (influx := db.get("influxdb2")) is not None:
        out.influxdb2.SetInParent()
        client = influx.get("influxdb2ClientConfig") or {}
        data = influx.get("influxdb2DataConfig") or {}
        out.influxdb2.influxdb2ClientConfig.url = str(client.get("url", ""))
        out.influxdb2.influxdb2ClientConfig.org = str(client.get("org", ""))
        out.influxdb2.influxdb2ClientConfig.bucket = str(client.get("bucket", ""))
        out.influxdb2.influxdb2DataConfig.measurement = str(data.get("measurement", ""))
        out.influxdb2.influxdb2DataConfig.fieldKey = str(data.get("fieldKey", ""))
        out.influxdb2.influxdb2DataConfig.tag.update({str(k): str(v) for k, v in (data.get("tag") or {}).items()})
    if (redis := db.get("redis")) is not None:
        out.redis.SetInParent()
        client = redis.get("redisClientConfig") or {}
        out.redis.redisClientConfig.addr = str(client.get("addr", ""))
        out.redis.redisClientConfig.db = int(client.get("db", 0))
        out.redis.redisClientConfig.poolsize = int(client.get("poolsize", 0))
        out.redis.redisClientConfig.minIdleConns = int(client.get("minIdleConns", 0))
    if (tdengine := db.get("TDEngine")) is not None:
        out.tdengine.SetInParent()
        client = tdengine.get("TDEngineClientConfig") or {}
        out.tdengine.tdEngineClientConfig.addr = str(client.get("addr", ""))
        out.tdengine.tdEngineClientConfig.dbname = str(client.get("dbName", ""))
    if (mysql := db.get("mysql")) is not None:
        out.mysql.SetInParent()
        client = mysql.get("mysqlClientConfig") or {}
        out.mysql.mysqlClientConfig.addr = str(client.get("addr", ""))
        out.mysql.mysqlClientConfig.database = str(client.get("database", ""))
        out.mysql.mysqlClientConfig.userName = str(client.get("userName", ""))


# --------------------------------------------------------------------------- proto -> CR


def _config_to_cr(value: pb.CustomizedValue) -> dict[str, Any]:
    return {key: to_cr_value(v) for key, v in sorted(unpack_map(value.data).items())}


def _visitor_to_cr(protocol_name: str, config: pb.CustomizedValue) -> dict[str, Any]:
    out: dict[str, Any] = {"protocolName": protocol_name}
    if config.data:
        out["configData"] = _config_to_cr(config)
    return out


def model_from_proto(model: pb.DeviceModel, protocol: str = "") -> dict[str, Any]:
    """A DeviceModel CR document from the proto (``protocol`` is not on the wire: pass it if known)."""
    spec: dict[str, Any] = {}
    if protocol:
        spec["protocol"] = protocol
    properties = []
    for p in model.spec.properties:
        prop: dict[str, Any] = {"name": p.name}
        for key, value in (
            ("description", p.description),
            ("type", p.type),
            ("accessMode", p.accessMode),
            ("minimum", p.minimum),
            ("maximum", p.maximum),
            ("unit", p.unit),
        ):
            if value:
                prop[key] = value
        properties.append(prop)
    if properties:
        spec["properties"] = properties
    return {
        "apiVersion": API_VERSION,
        "kind": "DeviceModel",
        "metadata": {"name": model.name, "namespace": model.namespace or "default"},
        "spec": spec,
    }


def device_from_proto(device: pb.Device) -> dict[str, Any]:
    """A Device CR document from the proto (as the mapper saw it, i.e. already merged)."""
    spec: dict[str, Any] = {"deviceModelRef": {"name": device.spec.deviceModelReference}}
    if device.spec.HasField("protocol"):
        spec["protocol"] = _visitor_to_cr(device.spec.protocol.protocolName, device.spec.protocol.configData)
    properties = []
    for p in device.spec.properties:
        prop: dict[str, Any] = {"name": p.name}
        if p.HasField("desired"):
            prop["desired"] = {"value": p.desired.value}
            if p.desired.metadata:
                prop["desired"]["metadata"] = dict(sorted(p.desired.metadata.items()))
        if p.HasField("visitors"):
            prop["visitors"] = _visitor_to_cr(p.visitors.protocolName, p.visitors.configData)
        prop["reportCycle"] = p.reportCycle
        prop["collectCycle"] = p.collectCycle
        prop["reportToCloud"] = p.reportToCloud
        if p.HasField("pushMethod"):
            prop["pushMethod"] = push_method_from_proto(p.pushMethod)
        properties.append(prop)
    if properties:
        spec["properties"] = properties
    if device.spec.methods:
        spec["methods"] = [
            {"name": m.name, "description": m.description, "propertyNames": list(m.propertyNames)}
            for m in device.spec.methods
        ]
    if device.HasField("status"):
        spec["stateReport"] = {
            "reportCycle": device.status.reportCycle,
            "reportToCloud": device.status.reportToCloud,
        }
    return {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "metadata": {"name": device.name, "namespace": device.namespace or "default"},
        "spec": spec,
    }


def push_method_from_proto(push: pb.PushMethod) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if push.HasField("http"):
        out["http"] = {
            "hostName": push.http.hostname,
            "port": push.http.port,
            "requestPath": push.http.requestpath,
            "timeout": push.http.timeout,
        }
    if push.HasField("mqtt"):
        out["mqtt"] = {
            "address": push.mqtt.address,
            "topic": push.mqtt.topic,
            "qos": push.mqtt.qos,
            "retained": push.mqtt.retained,
        }
    if push.HasField("otel"):
        out["otel"] = {"endpointURL": push.otel.endpointURL}
    if push.HasField("anomalyDetection"):
        out["anomalyDetection"] = {k: to_cr_value(v) for k, v in sorted(unpack_map(push.anomalyDetection.data).items())}
    if push.HasField("dbMethod"):
        db: dict[str, Any] = {}
        m = push.dbMethod
        if m.HasField("influxdb2"):
            client, data = m.influxdb2.influxdb2ClientConfig, m.influxdb2.influxdb2DataConfig
            db["influxdb2"] = {
                "influxdb2ClientConfig": {"url": client.url, "org": client.org, "bucket": client.bucket},
                "influxdb2DataConfig": {
                    "measurement": data.measurement,
                    "tag": dict(sorted(data.tag.items())),
                    "fieldKey": data.fieldKey,
                },
            }
        if m.HasField("redis"):
            r = m.redis.redisClientConfig
            db["redis"] = {
                "redisClientConfig": {
                    "addr": r.addr,
                    "db": r.db,
                    "poolsize": r.poolsize,
                    "minIdleConns": r.minIdleConns,
                }
            }
        if m.HasField("tdengine"):
            t = m.tdengine.tdEngineClientConfig
            db["TDEngine"] = {"TDEngineClientConfig": {"addr": t.addr, "dbName": t.dbname}}
        if m.HasField("mysql"):
            s = m.mysql.mysqlClientConfig
            db["mysql"] = {"mysqlClientConfig": {"addr": s.addr, "database": s.database, "userName": s.userName}}
        out["dbMethod"] = db
    return out
