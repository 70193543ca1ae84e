"""Validation of devices.kubeedge.io CR documents (DeviceModel, Device, DeviceStatus).

Three layers, all reported as :class:`Issue` objects that name the file, the
document index inside the file and the field path:

* structure: the document is checked against the v1beta1 ``openAPIV3Schema`` of
  our own CRDs (``crds/``) by a small validator that covers the subset those
  schemas use, with the strictness of ``kubectl apply --validate=strict``
  (unknown fields are errors, ``5.0`` is not an integer);
* meaning: checks a schema cannot express (non-negative cycles, port and QoS
  ranges, unique property and method names) and checks across documents
  (duplicate objects, a Device's model and properties must exist);
* edgecore compatibility: warnings for ``configData`` values that real edgecore
  would drop the device for, or could not carry exactly. Warnings never make a
  report fail.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeGuard

import yaml
import yaml.constructor

from dmi import API_VERSION, GROUP, VERSION

KINDS = ("DeviceModel", "Device", "DeviceStatus")
CR_FILE_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_NAMESPACE = "default"

# edgecore packs every configData number as a float32: integers are exact only up to 2^24.
FLOAT32_EXACT_LIMIT = 2**24

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# The rule edgecore applies to twin names; a property failing it is never stored.
_TWIN_NAME = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,128}$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# ObjectMeta fields a client may send; anything else under metadata is a typo.
_METADATA_FIELDS = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)
_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}


@dataclass(frozen=True)
class Issue:
    """One problem found in a CR file.

    ``index`` is the 0-based document index inside the file, or ``None`` when the
    problem concerns the whole file (unreadable, invalid YAML). ``path`` is the
    field path inside the document (``""`` for the document itself).
    """

    file: str
    index: int | None
    path: str
    message: str
    severity: Literal["error", "warning"] = "error"
    # Whose problem it is, for people: "Device default/boiler-1, property pressure" ("" when unknown).
    subject: str = ""

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        if self.index is None:
            return f"{prefix}{self.file}: {self.message}"
        where = f"{self.file}[{self.index}]"
        if self.path:
            where = f"{where} {self.path}"
        return f"{prefix}{where}: {self.message}"

    def described(self) -> str:
        """As ``str()``, followed by whose problem it is when known: "(Device default/boiler-1, property p)"."""
        return f"{self} ({self.subject})" if self.subject and self.index is not None else str(self)


_LISTED = re.compile(r"^spec\.(properties|methods)\[(\d+)\]")


def subject_of(doc: Any, path: str) -> str:
    """ "Device default/boiler-1, property pressure": the object a document is, and the property or method that
    ``path`` lies in, by name (a path alone says only "spec.properties[3]")."""
    if not isinstance(doc, dict):
        return ""
    meta, spec = _dict(doc.get("metadata")), _dict(doc.get("spec"))
    kind, name, namespace = doc.get("kind"), meta.get("name"), meta.get("namespace")
    if not isinstance(kind, str) or not kind or not isinstance(name, str) or not name:
        return ""
    out = f"{kind} {namespace if isinstance(namespace, str) and namespace else 'default'}/{name}"
    match = _LISTED.match(path)
    items = spec.get(match.group(1)) if match else None
    if match and isinstance(items, list) and int(match.group(2)) < len(items):
        item = items[int(match.group(2))]
        item_name = item.get("name") if isinstance(item, dict) else None
        if isinstance(item_name, str) and item_name:
            out += f", {'property' if match.group(1) == 'properties' else 'method'} {item_name}"
    return out


@dataclass(frozen=True)
class LoadedDocument:
    """A document that parsed as a mapping, with where it came from."""

    file: str
    index: int
    doc: dict[str, Any]


@dataclass
class ValidationReport:
    """Every document read (valid or not) and every issue found."""

    documents: list[LoadedDocument] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def invalid_files(self) -> set[str]:
        """Files with at least one error."""
        return {i.file for i in self.issues if i.severity == "error"}


# --------------------------------------------------------------------------- files


def iter_cr_files(paths: Iterable[Path]) -> list[Path]:
    """The CR files named by ``paths``.

    A directory is walked recursively for ``*.yaml``, ``*.yml`` and ``*.json``,
    in name order, skipping hidden entries (a ConfigMap volume keeps its real
    files under ``..data``; the visible names are links to them). A file given
    directly is taken whatever its name. Paths that do not exist are left out.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found = _walk_dir(path, set())
        elif path.exists():
            found = [path]
        else:
            continue
        for item in found:
            if item not in seen:
                seen.add(item)
                out.append(item)
    return out


