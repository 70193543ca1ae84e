"""What `mapper validate` checks beyond the CRD schemas: what the mapper itself would refuse at start.

The schema checks (``dmi.validate``) know nothing of a protocol's configData or of value types. Here each Device
that passed them is turned into the DeviceSpec a mapper would receive, and then:

- for a protocol with a shipped mapper, its configData and every property's visitor configData go through that
  driver's own config classes (the errors the mapper and the simulator would raise, word for word);
- for every protocol, a desired value must parse as its property's type and lie within the model's minimum and
  maximum, and those bounds must be numbers in order (the mapper would refuse the write);
- database and OTEL push methods must be usable as given (addresses with a port number...).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dmi.convert import device_to_proto, model_to_proto
from dmi.resources import DeviceModelResource, ObjectKey, is_kind, parse_device, parse_model
from dmi.validate import Issue, LoadedDocument, ValidationReport, subject_of
from mapper_framework.device import DeviceSpec, DeviceSpecError, PropertySpec, device_spec
from mapper_framework.driver import ConfigError, parse_config
from mapper_framework.sinks.base import config_problem
from mapper_framework.values import PropertyValueError, parse_value

# Protocol name -> the module holding its driver class (with protocol_config and visitor_config).
SHIPPED_DRIVERS = {
    "modbus": ("mappers.modbus.driver", "ModbusDriver"),
    "onvif": ("mappers.onvif.driver", "OnvifDriver"),
    "dht11": ("mappers.dht11.driver", "DhtDriver"),
}
_NUMERIC = ("int", "float", "double")


@dataclass(frozen=True)
class _Device:
    loaded: LoadedDocument
    spec: DeviceSpec
    model: LoadedDocument | None


def driver_issues(report: ValidationReport) -> list[Issue]:
    """Issues of the documents that passed the schema checks (documents with errors are not looked at again)."""
    bad = {(i.file, i.index) for i in report.errors}
    issues: list[Issue] = []
    for device in _devices(report, bad, issues):
        issues.extend(_config_issues(device))
        issues.extend(_value_issues(device))
        issues.extend(_push_issues(device))
    return issues


def _devices(report: ValidationReport, bad: set[tuple[str, int | None]], issues: list[Issue]) -> Iterator[_Device]:
    models: dict[ObjectKey, tuple[DeviceModelResource, LoadedDocument]] = {}
    devices: list[LoadedDocument] = []
    for loaded in report.documents:
        if (loaded.file, loaded.index) in bad:
            continue
        if is_kind(loaded.doc, "DeviceModel"):
            model = parse_model(loaded.doc)
            models[model.key] = (model, loaded)
        elif is_kind(loaded.doc, "Device"):
            devices.append(loaded)
    for loaded in devices:
        device = parse_device(loaded.doc)
        found = models.get(ObjectKey(device.key.namespace, device.model_ref))
        if found is None:
            continue  # the schema checks already said the model is missing
        try:
            spec = device_spec(device_to_proto(device, found[0], packing="typed"), model_to_proto(found[0]))
        except DeviceSpecError as exc:
            issues.append(_issue(loaded, "spec", str(exc)))
            continue
        yield _Device(loaded, spec, found[1])


def _issue(loaded: LoadedDocument, path: str, message: str) -> Issue:
    return Issue(loaded.file, loaded.index, path, message, subject=subject_of(loaded.doc, path))


def _property_index(loaded: LoadedDocument, name: str, section: str = "properties") -> int | None:
    spec = loaded.doc.get("spec")
    items = spec.get(section) if isinstance(spec, dict) else None
    for n, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("name") == name:
            return n
    return None


def _config_issues(device: _Device) -> list[Issue]:
    shipped = SHIPPED_DRIVERS.get(device.spec.protocol_name)
    if shipped is None:
        return []
    driver = getattr(importlib.import_module(shipped[0]), shipped[1])
    spec, loaded = device.spec, device.loaded
    out: list[Issue] = []
    try:
        parse_config(driver.protocol_config, spec.protocol_data, f"device {spec} protocol")
    except ConfigError as exc:
        out.append(
            _issue(loaded, "spec.protocol.configData", f"{exc}. Hint: see mappers/{spec.protocol_name}/README.md")
        )
    for prop in spec.properties:
        try:
            parse_config(driver.visitor_config, prop.visitor_data, f"device {spec} property {prop.name} visitors")
        except ConfigError as exc:
            n = _property_index(loaded, prop.name)
            path = f"spec.properties[{n}].visitors.configData" if n is not None else "spec.properties"
            out.append(_issue(loaded, path, f"{exc}. Hint: see mappers/{spec.protocol_name}/README.md"))
    return out


def _bound(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _push_issues(device: _Device) -> list[Issue]:
    """Database and OTEL push methods the SDK could not set up (an address without a port number...)."""
    out: list[Issue] = []
    for prop in device.spec.properties:
        if prop.push_method is None:
            continue
        problem = config_problem(prop.push_method)
        if problem is not None:
            n = _property_index(device.loaded, prop.name)
            path = f"spec.properties[{n}].pushMethod" if n is not None else "spec.properties"
            out.append(_issue(device.loaded, path, problem))
    return out


def _value_issues(device: _Device) -> list[Issue]:
    out: list[Issue] = []
    for prop in device.spec.properties:
        out.extend(_bounds_issues(device, prop))
        if prop.desired is None or prop.desired == "":
            continue
        n = _property_index(device.loaded, prop.name)
        path = f"spec.properties[{n}].desired.value" if n is not None else "spec.properties"
        try:
            value = parse_value(prop.desired, prop.type)
        except PropertyValueError as exc:
            out.append(_issue(device.loaded, path, f"{exc}. Hint: a desired value is written as the model's type"))
            continue
        if prop.type not in _NUMERIC or isinstance(value, bool):
            continue
        low, high = _bound(prop.minimum), _bound(prop.maximum)
        if low is not None and value < low:
            out.append(_issue(device.loaded, path, f"{prop.desired} is below the model's minimum {prop.minimum}"))
        if high is not None and value > high:
            out.append(_issue(device.loaded, path, f"{prop.desired} is above the model's maximum {prop.maximum}"))
    return out


def _bounds_issues(device: _Device, prop: PropertySpec) -> list[Issue]:
    """A model's minimum/maximum that are not numbers, or not in order (said on the model, once per model)."""
    model = device.model
    if model is None or prop.type not in _NUMERIC:
        return []
    n = _property_index(model, prop.name)
    out: list[Issue] = []
    for key, text in (("minimum", prop.minimum), ("maximum", prop.maximum)):
        if text and (_bound(text) is None or not math.isfinite(_bound(text) or 0.0)):
            out.append(
                _issue(model, f"spec.properties[{n}].{key}", f"{text!r} is not a number (property type {prop.type})")
            )
    low, high = _bound(prop.minimum), _bound(prop.maximum)
    if low is not None and high is not None and low > high:
        out.append(_issue(model, f"spec.properties[{n}]", f"minimum {prop.minimum} is above maximum {prop.maximum}"))
    return out


def merged(report: ValidationReport, extra: list[Any]) -> ValidationReport:
    """``report`` with ``extra`` issues added once each (a model shared by devices is said once)."""
    seen = {(i.file, i.index, i.path, i.message) for i in report.issues}
    issues = list(report.issues)
    for issue in extra:
        key = (issue.file, issue.index, issue.path, issue.message)
        if key not in seen:
            seen.add(key)
            issues.append(issue)
    rank = {(d.file, d.index): n for n, d in enumerate(report.documents)}
    issues.sort(key=lambda i: rank.get((i.file, i.index if i.index is not None else -1), len(rank)))
    return ValidationReport(report.documents, issues)
