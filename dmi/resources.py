"""Typed DeviceModel and Device custom resources (devices.kubeedge.io/v1beta1).

Documents are validated against the CRD schemas first (``dmi.validate``); the
parsers here assume a schema-valid document and turn it into frozen dataclasses
that the rest of the system passes around. ``configData`` and the push method
stay free-form mappings because the CRD itself leaves them open.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dmi import API_VERSION

DEFAULT_NAMESPACE = "default"
PROPERTY_TYPES = ("INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM")
ACCESS_MODES = ("ReadWrite", "ReadOnly")


@dataclass(frozen=True)
class ObjectKey:
    """Namespace and name: how every namespaced object is addressed."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Visitor:
    """``protocolName`` plus free-form ``configData`` (a protocol or a property visitor)."""

    protocol_name: str = ""
    config_data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelProperty:
    name: str
    type: str = ""
    access_mode: str = ""
    description: str = ""
    minimum: str = ""
    maximum: str = ""
    unit: str = ""
    visitors: Visitor | None = None


@dataclass(frozen=True)
class DeviceModelResource:
    key: ObjectKey
    protocol: str = ""
    protocol_config_data: Mapping[str, Any] = field(default_factory=dict)
    properties: tuple[ModelProperty, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def property(self, name: str) -> ModelProperty | None:
        return next((p for p in self.properties if p.name == name), None)


@dataclass(frozen=True)
class Desired:
    value: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceProperty:
    name: str
    desired: Desired | None = None
    visitors: Visitor | None = None
    report_cycle: int = 0
    collect_cycle: int = 0
    report_to_cloud: bool = False
    # CR shape (hostName, requestPath, dbMethod.TDEngine, ...); dmi.convert maps it to the proto.
    push_method: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DeviceMethod:
    name: str
    description: str = ""
    property_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class StateReport:
    report_cycle: int = 0
    report_to_cloud: bool = False


@dataclass(frozen=True)
class DeviceResource:
    key: ObjectKey
    model_ref: str = ""
    node_name: str = ""
    protocol: Visitor = field(default_factory=Visitor)
    properties: tuple[DeviceProperty, ...] = ()
    methods: tuple[DeviceMethod, ...] = ()
    # spec.stateReport, or the legacy status.{reportCycle, reportToCloud} when stateReport is absent.
    state_report: StateReport | None = None
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def model_key(self) -> ObjectKey:
        return ObjectKey(self.key.namespace, self.model_ref)

    def property(self, name: str) -> DeviceProperty | None:
        return next((p for p in self.properties if p.name == name), None)


def object_key(doc: Mapping[str, Any]) -> ObjectKey:
    meta = doc.get("metadata") or {}
    return ObjectKey(str(meta.get("namespace") or DEFAULT_NAMESPACE), str(meta.get("name") or ""))


def _visitor(raw: Mapping[str, Any] | None) -> Visitor | None:
    if raw is None:
        return None
    return Visitor(str(raw.get("protocolName") or ""), dict(raw.get("configData") or {}))


def parse_model(doc: Mapping[str, Any]) -> DeviceModelResource:
    """Build a DeviceModelResource from a schema-valid DeviceModel document."""
    spec = doc.get("spec") or {}
    props = tuple(
        ModelProperty(
            name=str(p.get("name") or ""),
            type=str(p.get("type") or ""),
            access_mode=str(p.get("accessMode") or ""),
            description=str(p.get("description") or ""),
            minimum=str(p.get("minimum") or ""),
            maximum=str(p.get("maximum") or ""),
            unit=str(p.get("unit") or ""),
            visitors=_visitor(p.get("visitors")),
        )
        for p in spec.get("properties") or ()
    )
    return DeviceModelResource(
        key=object_key(doc),
        protocol=str(spec.get("protocol") or ""),
        protocol_config_data=dict(spec.get("protocolConfigData") or {}),
        properties=props,
        document=doc,
    )


def parse_device(doc: Mapping[str, Any]) -> DeviceResource:
    """Build a DeviceResource from a schema-valid Device document."""
    spec = doc.get("spec") or {}
    props = []
    for p in spec.get("properties") or ():
        desired = p.get("desired")
        props.append(
            DeviceProperty(
                name=str(p.get("name") or ""),
                desired=(
                    Desired(str(desired.get("value", "")), dict(desired.get("metadata") or {}))
                    if desired is not None
                    else None
                ),
                visitors=_visitor(p.get("visitors")),
                report_cycle=int(p.get("reportCycle") or 0),
                collect_cycle=int(p.get("collectCycle") or 0),
                report_to_cloud=bool(p.get("reportToCloud") or False),
                push_method=dict(p["pushMethod"]) if p.get("pushMethod") is not None else None,
            )
        )
    methods = tuple(
        DeviceMethod(
            name=str(m.get("name") or ""),
            description=str(m.get("description") or ""),
            property_names=tuple(str(n) for n in m.get("propertyNames") or ()),
        )
        for m in spec.get("methods") or ()
    )
    state_raw = spec.get("stateReport")
    if state_raw is None:
        status = doc.get("status") or {}
        if "reportCycle" in status or "reportToCloud" in status:
            state_raw = status
    state_report = (
        StateReport(int(state_raw.get("reportCycle") or 0), bool(state_raw.get("reportToCloud") or False))
        if state_raw is not None
        else None
    )
    protocol = _visitor(spec.get("protocol")) or Visitor()
    return DeviceResource(
        key=object_key(doc),
        model_ref=str((spec.get("deviceModelRef") or {}).get("name") or ""),
        node_name=str(spec.get("nodeName") or ""),
        protocol=protocol,
        properties=tuple(props),
        methods=methods,
        state_report=state_report,
        document=doc,
    )


def is_kind(doc: Mapping[str, Any], kind: str) -> bool:
    api = str(doc.get("apiVersion") or "")
    return doc.get("kind") == kind and api == API_VERSION