def _walk_dir(folder: Path, visited: set[Path]) -> list[Path]:
    try:
        real = folder.resolve()
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    # Directory links are followed, but a link back up the tree must not loop forever.
    if real in visited:
        return []
    visited.add(real)
    out: list[Path] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = folder / entry.name
        try:
            if entry.is_dir():
                out.extend(_walk_dir(path, visited))
            elif entry.is_file() and path.suffix.lower() in CR_FILE_SUFFIXES:
                out.append(path)
        except OSError:
            continue
    return out


class _Loader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """Safe YAML loader that reads documents the way the Kubernetes API does."""


# Kubernetes turns YAML into JSON before decoding, so an unquoted date stays a string; so does a lone "=",
# which PyYAML would otherwise tag as a value key it cannot construct.
_PLAIN_STRING_TAGS = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")
_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] not in _PLAIN_STRING_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _key_text(key: Any) -> str:
    # Non-string keys become strings, as they do on the way to JSON.
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[str, Any]:
    # PyYAML silently keeps the last of two equal keys; the API server refuses the object.
    own: set[str] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, "keys must be scalars", key_node.start_mark
            )
        key = _key_text(loader.construct_object(key_node))
        if key in own:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f'duplicate key "{key}"', key_node.start_mark
            )
        own.add(key)
    loader.flatten_mapping(node)
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        out[_key_text(loader.construct_object(key_node))] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        text = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem or 'cannot parse'}"
        if exc.context and exc.context_mark is not None:
            text += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        return text
    return f"invalid YAML: {exc}"


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f'duplicate key "{key}"')
        out[key] = value
    return out


def _read_documents(path: Path) -> tuple[list[tuple[int, Any]], str | None]:
    """The non-empty documents of a file with their indexes, or a file-level problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], f"cannot read: {exc}"
    if path.suffix.lower() == ".json":
        try:
            return [(0, json.loads(text, object_pairs_hook=_no_duplicate_keys))], None
        except json.JSONDecodeError as exc:
            return [], f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        except ValueError as exc:
            return [], f"invalid JSON: {exc}"
    try:
        # All documents are read first: a syntax error anywhere discards the whole file.
        docs = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        return [], _yaml_problem(exc)
    except RecursionError:
        return [], "invalid YAML: nested too deeply"
    return [(i, d) for i, d in enumerate(docs) if d is not None], None


def validate_paths(paths: Iterable[Path]) -> ValidationReport:
    """Read every CR file under ``paths`` and validate all documents together."""
    paths = list(paths)
    report = ValidationReport()
    for path in paths:
        if not path.exists():
            report.issues.append(Issue(str(path), None, "", "does not exist"))
    files = [str(p) for p in iter_cr_files(paths)]
    for name in files:
        path = Path(name)
        docs, problem = _read_documents(path)
        if problem is not None:
            report.issues.append(Issue(name, None, "", problem))
            continue
        for index, doc in docs:
            if isinstance(doc, dict):
                report.documents.append(LoadedDocument(name, index, doc))
            else:
                report.issues.append(
                    Issue(name, index, "", f"expected a Kubernetes object (a mapping), got {_show(doc)}")
                )
    report.issues.extend(validate_documents(report.documents))
    # Report in reading order: file by file, document by document. The sort is stable, so the issues of one
    # document keep the order they were found in.
    rank = {name: n for n, name in enumerate(dict.fromkeys([*(str(p) for p in paths), *files]))}
    report.issues.sort(key=lambda i: (rank.get(i.file, len(rank)), -1 if i.index is None else i.index))
    return report


# --------------------------------------------------------------------------- schemas


def _crd_text(filename: str) -> str:
    try:
        return resources.files("crds").joinpath(filename).read_text(encoding="utf-8")
    except (ModuleNotFoundError, NotADirectoryError, FileNotFoundError):
        # An editable install made before crds/ became a package sees it as a namespace package, which
        # importlib.resources cannot read; the folder beside dmi/ is the same data.
        return (Path(__file__).resolve().parent.parent / "crds" / filename).read_text(encoding="utf-8")


@functools.cache
def load_crd_schema(kind: str) -> dict[str, Any]:
    """The v1beta1 ``openAPIV3Schema`` of ``kind`` from the CRDs shipped in ``crds/``."""
    if kind not in KINDS:
        raise KeyError(f"no CRD for kind {kind!r}; known kinds: {', '.join(KINDS)}")
    crd = yaml.safe_load(_crd_text(f"devices_{VERSION}_{kind.lower()}.yaml"))
    for version in crd["spec"]["versions"]:
        if version["name"] == VERSION:
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"the {kind} CRD has no {VERSION} version")


def _show(value: Any) -> str:
    """A value as it would read in JSON, shortened; containers by their kind only."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    return type(value).__name__


