"""A Kubernetes API simulator: a real HTTP server on loopback that Kubernetes client libraries talk to unmodified.

No kube-apiserver can run in the test environment, so tests of the cluster side (lightkube clients, list+watch
sources, status writers, ``mapper crds install``) run against this simulator instead. It serves the REST API of
custom resources the way the real API server does for CRDs:

* paths ``/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/status]]``;
* one global resourceVersion counter shared by every resource (etcd's revision), bumped on every real write and
  left alone by no-op writes, as the real server does;
* get, list (label selectors, field selectors on ``metadata.name``/``metadata.namespace`` only, limit/continue),
  create, update (conditional: custom resources refuse an update without resourceVersion), merge patch, JSON
  patch, server-side apply, delete (finalizers honoured), deletecollection;
* watch as a chunked stream of JSON lines, replayed from a bounded history after a given resourceVersion, with
  the in-stream ``ERROR`` event carrying a 410 ``Expired`` Status once that version has been compacted away;
* errors as ``Status`` objects with the real reasons and codes.

Tests drive the outside world through the Python API: outages (``stop``/``start`` on the same port, objects
kept), broken watch streams, compaction, injected failures, and objects changed "by a cluster user" without HTTP
but with the same events and resourceVersions. Counters and a write log let tests assert how clients behaved.

What it does not simulate: authorization (one bearer token, or none), admission, OpenAPI schema validation and
defaulting, server-side apply field ownership conflicts (``force`` is accepted and ignored), garbage collection
of owned objects, namespaces as objects (any namespace exists), and CRD status conditions.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import random
import ssl
import string
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

__all__ = [
    "CRD",
    "DEVICE",
    "DEVICE_MODEL",
    "DEVICE_STATUS",
    "KubeApiSimulator",
    "ResourceType",
    "SimulatorError",
    "WriteRecord",
]

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"

# The reason the real API server puts in a Status for each code (k8s.io/apimachinery/pkg/api/errors).
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class ResourceType:
    """One served resource: group/version/plural, its kind and scope, and what its CRD declares."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    # CRD ``selectableFields`` (JSON paths without the leading dot, e.g. "spec.nodeName"): field selectors on
    # custom resources work only for these besides metadata.name and metadata.namespace.
    selectable_fields: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def resource(self) -> str:
        """The ``plural.group`` name kubectl uses (e.g. ``devices.devices.kubeedge.io``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEVICE = ResourceType("devices.kubeedge.io", "v1beta1", "devices", "Device")
DEVICE_MODEL = ResourceType("devices.kubeedge.io", "v1beta1", "devicemodels", "DeviceModel")
DEVICE_STATUS = ResourceType("devices.kubeedge.io", "v1beta1", "devicestatuses", "DeviceStatus")
CRD = ResourceType(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False
)
DEFAULT_TYPES: tuple[ResourceType, ...] = (DEVICE, DEVICE_MODEL, DEVICE_STATUS, CRD)


class SimulatorError(Exception):
    """A request the simulated API server refuses; ``status`` is the Kubernetes Status object it answers."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason or REASONS.get(code, "Unknown")
        self.status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": self.reason,
            "details": details or {},
            "code": code,
        }


@dataclass
class WriteRecord:
    """One write request as received over HTTP (also the refused ones: see ``code``)."""

    verb: str  # create, update, patch, delete, deletecollection
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any  # parsed JSON/YAML, or the raw text when it did not parse
    code: int = 0  # HTTP status answered
    received: float = field(default_factory=time.time)  # wall clock, s: when the request's body was read


@dataclass
class _Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rtype: ResourceType
    obj: dict[str, Any]
    prev: dict[str, Any] | None  # the object before the write, to compute selector transitions


SERVER_OWNED = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
)

_BREAK = "break"  # abort the connection mid-stream
_END = "end"  # end the stream cleanly (like timeoutSeconds)
_BOOKMARK = "bookmark"


