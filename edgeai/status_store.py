"""The embedded status store of AI jobs: each Sedna object as applied, with the status the controller wrote.

One SQLite file (WAL, so ``mapper ai get`` can read while ``mapper ai run`` writes). Objects are stored as the
JSON a Kubernetes API would return: ``apiVersion``, ``kind``, ``metadata``, ``spec``, ``status``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, namespace, name)
);
"""


class StatusStore:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            if not path.exists():
                raise FileNotFoundError(f"{path}: no AI job status here; start a job with `mapper ai run -f JOB.yaml`")
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def put(self, body: dict[str, Any]) -> None:
        """Store an object as applied (its status is kept if it was there)."""
        meta = body["metadata"]
        doc = {k: v for k, v in body.items() if k != "status"}
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO objects (kind, namespace, name, body) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, namespace, name) DO UPDATE SET body = excluded.body",
                (body["kind"], meta.get("namespace", "default"), meta["name"], json.dumps(doc)),
            )

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE objects SET status = ? WHERE kind = ? AND namespace = ? AND name = ?",
                (json.dumps(status), kind, namespace, name),
            )

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT body, status FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                (kind, namespace, name),
            ).fetchone()
        return _doc(row) if row else None

    def list(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if kind is None:
                rows = self._conn.execute("SELECT body, status FROM objects ORDER BY kind, namespace, name").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT body, status FROM objects WHERE kind = ? ORDER BY namespace, name", (kind,)
                ).fetchall()
        return [_doc(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _doc(row: tuple[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(row[0])
    status = json.loads(row[1])
    if status:
        doc["status"] = status
    return doc
