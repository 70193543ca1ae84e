"""Render what the agent knows as Kubernetes objects, the way a cluster would show them.

On KubeEdge >= 1.23 reported twins and state live in a ``DeviceStatus`` object
(same name and namespace as its Device, owned by it). As on a real cluster, its
twin metadata carries ``timestamp`` = when the agent received the value (ms)
and ``type: "string"``; the mapper's own metadata stays in the store.
With ``status_target = "device"`` (clusters before 1.23) the same twins, state
and lastOnlineTime are shown in the Device's ``.status`` instead.
"""

from __future__ import annotations

import copy
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmi import API_VERSION
from dmi.agent.store import StateRow, TwinRow, connect, read_meta, read_resources, read_state, read_twins
from dmi.resources import ObjectKey


class NoAgentState(RuntimeError):
    pass


def _twin(row: TwinRow) -> dict[str, Any]:
    out: dict[str, Any] = {"propertyName": row.property}
    reported: dict[str, Any] = {"value": row.reported_value or ""}
    if row.reported_ms is not None:
        reported["metadata"] = {"timestamp": str(row.reported_ms), "type": "string"}
    desired: dict[str, Any] = {"value": row.desired_value or ""}
    if row.desired_ms is not None:
        desired["metadata"] = {"timestamp": str(row.desired_ms), "type": "string"}
    out["observedDesired"] = desired
    out["reported"] = reported
    return out


def status_body(twins: list[TwinRow], state: StateRow | None) -> dict[str, Any]:
    body: dict[str, Any] = {"twins": [_twin(t) for t in twins]}
    if state is not None:
        body["state"] = state.state
        if state.last_online_time:
            body["lastOnlineTime"] = state.last_online_time
    return body


def device_status_doc(device_doc: dict[str, Any], twins: list[TwinRow], state: StateRow | None) -> dict[str, Any]:
    meta = device_doc.get("metadata") or {}
    owner: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "name": meta.get("name", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }
    if meta.get("uid"):
        owner["uid"] = meta["uid"]
    return {
        "apiVersion": API_VERSION,
        "kind": "DeviceStatus",
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace") or "default",
            "ownerReferences": [owner],
        },
        "spec": {},
        "status": status_body(twins, state),
    }


def device_doc_with_status(
    device_doc: dict[str, Any], twins: list[TwinRow], state: StateRow | None, target: str
) -> dict[str, Any]:
    doc = copy.deepcopy(device_doc)
    doc.setdefault("metadata", {}).setdefault("namespace", "default")
    if target == "device":
        legacy = {k: v for k, v in (doc.get("status") or {}).items() if k in ("reportCycle", "reportToCloud")}
        doc["status"] = {**legacy, **status_body(twins, state)}
    return doc


@dataclass(frozen=True)
class DeviceView:
    """Everything ``mapper get`` shows about one device."""

    key: ObjectKey
    device: dict[str, Any]
    twins: list[TwinRow]
    state: StateRow | None
    target: str

    def device_doc(self) -> dict[str, Any]:
        return device_doc_with_status(self.device, self.twins, self.state, self.target)

    def device_status(self) -> dict[str, Any]:
        return device_status_doc(self.device, self.twins, self.state)


class StatusReader:
    """Read-only view of an agent's state folder (works while the agent runs)."""

    def __init__(self, state_dir: Path) -> None:
        db = state_dir / "agent.db"
        if not db.exists():
            raise NoAgentState(
                f"no agent state in {state_dir}: start the agent first (make demo, or mapper agent) or pass --state-dir"
            )
        self._conn: sqlite3.Connection = connect(db, readonly=True)
        self.target = read_meta(self._conn, "status_target") or "devicestatus"

    def close(self) -> None:
        self._conn.close()

    def models(self) -> list[dict[str, Any]]:
        return [r.doc for r in read_resources(self._conn, "DeviceModel")]

    def devices(self, namespace: str | None = None) -> list[DeviceView]:
        views = []
        for row in read_resources(self._conn, "Device"):
            if namespace is not None and row.namespace != namespace:
                continue
            key = ObjectKey(row.namespace, row.name)
            views.append(
                DeviceView(key, row.doc, read_twins(self._conn, key), read_state(self._conn, key), self.target)
            )
        return views

    def device(self, key: ObjectKey) -> DeviceView | None:
        return next((v for v in self.devices(key.namespace) if v.key == key), None)