@dataclass(eq=False)  # identity: watchers live in a set
class _Watcher:
    rtype: ResourceType
    namespace: str | None
    labels: list[tuple[str, str, tuple[str, ...]]]
    fields: list[tuple[str, str, str]]
    queue: asyncio.Queue[_Event | str] = field(default_factory=asyncio.Queue)

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and _meta(obj).get("namespace") != self.namespace:
            return False
        return _match_labels(obj, self.labels) and _match_fields(obj, self.fields)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _split_requirements(selector: str) -> list[str]:
    """Split a selector on the commas that are not inside ``in (a,b)`` value sets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(selector: str | None) -> list[tuple[str, str, tuple[str, ...]]]:
    """Parse a label selector into (key, operator, values); operators: =, !=, in, notin, exists, !exists."""
    reqs: list[tuple[str, str, tuple[str, ...]]] = []
    for part in _split_requirements(selector or ""):
        words = part.split(None, 1)
        if len(words) == 2 and words[1].split(None, 1)[0] in ("in", "notin"):
            op, rest = words[1].split(None, 1)
            rest = rest.strip()
            if not (rest.startswith("(") and rest.endswith(")")):
                raise SimulatorError(400, f"unable to parse requirement: {part!r}")
            values = tuple(v.strip() for v in rest[1:-1].split(",") if v.strip())
            reqs.append((words[0], op, values))
        elif "!=" in part:
            key, value = part.split("!=", 1)
            reqs.append((key.strip(), "!=", (value.strip(),)))
        elif "=" in part:
            key, value = part.replace("==", "=", 1).split("=", 1)
            reqs.append((key.strip(), "=", (value.strip(),)))
        elif part.startswith("!"):
            reqs.append((part[1:].strip(), "!exists", ()))
        elif " " not in part:
            reqs.append((part, "exists", ()))
        else:
            raise SimulatorError(400, f"unable to parse requirement: {part!r}")
    return reqs


def _match_labels(obj: dict[str, Any], reqs: list[tuple[str, str, tuple[str, ...]]]) -> bool:
    labels = _meta(obj).get("labels") or {}
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        ok = {
            "=": present and value in values,
            "!=": not present or value not in values,
            "in": present and value in values,
            "notin": not present or value not in values,
            "exists": present,
            "!exists": not present,
        }[op]
        if not ok:
            return False
    return True


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    # Selectable fields compare as their string form ("true", "3"), as the API server does.
    return json.dumps(node) if isinstance(node, bool | int | float) else str(node)


def parse_field_selector(selector: str | None, rtype: ResourceType) -> list[tuple[str, str, str]]:
    """Parse a field selector into (field, operator, value); refuse fields a CRD cannot select on."""
    reqs: list[tuple[str, str, str]] = []
    allowed = {"metadata.name", "metadata.namespace", *rtype.selectable_fields}
    for part in _split_requirements(selector or ""):
        if "!=" in part:
            key, value = part.split("!=", 1)
            op = "!="
        elif "=" in part:
            key, value = part.replace("==", "=", 1).split("=", 1)
            op = "="
        else:
            raise SimulatorError(400, f"invalid selector: {selector!r}; can't understand {part!r}")
        key = key.strip()
        if key not in allowed:
            # The real message names the GVR and the selector; the reason is BadRequest either way.
            raise SimulatorError(
                400,
                f'Unable to find "{rtype.api_version}, Resource={rtype.plural}" that match label selector "", '
                f'field selector "{selector}": field label not supported: {key}',
            )
        reqs.append((key, op, value.strip()))
    return reqs


def _match_fields(obj: dict[str, Any], reqs: list[tuple[str, str, str]]) -> bool:
    for key, op, value in reqs:
        actual = _field_value(obj, key)
        if (actual == value) != (op == "="):
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes, objects merge recursively, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise SimulatorError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise SimulatorError(422, f"the server rejected our request: path {path!r} does not exist")
    return node


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test) applied to a copy of ``doc``."""
    if not isinstance(ops, list):
        raise SimulatorError(400, "json patch must be a list of operations")
    doc = copy.deepcopy(doc)

    def remove(path: str) -> Any:
        tokens = _pointer(path)
        if not tokens:
            raise SimulatorError(422, "cannot remove the document root")
        parent = _resolve(doc, tokens[:-1], path)
        last = tokens[-1]
        if isinstance(parent, dict) and last in parent:
            return parent.pop(last)
        if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
            return parent.pop(int(last))
        raise SimulatorError(422, f"the server rejected our request: path {path!r} does not exist")

    def add(path: str, value: Any, replace: bool = False) -> None:
        nonlocal doc
        tokens = _pointer(path)
        if not tokens:
            doc = copy.deepcopy(value)
            return
        parent = _resolve(doc, tokens[:-1], path)
        last = tokens[-1]
        if isinstance(parent, dict):
            if replace and last not in parent:
                raise SimulatorError(422, f"the server rejected our request: path {path!r} does not exist")
            parent[last] = copy.deepcopy(value)
        elif isinstance(parent, list):
            if last == "-" and not replace:
                parent.append(copy.deepcopy(value))
            elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
                if replace:
                    parent[int(last)] = copy.deepcopy(value)
                else:
                    parent.insert(int(last), copy.deepcopy(value))
            else:
                raise SimulatorError(422, f"the server rejected our request: index out of range in {path!r}")
        else:
            raise SimulatorError(422, f"the server rejected our request: path {path!r} does not exist")

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise SimulatorError(400, f"invalid json patch operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            add(path, op.get("value"))
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            add(path, op.get("value"), replace=True)
        elif kind == "move":
            add(path, remove(op["from"]))
        elif kind == "copy":
            add(path, _resolve(doc, _pointer(op["from"]), op["from"]))
        elif kind == "test":
            if _resolve(doc, _pointer(path), path) != op.get("value"):
                raise SimulatorError(422, f"the server rejected our request: test failed at {path!r}")
        else:
            raise SimulatorError(400, f"unknown json patch operation {kind!r}")
    return doc


def _prune_unapplied(obj: Any, previous: Any, current: Any) -> None:
    """Remove from ``obj`` what a manager applied before and no longer applies (server-side apply ownership).

    A one-manager approximation: the real server tracks ownership per field across managers.
    """
    if not (isinstance(obj, dict) and isinstance(previous, dict)):
        return
    current = current if isinstance(current, dict) else {}
    for key, value in previous.items():
        if key not in current:
            obj.pop(key, None)
        elif isinstance(value, dict):
            _prune_unapplied(obj.get(key), value, current[key])


def _without(obj: dict[str, Any], *top: str) -> dict[str, Any]:
    """``obj`` without some top-level keys and without the metadata the server rewrites on each write."""
    rest = {k: v for k, v in obj.items() if k not in top}
    if "metadata" in rest:
        rest["metadata"] = {
            k: v for k, v in rest["metadata"].items() if k not in ("resourceVersion", "managedFields", "generation")
        }
    return rest


class KubeApiSimulator:
    """A simulated Kubernetes API server for custom resources, on 127.0.0.1.

    Args:
        types: the resources served (default: Device, DeviceModel, DeviceStatus and CustomResourceDefinition).
        port: the port to listen on; 0 picks a free one at the first ``start`` and keeps it for later starts.
        token: the bearer token clients must present (None: no authentication).
        history_size: how many write events the watch history keeps; resuming from older gets 410 Expired.
        bookmark_interval: seconds between BOOKMARK events on watches that allow them (real servers: ~1 min).
        register_crds: serve the resources a created CustomResourceDefinition declares, if not already served.
        ssl_context: serve HTTPS with it (as a real API server does, e.g. for clients with in-cluster config).

    Everything runs on the event loop of ``start``: call the Python API from that loop's thread. The direct
    object methods (``create``, ``merge_patch``...) work while the server is stopped too, so a test can change
    the cluster during an outage and check that clients catch up.
    """

    def __init__(
        self,
        types: Iterable[ResourceType] = DEFAULT_TYPES,
        *,
        port: int = 0,
        token: str | None = "simulator-token",
        history_size: int = 1000,
        bookmark_interval: float = 60.0,
        register_crds: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rtype in types:
            self.register(rtype)
        self.port = port
        self.token = token
        self.history_size = history_size
        self.bookmark_interval = bookmark_interval
        self.register_crds = register_crds
        self.ssl_context = ssl_context
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name) -> doc
        self._applied: dict[tuple[str, str, str, str], Any] = {}  # (..., manager) -> last applied configuration
        self._rv = 1
        self._history: deque[_Event] = deque()
        self._floor = 0  # resuming a watch from a resourceVersion below this gets 410 Expired
        self._watchers: set[_Watcher] = set()
        self._failures: dict[tuple[str, str], deque[int]] = {}
        self._delays: dict[tuple[str, str], deque[float]] = {}
        self._runner: web.AppRunner | None = None
        self.requests: Counter[tuple[str, str]] = Counter()
        """HTTP requests received per (verb, plural); plural is "devices/status" for the subresource."""
        self.object_writes: Counter[tuple[str, str, str]] = Counter()
        """HTTP write requests received per (plural, namespace, name), refused ones included; "" namespace for
        cluster-scoped objects."""
        self.writes: list[WriteRecord] = []
        """Every HTTP write request, in order."""

    # ----------------------------------------------------------------- lifecycle and configuration

    def register(self, rtype: ResourceType) -> None:
        """Serve ``rtype`` (replacing a registration of the same group/version/plural)."""
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    @property
    def types(self) -> list[ResourceType]:
        """The resources served."""
        return list(self._types.values())

    async def start(self) -> None:
        """Listen on 127.0.0.1 (same port as before after a ``stop``); stored objects are kept across restarts."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown: stop() has already ended the watches, the rest are quick requests.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server  # the asyncio server: the only place the picked port can be read from
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Close every connection (watches abruptly, as a crashing server would) and release the port."""
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(_BREAK)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def url(self) -> str:
        """The server URL, e.g. ``http://127.0.0.1:40123`` (https with an ``ssl_context``)."""
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def kubeconfig_dict(self, namespace: str = "default") -> dict[str, Any]:
        """A kubeconfig (as a dict) pointing at the simulator with its token."""
        user: dict[str, Any] = {"token": self.token} if self.token else {}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "simulator", "cluster": {"server": self.url}}],
            "users": [{"name": "simulator", "user": user}],
            "contexts": [
                {"name": "simulator", "context": {"cluster": "simulator", "user": "simulator", "namespace": namespace}}
            ],
            "current-context": "simulator",
        }

    def kubeconfig(self, path: Path | str, namespace: str = "default") -> Path:
        """Write a kubeconfig file for the simulator (start it first: the URL carries the port); returns it."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig_dict(namespace), sort_keys=False))
        return path

    def lightkube_config(self, namespace: str = "default") -> Any:
        """The ``lightkube.KubeConfig`` for the simulator, for ``AsyncClient(config=...)``."""
        from lightkube import KubeConfig

        return KubeConfig.from_dict(self.kubeconfig_dict(namespace))

    # ----------------------------------------------------------------- fault injection and inspection

    def fail_next(self, verb: str, plural: str, code: int, times: int = 1) -> None:
        """Answer the next ``times`` HTTP requests of ``verb`` on ``plural`` with a ``code`` Status.

        Verbs are the Kubernetes ones: get, list, watch, create, update, patch, delete, deletecollection; "apply"
        matches only server-side apply patches. ``plural`` is e.g. "devices", or "devices/status".
        """
        self._failures.setdefault((verb, plural), deque()).extend([code] * times)

    def delay_next(self, verb: str, plural: str, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` requests of ``verb`` on ``plural`` for ``seconds`` before serving them (a slow
        API server: later requests on other connections may overtake them)."""
        self._delays.setdefault((verb, plural), deque()).extend([seconds] * times)

    def break_watches(self) -> int:
        """Abruptly close every open watch stream (no final chunk); returns how many there were."""
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.queue.put_nowait(_BREAK)
        return len(watchers)

    def end_watches(self) -> int:
        """End every open watch stream cleanly, as ``timeoutSeconds`` does; returns how many there were."""
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.queue.put_nowait(_END)
        return len(watchers)

    def send_bookmarks(self) -> None:
        """Send a BOOKMARK now on every watch that allows them."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(_BOOKMARK)

    def compact(self) -> None:
        """Drop the watch history: resuming from any resourceVersion seen so far gets 410 Expired.

        The global revision moves on by one, as etcd's does with writes to other resources, so that a fresh
        list's resourceVersion can still be watched from (a client that relists after 410 recovers).
        """
        self._history.clear()
        self._rv += 1
        self._floor = self._rv

    @property
    def open_watches(self) -> int:
        """How many watch streams are open."""
        return len(self._watchers)

    async def wait_watches(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` watch streams are open (to avoid racing a client's watch)."""
        deadline = time.monotonic() + timeout
        while len(self._watchers) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._watchers)} watches open, wanted {count}")
            await asyncio.sleep(0.01)

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        return self._rv

    def writes_to(self, plural: str, namespace: str, name: str) -> int:
        """HTTP write requests received for one object."""
        return self.object_writes[(plural, namespace, name)]

    def reset_counters(self) -> None:
        """Forget request counters and the write log."""
        self.requests.clear()
        self.object_writes.clear()
        self.writes.clear()

    # ----------------------------------------------------------------- direct object manipulation (kubectl-like)

    def _rtype(self, resource: str | ResourceType) -> ResourceType:
        if isinstance(resource, ResourceType):
            return resource
        if resource.count("/") == 2:
            group, version, plural = resource.split("/")
            found = self._types.get((group, version, plural))
            if found:
                return found
        matches = [t for t in self._types.values() if resource in (t.plural, t.resource)]
        if len(matches) != 1:
            raise KeyError(f"no single served resource is {resource!r}")
        return matches[0]

    def _rtype_of(self, doc: dict[str, Any]) -> ResourceType:
        for rtype in self._types.values():
            if rtype.api_version == doc.get("apiVersion") and rtype.kind == doc.get("kind"):
                return rtype
        raise KeyError(f"no served resource for {doc.get('apiVersion')} {doc.get('kind')}")

    def _ns(self, rtype: ResourceType, namespace: str | None) -> str:
        return (namespace or "default") if rtype.namespaced else ""

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Create an object (kind from apiVersion/kind; namespace from metadata, "default" if absent)."""
        rtype = self._rtype_of(doc)
        return self._create(rtype, self._ns(rtype, _meta(doc).get("namespace")), doc, "kubectl-create")

    def replace(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Replace an object; unconditional when the document carries no resourceVersion (a test convenience)."""
        rtype = self._rtype_of(doc)
        ns = self._ns(rtype, _meta(doc).get("namespace"))
        name = _meta(doc).get("name", "")
        doc = copy.deepcopy(doc)
        if not _meta(doc).get("resourceVersion"):
            current = self._get(rtype, ns, name)
            doc.setdefault("metadata", {})["resourceVersion"] = _meta(current)["resourceVersion"]
        return self._update(rtype, ns, name, doc, "kubectl-replace", None)

    def merge_patch(
        self, resource: str | ResourceType, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch an object, as ``kubectl patch --type merge`` does."""
        rtype = self._rtype(resource)
        return self._patch(rtype, self._ns(rtype, namespace), name, MERGE_PATCH, patch, "kubectl-patch", None)

    def apply(self, doc: dict[str, Any], field_manager: str = "kubectl") -> dict[str, Any]:
        """Server-side apply, as ``kubectl apply --server-side`` does."""
        rtype = self._rtype_of(doc)
        ns = self._ns(rtype, _meta(doc).get("namespace"))
        return self._patch(rtype, ns, _meta(doc).get("name", ""), APPLY_PATCH, doc, field_manager, None)

    def delete(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        """Delete an object (or mark it deleted while finalizers remain); returns its last state."""
        rtype = self._rtype(resource)
        return self._delete(rtype, self._ns(rtype, namespace), name)

    def get(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of an object, or None."""
        rtype = self._rtype(resource)
        found = self._objects.get((rtype.resource, self._ns(rtype, namespace), name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self, resource: str | ResourceType, namespace: str | None = None, labels: str | None = None
    ) -> list[dict[str, Any]]:
        """Copies of the objects of a resource (all namespaces when None), in the API server's order."""
        rtype = self._rtype(resource)
        reqs = parse_label_selector(labels)
        return [
            copy.deepcopy(obj)
            for obj in self._select(rtype, namespace if rtype.namespaced else None)
            if _match_labels(obj, reqs)
        ]

    # ----------------------------------------------------------------- storage semantics

    def _select(self, rtype: ResourceType, namespace: str | None) -> list[dict[str, Any]]:
        # etcd returns keys in order: /registry/<group>/<plural>/<namespace>/<name>.
        return [
            obj
            for (res, ns, _name), obj in sorted(self._objects.items())
            if res == rtype.resource and (namespace is None or ns == namespace)
        ]

    def _get(self, rtype: ResourceType, ns: str, name: str) -> dict[str, Any]:
        found = self._objects.get((rtype.resource, ns, name))
        if found is None:
            raise SimulatorError(
                404,
                f'{rtype.resource} "{name}" not found',
                details={"name": name, "group": rtype.group, "kind": rtype.plural},
            )
        return found

    def _commit(self, rtype: ResourceType, event_type: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (rtype.resource, _meta(obj).get("namespace", ""), obj["metadata"]["name"])
        if event_type == "DELETED":
            self._objects.pop(key, None)
            for applied in [k for k in self._applied if k[:3] == key]:
                del self._applied[applied]
        else:
            self._objects[key] = obj
        event = _Event(self._rv, event_type, rtype, copy.deepcopy(obj), prev)
        self._history.append(event)
        while len(self._history) > self.history_size:
            self._floor = self._history.popleft().rv
        for watcher in self._watchers:
            if watcher.rtype == rtype:
                watcher.queue.put_nowait(event)
        if rtype == CRD and event_type != "DELETED" and self.register_crds:
            self._register_crd(obj)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            key = (spec.get("group", ""), version.get("name", ""), names.get("plural", ""))
            if not version.get("served", True) or key in self._types:
                continue
            self.register(
                ResourceType(
                    *key,
                    kind=names.get("kind", ""),
                    namespaced=spec.get("scope") == "Namespaced",
                    status_subresource="status" in (version.get("subresources") or {}),
                    selectable_fields=tuple(
                        f["jsonPath"].lstrip(".") for f in version.get("selectableFields") or [] if "jsonPath" in f
                    ),
                )
            )

    def _managed(self, obj: dict[str, Any], manager: str, operation: str, rtype: ResourceType, sub: str | None) -> None:
        entries = [
            e
            for e in _meta(obj).get("managedFields") or []
            if not (e.get("manager") == manager and e.get("operation") == operation and e.get("subresource") == sub)
        ]
        entry: dict[str, Any] = {
            "manager": manager,
            "operation": operation,
            "apiVersion": rtype.api_version,
            "time": _now(),
            "fieldsType": "FieldsV1",
        }
        if sub:
            entry["subresource"] = sub
        obj["metadata"]["managedFields"] = [*entries, entry]

    def _check_identity(self, rtype: ResourceType, ns: str, doc: Any, name: str | None) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise SimulatorError(400, "the body of the request is not a JSON object")
        if doc.get("kind") and doc["kind"] != rtype.kind:
            raise SimulatorError(
                400,
                f"the API version in the data ({doc.get('apiVersion')}) and kind "
                f"({doc['kind']}) do not match the resource {rtype.resource}",
            )
        meta = _meta(doc)
        if rtype.namespaced and meta.get("namespace") and meta["namespace"] != ns:
            raise SimulatorError(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        if name is not None and meta.get("name") and meta["name"] != name:
            raise SimulatorError(
                400, f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        return meta

    def _create(
        self, rtype: ResourceType, ns: str, doc: Any, manager: str, operation: str = "Update"
    ) -> dict[str, Any]:
        self._check_identity(rtype, ns, doc, None)
        obj = copy.deepcopy(doc)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise SimulatorError(
                    422, f"{rtype.resource} is invalid: metadata.name: Required value: name or generateName is required"
                )
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = meta["generateName"] + suffix
        if (rtype.resource, ns, meta["name"]) in self._objects:
            raise SimulatorError(
                409,
                f'{rtype.resource} "{meta["name"]}" already exists',
                reason="AlreadyExists",
                details={"name": meta["name"], "group": rtype.group, "kind": rtype.plural},
            )
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if rtype.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        # Server-owned fields: whatever the client sent is overwritten.
        meta.pop("resourceVersion", None)
        meta.pop("deletionTimestamp", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        if rtype.status_subresource:
            obj.pop("status", None)  # status is written through /status only
        self._managed(obj, manager, operation, rtype, None)
        self._commit(rtype, "ADDED", obj, None)
        return copy.deepcopy(obj)

    def _store_update(
        self,
        rtype: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        manager: str,
        operation: str,
        sub: str | None,
    ) -> dict[str, Any]:
        """Write ``new`` over ``old`` with the server's rules; a no-op write changes nothing (no new version)."""
        old_meta = old["metadata"]
        if rtype.status_subresource and sub == "status":
            # Through /status only the status changes; the rest stays as stored.
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = copy.deepcopy(status)
        else:
            if not isinstance(new.get("metadata"), dict):
                new["metadata"] = {}
            meta = new["metadata"]
            new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
            # Server-owned metadata: what the client sent is ignored.
            for key in SERVER_OWNED:
                if key in old_meta:
                    meta[key] = copy.deepcopy(old_meta[key])
                else:
                    meta.pop(key, None)
            if rtype.status_subresource:
                # With the subresource, the main endpoint ignores status changes.
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        if _without(new) == _without(old):
            return copy.deepcopy(old)
        meta = new["metadata"]
        # generation counts changes of the desired state: neither metadata nor (with the subresource) status.
        ignored = ("metadata", "status") if rtype.status_subresource else ("metadata",)
        if _without(new, *ignored) != _without(old, *ignored):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        self._managed(new, manager, operation, rtype, sub)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer left an object being deleted: now it goes.
            self._commit(rtype, "DELETED", new, old)
        else:
            self._commit(rtype, "MODIFIED", new, old)
        return copy.deepcopy(new)

    def _update(
        self, rtype: ResourceType, ns: str, name: str, doc: Any, manager: str, sub: str | None
    ) -> dict[str, Any]:
        meta = self._check_identity(rtype, ns, doc, name)
        old = self._get(rtype, ns, name)
        rv = meta.get("resourceVersion")
        if not rv:
            # Custom resources allow no unconditional update (customResourceStrategy.AllowUnconditionalUpdate).
            raise SimulatorError(
                422,
                f'{rtype.resource} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
                "must be specified for an update",
            )
        self._check_version(rtype, name, old, rv)
        return self._store_update(rtype, old, copy.deepcopy(doc), manager, "Update", sub)

    def _check_version(self, rtype: ResourceType, name: str, old: dict[str, Any], rv: Any) -> None:
        if str(rv) != old["metadata"]["resourceVersion"]:
            raise SimulatorError(
                409,
                f'Operation cannot be fulfilled on {rtype.resource} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                details={"name": name, "group": rtype.group, "kind": rtype.plural},
            )

    def _patch(
        self,
        rtype: ResourceType,
        ns: str,
        name: str,
        content_type: str,
        body: Any,
        manager: str | None,
        sub: str | None,
    ) -> dict[str, Any]:
        if content_type == APPLY_PATCH:
            return self._apply(rtype, ns, name, body, manager, sub)
        old = self._get(rtype, ns, name)
        if content_type == MERGE_PATCH:
            if not isinstance(body, dict):
                raise SimulatorError(400, "a merge patch must be a JSON object")
            new = merge_patch(old, body)
        elif content_type == JSON_PATCH:
            new = json_patch(old, body)
        elif content_type == STRATEGIC_PATCH:
            raise SimulatorError(415, "strategic merge patch is not supported for custom resources")
        else:
            raise SimulatorError(
                415,
                f"the body of the request was in an unknown format ({content_type}) - accepted media types include: "
                f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}",
            )
        if not isinstance(new, dict):
            raise SimulatorError(422, "the patched object is not a JSON object")
        self._check_identity(rtype, ns, new, name)
        rv = _meta(new).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            # A patch that sets metadata.resourceVersion is a precondition, like an update's.
            self._check_version(rtype, name, old, rv)
        return self._store_update(rtype, old, new, manager or "unknown", "Update", sub)

    def _apply(
        self, rtype: ResourceType, ns: str, name: str, config: Any, manager: str | None, sub: str | None
    ) -> dict[str, Any]:
        if not manager:
            raise SimulatorError(
                422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
            )
        if not isinstance(config, dict) or not config.get("apiVersion") or not config.get("kind"):
            raise SimulatorError(400, "apply configurations need apiVersion and kind")
        self._check_identity(rtype, ns, config, name)
        key = (rtype.resource, ns, name, manager)
        old = self._objects.get((rtype.resource, ns, name))
        if old is None:
            if sub:
                raise self._not_found(rtype, name)
            created = self._create(rtype, ns, {**config, "metadata": {**_meta(config), "name": name}}, manager, "Apply")
            self._applied[key] = copy.deepcopy(config)
            return created
        rv = _meta(config).get("resourceVersion")
        if rv:
            self._check_version(rtype, name, old, rv)
        new = merge_patch(old, config)
        _prune_unapplied(new, self._applied.get(key), config)
        self._applied[key] = copy.deepcopy(config)
        return self._store_update(rtype, old, new, manager, "Apply", sub)

    def _not_found(self, rtype: ResourceType, name: str) -> SimulatorError:
        return SimulatorError(
            404,
            f'{rtype.resource} "{name}" not found',
            details={"name": name, "group": rtype.group, "kind": rtype.plural},
        )

    def _delete(self, rtype: ResourceType, ns: str, name: str, rv: str | None = None) -> dict[str, Any]:
        old = self._get(rtype, ns, name)
        if rv:
            self._check_version(rtype, name, old, rv)
        obj = copy.deepcopy(old)
        if _meta(old).get("finalizers"):
            if not _meta(old).get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                self._commit(rtype, "MODIFIED", obj, old)
            return copy.deepcopy(obj)
        self._commit(rtype, "DELETED", obj, old)
        return copy.deepcopy(obj)

    # ----------------------------------------------------------------- HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
                raise SimulatorError(401, "Unauthorized")
            parts = [p for p in request.path.split("/") if p]
            if not parts or parts[0] not in ("api", "apis") or len(parts) <= 3:
                return self._discovery(request, parts)
            return await self._resource_request(request, parts)
        except SimulatorError as exc:
            return _json(exc.status, exc.code)
        except Exception as exc:
            # A simulator bug still answers as an API server would, and shows in the test's log.
            log.exception("simulator failure on %s %s", request.method, request.path)
            return _json(SimulatorError(500, f"simulator failure: {exc!r}").status, 500)

    def _discovery(self, request: web.Request, parts: list[str]) -> web.Response:
        if request.method != "GET":
            raise SimulatorError(405, "the server does not allow this method on the requested resource")
        groups: dict[str, list[str]] = {}
        for rtype in self._types.values():
            versions = groups.setdefault(rtype.group, [])
            if rtype.version not in versions:
                versions.append(rtype.version)
        if parts == ["version"]:
            return _json({"major": "1", "minor": "31", "gitVersion": "v1.31.0-simulator", "platform": "linux/amd64"})
        if parts == ["api"]:
            return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if parts == ["api", "v1"]:
            return _json({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": []})

        def group_doc(group: str) -> dict[str, Any]:
            versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in groups[group]]
            return {"name": group, "versions": versions, "preferredVersion": versions[0]}

        if parts == ["apis"]:
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(g) for g in groups if g]})
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return _json({"kind": "APIGroup", "apiVersion": "v1", **group_doc(parts[1])})
        if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], []):
            resources = []
            for rtype in self._types.values():
                if (rtype.group, rtype.version) != (parts[1], parts[2]):
                    continue
                verbs = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
                resources.append(
                    {"name": rtype.plural, "namespaced": rtype.namespaced, "kind": rtype.kind, "verbs": verbs}
                )
                if rtype.status_subresource:
                    resources.append(
                        {
                            "name": f"{rtype.plural}/status",
                            "namespaced": rtype.namespaced,
                            "kind": rtype.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
            return _json(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": f"{parts[1]}/{parts[2]}",
                    "resources": resources,
                }
            )
        raise _page_not_found()

    async def _resource_request(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        if parts[0] != "apis":
            raise _page_not_found()  # the core group (pods, namespaces...) is not simulated
        group, version, rest = parts[1], parts[2], parts[3:]
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        rtype = self._types.get((group, version, rest[0]))
        if rtype is None or len(rest) > 3 or (ns is not None and not rtype.namespaced):
            raise _page_not_found()
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and (sub != "status" or not rtype.status_subresource):
            raise _page_not_found()
        if rtype.namespaced and ns is None and name is not None:
            raise _page_not_found()  # a namespaced object needs its namespace in the path
        ns_key = ns if ns is not None else ""

        method = request.method
        query = dict(request.query)
        watch = query.get("watch", "").lower() in ("true", "1")
        if name is None:
            verb = {"GET": "watch" if watch else "list", "POST": "create", "DELETE": "deletecollection"}.get(method)
            if verb is None or (verb in ("create", "deletecollection") and rtype.namespaced and ns is None):
                raise SimulatorError(405, "the server does not allow this method on the requested resource")
        else:
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
            if verb is None or (sub and verb == "delete"):
                raise SimulatorError(405, "the server does not allow this method on the requested resource")
        plural = f"{rtype.plural}/{sub}" if sub else rtype.plural
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        self.requests[(verb, plural)] += 1

        record: WriteRecord | None = None
        body: Any = None
        if verb in ("create", "update", "patch", "delete", "deletecollection"):
            raw = await request.text()
            try:
                body = (yaml.safe_load(raw) if content_type == APPLY_PATCH else json.loads(raw)) if raw else None
            except (ValueError, yaml.YAMLError):
                body = raw
            record = WriteRecord(verb, method, request.path, query, content_type, body)
            self.writes.append(record)
            target = name if name is not None else _meta(body).get("name") if isinstance(body, dict) else None
            if target:
                self.object_writes[(rtype.plural, ns_key, target)] += 1
        held = self._delays.get((verb, plural))
        if held:
            await asyncio.sleep(held.popleft())
        try:
            self._injected_failure(verb, plural, content_type)
            if isinstance(body, str):
                raise SimulatorError(400, "the body of the request could not be decoded")
            manager = query.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
            response = await self._serve(request, rtype, ns, name, sub, verb, query, body, content_type, manager)
        except SimulatorError as exc:
            if record is not None:
                record.code = exc.code
            raise
        if record is not None:
            record.code = response.status
        return response

    def _injected_failure(self, verb: str, plural: str, content_type: str) -> None:
        keys = [(verb, plural)]
        if verb == "patch" and content_type == APPLY_PATCH:
            keys.insert(0, ("apply", plural))
        for key in keys:
            pending = self._failures.get(key)
            if pending:
                code = pending.popleft()
                raise SimulatorError(code, f"injected failure: {verb} {plural} answered {code}")

    async def _serve(
        self,
        request: web.Request,
        rtype: ResourceType,
        ns: str | None,
        name: str | None,
        sub: str | None,
        verb: str,
        query: dict[str, str],
        body: Any,
        content_type: str,
        manager: str,
    ) -> web.StreamResponse:
        ns_key = ns if ns is not None else ""
        if verb == "watch":
            return await self._watch(request, rtype, ns, query)
        if verb == "list":
            return _json(self._list_response(rtype, ns, query))
        if verb == "get":
            return _json(self._get(rtype, ns_key, name or ""))
        if verb == "create":
            return _json(self._create(rtype, ns_key, body, manager), 201)
        if verb == "update":
            return _json(self._update(rtype, ns_key, name or "", body, manager, sub))
        if verb == "patch":
            existed = (rtype.resource, ns_key, name) in self._objects
            result = self._patch(rtype, ns_key, name or "", content_type, body, manager, sub)
            return _json(result, 200 if existed else 201)
        if verb == "delete":
            precondition = (body or {}).get("preconditions", {}) if isinstance(body, dict) else {}
            obj = self._delete(rtype, ns_key, name or "", precondition.get("resourceVersion"))
            if _meta(obj).get("deletionTimestamp") and _meta(obj).get("finalizers"):
                return _json(obj, 200)  # not gone yet: the object, as the real server answers
            details = {"name": name, "group": rtype.group, "kind": rtype.plural, "uid": _meta(obj).get("uid")}
            return _json(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
            )
        # deletecollection
        items = self._filtered(rtype, ns, query)
        deleted = [self._delete(rtype, ns_key, _meta(obj)["name"]) for obj in items]
        return _json(
            {
                "apiVersion": rtype.api_version,
                "kind": rtype.list_kind,
                "metadata": {"resourceVersion": str(self._rv)},
                "items": deleted,
            }
        )

    def _filtered(self, rtype: ResourceType, ns: str | None, query: dict[str, str]) -> list[dict[str, Any]]:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), rtype)
        return [o for o in self._select(rtype, ns) if _match_labels(o, labels) and _match_fields(o, fields)]

    def _list_response(self, rtype: ResourceType, ns: str | None, query: dict[str, str]) -> dict[str, Any]:
        items = self._filtered(rtype, ns, query)
        rv = str(self._rv)
        meta: dict[str, Any] = {"resourceVersion": rv}
        token = query.get("continue")
        if token:
            try:
                after = json.loads(base64.urlsafe_b64decode(token.encode()))
                start = (after["ns"], after["name"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SimulatorError(400, "continue key is not valid") from exc
            items = [o for o in items if (_meta(o).get("namespace", ""), _meta(o)["name"]) > start]
        limit = int(query.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            items = items[:limit]
            last = _meta(items[-1])
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"ns": last.get("namespace", ""), "name": last["name"], "rv": rv}).encode()
            ).decode()
        return {"apiVersion": rtype.api_version, "kind": rtype.list_kind, "metadata": meta, "items": items}

    async def _watch(
        self, request: web.Request, rtype: ResourceType, ns: str | None, query: dict[str, str]
    ) -> web.StreamResponse:
        watcher = _Watcher(
            rtype,
            ns,
            parse_label_selector(query.get("labelSelector")),
            parse_field_selector(query.get("fieldSelector"), rtype),
        )
        rv_param = query.get("resourceVersion") or ""
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        initial_end = query.get("sendInitialEvents", "").lower() == "true"
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        # What is replayed is decided and the watcher registered with no await in between, so no write falls
        # between the replay and the live events.
        first: list[tuple[str, dict[str, Any]]] = []
        expired: SimulatorError | None = None
        if rv_param in ("", "0") or initial_end:
            first = [("ADDED", copy.deepcopy(o)) for o in self._select(rtype, ns) if watcher.matches(o)]
        else:
            try:
                since = int(rv_param)
            except ValueError as exc:
                raise SimulatorError(400, f"invalid resource version {rv_param!r}") from exc
            if since < self._floor:
                expired = SimulatorError(410, f"too old resource version: {since} ({self._floor})")
            else:
                for event in self._history:
                    if event.rv > since and event.rtype == rtype:
                        first.extend(self._transition(watcher, event))
        if expired is None:
            self._watchers.add(watcher)

        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if expired is not None:
                # The real server answers 200 and reports the expiry as an ERROR event in the stream.
                await _send(response, "ERROR", expired.status)
                await response.write_eof()
                return response
            for kind, obj in first:
                await _send(response, kind, obj)
            if initial_end and bookmarks:
                await _send(response, "BOOKMARK", self._bookmark(rtype, initial_end=True))
            deadline = time.monotonic() + timeout if timeout is not None else None
            while True:
                wait = self.bookmark_interval if bookmarks else None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait = left if wait is None else min(wait, left)
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    item = _BOOKMARK if bookmarks and (deadline is None or time.monotonic() < deadline) else _END
                if item == _END:
                    break
                if item == _BREAK:
                    # No terminating chunk: the client sees a connection cut mid-body.
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if item == _BOOKMARK:
                    if bookmarks:
                        await _send(response, "BOOKMARK", self._bookmark(rtype))
                    continue
                assert isinstance(item, _Event)
                for kind, obj in self._transition(watcher, item):
                    await _send(response, kind, obj)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.discard(watcher)
        return response

    def _transition(self, watcher: _Watcher, event: _Event) -> list[tuple[str, dict[str, Any]]]:
        """The event this watcher sees: an object entering its selection is ADDED, one leaving it DELETED."""
        now = event.type != "DELETED" and watcher.matches(event.obj)
        before = watcher.matches(event.prev)
        if event.type == "DELETED":
            return [("DELETED", event.obj)] if before else []
        if now and before:
            return [("MODIFIED", event.obj)]
        if now:
            return [("ADDED", event.obj)]
        if before:
            return [("DELETED", event.obj)]
        return []

    def _bookmark(self, rtype: ResourceType, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"apiVersion": rtype.api_version, "kind": rtype.kind, "metadata": meta}


def _page_not_found() -> SimulatorError:
    # What the real server answers for a path it does not serve, e.g. /status of a CRD without the subresource.
    return SimulatorError(404, "the server could not find the requested resource")


def _json(doc: Any, status: int = 200) -> web.Response:
    # Exactly "application/json", no charset: lightkube turns an error into ApiError only for that content type.
    return web.Response(status=status, body=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})


async def _send(response: web.StreamResponse, kind: str, obj: dict[str, Any]) -> None:
    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