def _is_int(value: Any) -> TypeGuard[int]:
    # bool is a subclass of int in Python, not in JSON; and like the API server, 5.0 is not an integer.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_type(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return _is_int(value)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _join(path: str, key: str) -> str:
    """``path.key``, or ``path["odd key"]`` when the key would make the path ambiguous."""
    if not _PLAIN_KEY.match(key):
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{path}.{key}" if path else key


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    options = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(options), n=1, cutoff=0.75)
    return f' (did you mean "{options[match[0]]}"?)' if match else ""


Report = Callable[[str, str], None]


def _check_schema(value: Any, schema: Mapping[str, Any], path: str, error: Report) -> None:
    """Walk ``value`` against the openAPIV3Schema subset our CRDs use."""
    expected = schema.get("type")
    if isinstance(expected, str) and not _is_type(value, expected):
        error(path, f"expected {expected}, got {_show(value)}")
        return
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        error(path, f"expected one of {', '.join(str(e) for e in enum)}, got {_show(value)}")
    if _is_int(value) and expected == "integer":
        # Without a format an integer is still an int64 once decoded by the API server.
        fmt = str(schema.get("format") or "int64")
        low, high = _INT_RANGES.get(fmt, _INT_RANGES["int64"])
        if not low <= value <= high:
            error(path, f"{value} is out of the {fmt} range")
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for n, item in enumerate(value):
                _check_schema(item, items, f"{path}[{n}]", error)
    elif isinstance(value, dict):
        _check_object(value, schema, path, error)


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], path: str, error: Report) -> None:
    props: Mapping[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    for name in schema.get("required") or ():
        if value.get(name) is None:
            error(path, f'required field "{name}" is missing')
    for key, item in value.items():
        if item is None and (key in props or isinstance(extra, Mapping)):
            # The API server drops null fields of a non-nullable schema before validating.
            continue
        child = _join(path, key)
        if key in props:
            _check_schema(item, props[key], child, error)
        elif isinstance(extra, Mapping):
            _check_schema(item, extra, child, error)
        elif not preserve:
            error(path, f'unknown field "{key}"{_did_you_mean(key, props)}')


# --------------------------------------------------------------------------- one document


def _namespace(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    return ns if isinstance(ns, str) and ns else DEFAULT_NAMESPACE


def _name(doc: Mapping[str, Any]) -> str | None:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list_of_dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(value, list):
        return []
    return [(n, item) for n, item in enumerate(value) if isinstance(item, dict)]


class _DocumentCheck:
    """Collects the issues of one document."""

    def __init__(self, loaded: LoadedDocument) -> None:
        self.loaded = loaded
        self.issues: list[Issue] = []

    def error(self, path: str, message: str) -> None:
        subject = subject_of(self.loaded.doc, path)
        self.issues.append(Issue(self.loaded.file, self.loaded.index, path, message, subject=subject))

    def warn(self, path: str, message: str) -> None:
        subject = subject_of(self.loaded.doc, path)
        self.issues.append(Issue(self.loaded.file, self.loaded.index, path, message, "warning", subject))

    def kind(self) -> str | None:
        """Check apiVersion and kind; the kind to validate as, or None to stop here."""
        doc = self.loaded.doc
        api, kind = doc.get("apiVersion"), doc.get("kind")
        for key, value in (("apiVersion", api), ("kind", kind)):
            if value is None or value == "":
                self.error("", f'required field "{key}" is missing')
            elif not isinstance(value, str):
                self.error(key, f"expected string, got {_show(value)}")
        if not isinstance(api, str) or not isinstance(kind, str) or not api or not kind:
            return None
        group, _, version = api.rpartition("/")
        if group != GROUP:
            self.warn("", f"skipped: not a {GROUP} object")
            return None
        if kind not in KINDS:
            self.error("kind", f'unknown kind "{kind}" in {GROUP}{_did_you_mean(kind, KINDS)}')
            return None
        if version != VERSION:
            self.error("apiVersion", f"{api} is not supported, use {API_VERSION}")
            return None
        return kind

    def metadata(self) -> None:
        meta = self.loaded.doc.get("metadata")
        if meta is None:
            self.error("", 'required field "metadata" is missing')
            return
        if not isinstance(meta, dict):
            self.error("metadata", f"expected object, got {_show(meta)}")
            return
        name = meta.get("name")
        if name is None or name == "":
            self.error("metadata", 'required field "name" is missing')
        elif not isinstance(name, str):
            self.error("metadata.name", f"expected string, got {_show(name)}")
        elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            self.error(
                "metadata.name",
                f"{_show(name)} is not a valid name: use at most 253 lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit",
            )
        namespace = meta.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            self.error("metadata.namespace", f"expected string, got {_show(namespace)}")
        elif namespace and (len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
            self.error(
                "metadata.namespace",
                f"{_show(namespace)} is not a valid namespace: use at most 63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit",
            )
        for key, value in meta.items():
            if key in ("labels", "annotations"):
                if value is not None:
                    _check_schema(value, _STRING_MAP, f"metadata.{key}", self.error)
            elif key not in _METADATA_FIELDS:
                self.error("metadata", f'unknown field "{key}"{_did_you_mean(key, _METADATA_FIELDS)}')

    def schema(self, kind: str) -> None:
        schema = load_crd_schema(kind)
        props: Mapping[str, Any] = schema.get("properties") or {}
        for key, value in self.loaded.doc.items():
            if key in ("apiVersion", "kind", "metadata"):
                continue  # checked on their own, with better messages
            if key not in props:
                self.error("", f'unknown field "{key}"{_did_you_mean(key, props)}')
            elif value is not None:
                _check_schema(value, props[key], key, self.error)

    def required_text(self, obj: Mapping[str, Any], key: str, path: str) -> None:
        value = obj.get(key)
        if value is None:
            self.error(path, f'required field "{key}" is missing')
        elif value == "":
            self.error(_join(path, key), "must not be empty")

    def cycle(self, obj: Mapping[str, Any], key: str, path: str) -> None:
        value = obj.get(key)
        if _is_int(value) and value < 0:
            self.error(_join(path, key), f"must not be negative, got {value}")

    def unique_names(self, items: list[tuple[int, dict[str, Any]]], path: str, what: str) -> None:
        first: dict[str, int] = {}
        for n, item in items:
            name = item.get("name")
            if not isinstance(name, str) or not name:
                continue
            if name in first:
                self.error(f"{path}[{n}].name", f'duplicate {what} "{name}" (first at {path}[{first[name]}])')
            else:
                first[name] = n

    def config_data(self, value: Any, path: str, subject: str) -> None:
        """Warn about configData entries real edgecore would refuse or change."""
        if not isinstance(value, dict):
            return
        for key, item in value.items():
            child = _join(path, key)
            if key.lower() == "data":
                self.warn(child, f'a key named "{key}" makes edgecore leave {subject} out')
            if item is None:
                self.warn(child, f"null value: edgecore would leave {subject} out")
            elif isinstance(item, dict | list):
                nested = "object" if isinstance(item, dict) else "list"
                self.warn(
                    child, f"nested {nested}: edgecore would leave {subject} out; our agent sends it as a JSON string"
                )
            elif _is_int(item) and abs(item) > FLOAT32_EXACT_LIMIT:
                arrived = struct.unpack("<f", struct.pack("<f", float(item)))[0]
                if arrived == item:
                    self.warn(
                        child,
                        f"edgecore sends numbers as float32, exact for integers only up to 2^24: {item} happens "
                        "to fit, but a quoted string is safer",
                    )
                else:
                    self.warn(child, f"edgecore sends numbers as float32: {item} would arrive as {int(arrived)}")

    def property_names(self, props: list[tuple[int, dict[str, Any]]], reported: bool) -> None:
        for n, prop in props:
            path = f"spec.properties[{n}]"
            self.required_text(prop, "name", path)
            name = prop.get("name")
            # Said once, on the Device: that is where a property gets reported.
            if reported and isinstance(name, str) and name and not _TWIN_NAME.match(name):
                self.warn(
                    f"{path}.name",
                    f"edgecore drops reports of property {_show(name)}: a name may only use letters, digits "
                    "and -_.,:/@# (at most 128)",
                )

    def device_model(self) -> None:
        spec = _dict(self.loaded.doc.get("spec"))
        props = _list_of_dicts(spec.get("properties"))
        subject = "every device of this model"
        self.property_names(props, reported=False)
        self.unique_names(props, "spec.properties", "property")
        self.config_data(spec.get("protocolConfigData"), "spec.protocolConfigData", subject)
        for n, prop in props:
            visitors = _dict(prop.get("visitors"))
            self.config_data(visitors.get("configData"), f"spec.properties[{n}].visitors.configData", subject)

    def db_method(self, db: dict[str, Any], path: str) -> None:
        if "TDEngine" in db:
            # No TDengine server can run in our tests, so no sink ships: refuse rather than drop values silently.
            self.error(
                f"{path}.TDEngine",
                "TDengine is not supported by this mapper (no TDengine server can be tested with it);"
                " use influxdb2, redis or mysql instead",
            )
        for name, (section, keys) in _DB_REQUIRED.items():
            if name in db:
                client = _dict(_dict(db[name]).get(section))
                for key in keys:
                    if not client.get(key):
                        self.error(f"{path}.{name}.{section}", f'required field "{key}" is missing')

    def device(self) -> None:
        doc = self.loaded.doc
        if doc.get("spec") is None:
            self.error("", 'required field "spec" is missing')
            return
        spec = _dict(doc.get("spec"))
        subject = "this device"
        ref = spec.get("deviceModelRef")
        if ref is None:
            self.error("spec", 'required field "deviceModelRef" is missing')
        elif isinstance(ref, dict) and not ref.get("name"):
            self.error("spec.deviceModelRef", 'required field "name" is missing')
        protocol = spec.get("protocol")
        if protocol is None:
            self.error("spec", 'required field "protocol" is missing')
        elif isinstance(protocol, dict):
            self.required_text(protocol, "protocolName", "spec.protocol")
            self.config_data(protocol.get("configData"), "spec.protocol.configData", subject)
        props = _list_of_dicts(spec.get("properties"))
        self.property_names(props, reported=True)
        self.unique_names(props, "spec.properties", "property")
        for n, prop in props:
            path = f"spec.properties[{n}]"
            self.cycle(prop, "collectCycle", path)
            self.cycle(prop, "reportCycle", path)
            visitors = _dict(prop.get("visitors"))
            self.config_data(visitors.get("configData"), f"{path}.visitors.configData", subject)
            push = _dict(prop.get("pushMethod"))
            self.config_data(push.get("anomalyDetection"), f"{path}.pushMethod.anomalyDetection", subject)
            port = _dict(push.get("http")).get("port")
            if _is_int(port) and not 1 <= port <= 65535:
                self.error(f"{path}.pushMethod.http.port", f"must be between 1 and 65535, got {port}")
            qos = _dict(push.get("mqtt")).get("qos")
            if _is_int(qos) and qos not in (0, 1, 2):
                self.error(f"{path}.pushMethod.mqtt.qos", f"must be 0, 1 or 2, got {qos}")
            self.db_method(_dict(push.get("dbMethod")), f"{path}.pushMethod.dbMethod")
            otel = push.get("otel")
            if isinstance(otel, dict) and not otel.get("endpointURL"):
                self.error(f"{path}.pushMethod.otel", 'required field "endpointURL" is missing')
        methods = _list_of_dicts(spec.get("methods"))
        for n, method in methods:
            self.required_text(method, "name", f"spec.methods[{n}]")
        self.unique_names(methods, "spec.methods", "method")
        self.cycle(_dict(spec.get("stateReport")), "reportCycle", "spec.stateReport")
        self.cycle(_dict(doc.get("status")), "reportCycle", "status")


_DB_REQUIRED = {
    "influxdb2": ("influxdb2ClientConfig", ("url", "bucket")),
    "redis": ("redisClientConfig", ("addr",)),
    "mysql": ("mysqlClientConfig", ("addr", "database", "userName")),
}


def _check_document(loaded: LoadedDocument) -> tuple[list[Issue], str | None]:
    """Issues of one document on its own, and its kind when it is one of ours."""
    check = _DocumentCheck(loaded)
    kind = check.kind()
    if kind is None:
        return check.issues, None
    check.metadata()
    check.schema(kind)
    if kind == "DeviceModel":
        check.device_model()
    elif kind == "Device":
        check.device()
    return check.issues, kind


# --------------------------------------------------------------------------- across documents


def validate_documents(docs: list[LoadedDocument]) -> list[Issue]:
    """Schema and meaning checks of each document, then the checks across all of them.

    A Device is checked against the DeviceModels among ``docs`` only, so a device
    file must be validated together with the file defining its model.
    """
    issues: list[Issue] = []
    kinds: list[tuple[LoadedDocument, str]] = []
    for loaded in docs:
        found, kind = _check_document(loaded)
        issues.extend(found)
        if kind is not None:
            kinds.append((loaded, kind))

    first: dict[tuple[str, str, str], LoadedDocument] = {}
    for loaded, kind in kinds:
        name = _name(loaded.doc)
        if name is None:
            continue
        key = (kind, _namespace(loaded.doc), name)
        if key in first:
            seen = first[key]
            issues.append(
                Issue(
                    loaded.file,
                    loaded.index,
                    "metadata.name",
                    f'duplicate {kind} "{key[1]}/{name}": first defined in {seen.file}[{seen.index}]',
                )
            )
        else:
            first[key] = loaded

    models = {(ns, name): loaded.doc for (kind, ns, name), loaded in first.items() if kind == "DeviceModel"}
    for loaded, kind in kinds:
        if kind == "Device":
            issues.extend(_check_device_links(loaded, models))

    # Group the cross-document issues with the documents they concern, in the order the documents came.
    rank = {(d.file, d.index): n for n, d in enumerate(docs)}
    return sorted(issues, key=lambda i: rank.get((i.file, i.index if i.index is not None else -1), len(rank)))


def _check_device_links(loaded: LoadedDocument, models: Mapping[tuple[str, str], dict[str, Any]]) -> list[Issue]:
    check = _DocumentCheck(loaded)
    spec = _dict(loaded.doc.get("spec"))
    props = _list_of_dicts(spec.get("properties"))
    device_props = {p["name"] for _, p in props if isinstance(p.get("name"), str)}
    for n, method in _list_of_dicts(spec.get("methods")):
        names = method.get("propertyNames")
        for m, prop_name in enumerate(names if isinstance(names, list) else []):
            if isinstance(prop_name, str) and prop_name not in device_props:
                check.error(
                    f"spec.methods[{n}].propertyNames[{m}]", f'property "{prop_name}" is not defined in this Device'
                )

    model_name = _dict(spec.get("deviceModelRef")).get("name")
    if not isinstance(model_name, str) or not model_name:
        return check.issues
    namespace = _namespace(loaded.doc)
    model = models.get((namespace, model_name))
    if model is None:
        check.error("spec.deviceModelRef.name", f'DeviceModel "{model_name}" not found in namespace "{namespace}"')
        return check.issues

    model_spec = _dict(model.get("spec"))
    model_props = {
        p["name"]: p for _, p in _list_of_dicts(model_spec.get("properties")) if isinstance(p.get("name"), str)
    }
    for n, prop in props:
        name = prop.get("name")
        if not isinstance(name, str) or not name:
            continue
        model_prop = model_props.get(name)
        if model_prop is None:
            check.error(f"spec.properties[{n}].name", f'property "{name}" is not defined in DeviceModel "{model_name}"')
        elif prop.get("desired") is not None and model_prop.get("accessMode") == "ReadOnly":
            check.warn(
                f"spec.properties[{n}].desired",
                f'property "{name}" is ReadOnly in DeviceModel "{model_name}": the desired value is never written',
            )

    protocol = _dict(spec.get("protocol")).get("protocolName")
    model_protocol = model_spec.get("protocol")
    both_named = isinstance(protocol, str) and protocol and isinstance(model_protocol, str) and model_protocol
    if both_named and protocol != model_protocol:
        check.warn(
            "spec.protocol.protocolName",
            f'"{protocol}" differs from protocol "{model_protocol}" of DeviceModel "{model_name}": '
            "model updates go to the mapper of the model's protocol",
        )
    return check.issues
