"""Durable agent state in SQLite (WAL): twins, device states, mappers and the CRs last served.

Writes go through one writer thread that commits whatever has queued up in a
single transaction (group commit) and only then resolves the callers' futures,
so an acknowledged report is always on disk: WAL with ``synchronous=NORMAL``
survives a killed process (only an OS crash or power cut can lose the tail).
Readers (the CLI, start-up) use their own connections; WAL lets them read while
the agent writes.
"""

from __future__ import annotations

import asyncio
import json
import json.encoder
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from dmi.resources import ObjectKey

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS twins (
    namespace TEXT NOT NULL, device TEXT NOT NULL, property TEXT NOT NULL,
    reported_value TEXT, reported_meta TEXT, reported_ms INTEGER,
    desired_value TEXT, desired_meta TEXT, desired_ms INTEGER,
    PRIMARY KEY (namespace, device, property)
);
CREATE TABLE IF NOT EXISTS device_state (
    namespace TEXT NOT NULL, device TEXT NOT NULL,
    state TEXT NOT NULL, state_ms INTEGER NOT NULL, last_online_time TEXT,
    PRIMARY KEY (namespace, device)
);
CREATE TABLE IF NOT EXISTS mappers (
    name TEXT PRIMARY KEY, protocol TEXT NOT NULL, address TEXT NOT NULL,
    version TEXT NOT NULL, api_version TEXT NOT NULL, with_data INTEGER NOT NULL,
    registered_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    doc TEXT NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_TWIN_UPSERT = """
INSERT INTO twins (namespace, device, property, reported_value, reported_meta, reported_ms,
                   desired_value, desired_meta, desired_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (namespace, device, property) DO UPDATE SET
    reported_value = COALESCE(excluded.reported_value, twins.reported_value),
    reported_meta  = COALESCE(excluded.reported_meta, twins.reported_meta),
    reported_ms    = COALESCE(excluded.reported_ms, twins.reported_ms),
    desired_value  = COALESCE(excluded.desired_value, twins.desired_value),
    desired_meta   = COALESCE(excluded.desired_meta, twins.desired_meta),
    desired_ms     = COALESCE(excluded.desired_ms, twins.desired_ms)
"""

_STATE_UPSERT = """
INSERT INTO device_state (namespace, device, state, state_ms, last_online_time) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (namespace, device) DO UPDATE SET
    state = excluded.state, state_ms = excluded.state_ms,
    last_online_time = COALESCE(excluded.last_online_time, device_state.last_online_time)
"""


# Twin writes and rows are named tuples, not frozen dataclasses: every report builds ten of each, and a frozen
# dataclass costs about three times as much to construct (its __init__ goes through object.__setattr__).
class TwinWrite(NamedTuple):
    """One twin of a report. ``None`` leaves that side as it was."""

    property: str
    reported_value: str | None
    reported_meta: dict[str, str] | None
    desired_value: str | None
    desired_meta: dict[str, str] | None


class TwinRow(NamedTuple):
    """One property's twin as stored: each side's value, metadata and receipt time (ms)."""

    property: str
    reported_value: str | None
    reported_meta: dict[str, str]
    reported_ms: int | None
    desired_value: str | None
    desired_meta: dict[str, str]
    desired_ms: int | None


@dataclass(frozen=True)
class StateRow:
    state: str
    state_ms: int
    last_online_time: str | None


@dataclass(frozen=True)
class MapperRecord:
    name: str
    protocol: str
    address: str
    version: str = ""
    api_version: str = ""
    with_data: bool = True
    registered_ms: int = 0


@dataclass(frozen=True)
class ResourceRow:
    kind: str
    namespace: str
    name: str
    doc: dict[str, Any]
    updated_ms: int


Job = Callable[[sqlite3.Connection], object]
_Item = tuple[Job, "asyncio.Future[None]", Callable[[], None] | None]  # a job, its caller's future, what follows it
_Result = tuple["asyncio.Future[None]", BaseException | None, Callable[[], None] | None]


def _merged(old: TwinRow | None, t: TwinWrite, received_ms: int) -> TwinRow:
    """``old`` after ``t``, as _TWIN_UPSERT leaves the row: a side that ``t`` does not carry stays as it was."""
    if old is None:
        old = TwinRow(t.property, None, {}, None, None, {}, None)
    reported, desired = t.reported_value is not None, t.desired_value is not None
    return TwinRow(
        t.property,
        t.reported_value if reported else old.reported_value,
        dict(t.reported_meta) if t.reported_meta is not None else old.reported_meta,
        received_ms if reported else old.reported_ms,
        t.desired_value if desired else old.desired_value,
        dict(t.desired_meta) if t.desired_meta is not None else old.desired_meta,
        received_ms if desired else old.desired_ms,
    )


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class AgentStore:
    """The agent's durable state. Create, then ``start()`` inside the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(path)
        self._conn.executescript(SCHEMA)
        # Reads never share the writer's connection: they must not see a group mid-commit.
        self._reader = connect(path)
        self._jobs: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.jobs_committed = 0
        # Called with a device's key once its twins or state are committed (the cluster status writer listens).
        self.on_written: list[Callable[[ObjectKey], None]] = []
        # The latest twins and state of the devices read since start, kept in step with every commit: the status
        # writer reads them for each write, and a read from SQLite (with its JSON) on the event loop costs more.
        self._twins: dict[ObjectKey, dict[str, TwinRow]] = {}
        self._states: dict[ObjectKey, StateRow | None] = {}
        # Groups the writer thread began (written by it only) and groups resolved on the loop (by the loop only).
        self._groups_begun = 0
        self._groups_resolved = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._writer, name="agent-store-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self._conn.close()
        self._reader.close()

    # ------------------------------------------------------------------ writer
    def _writer(self) -> None:
        conn = self._conn
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < 2000:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._groups_begun += 1  # before the commit can be seen: see _settled
            results = self._commit(conn, batch)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._resolve, results)
            if stop:
                return

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> list[_Result]:
        try:
            conn.execute("BEGIN")
            for job, _, _ in batch:
                job(conn)
            conn.execute("COMMIT")
            self.commits += 1
            self.jobs_committed += len(batch)
            return [(fut, None, after) for _, fut, after in batch]
        except sqlite3.Error:
            conn.execute("ROLLBACK")
        # One job spoiled the group: commit the others one by one so only it fails.
        out: list[_Result] = []
        for job, fut, after in batch:
            try:
                conn.execute("BEGIN")
                job(conn)
                conn.execute("COMMIT")
                out.append((fut, None, after))
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                log.error("store write failed: %s", exc)
                out.append((fut, exc, after))
        self.commits += 1
        return out

    def _resolve(self, results: list[_Result]) -> None:
        try:
            for fut, exc, after in results:
                if exc is None and after is not None:
                    try:
                        after()
                    except Exception:  # a listener's bug must not leave the other writers of the group waiting
                        log.exception("store: after a committed write")
                if fut.done():  # the caller was cancelled; its write still happened
                    continue
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)
        finally:
            self._groups_resolved += 1

    async def _submit(self, job: Job, after: Callable[[], None] | None = None) -> None:
        """Run ``job`` in the next group commit; ``after`` runs on the loop once it is committed, even if the
        caller was cancelled meanwhile (the write happened all the same)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.put((job, fut, after))
        await fut

    # ------------------------------------------------------------------ writes
    async def write_twins(self, key: ObjectKey, twins: Sequence[TwinWrite], received_ms: int) -> None:
        """Merge a report's twins; returns once they are committed. The writes' meta dicts are read again when the
        commit is applied to the in-memory copy: they must not change meanwhile."""
        twins = list(twins)
        rows = [
            (
                key.namespace,
                key.name,
                t.property,
                t.reported_value,
                _dump(t.reported_meta),
                received_ms if t.reported_value is not None else None,
                t.desired_value,
                _dump(t.desired_meta),
                received_ms if t.desired_value is not None else None,
            )
            for t in twins
        ]

        def committed() -> None:
            cached = self._twins.get(key)
            if cached is not None:
                for t in twins:
                    cached[t.property] = _merged(cached.get(t.property), t, received_ms)
            self._written(key)

        await self._submit(lambda conn: conn.executemany(_TWIN_UPSERT, rows), committed)

    async def write_state(self, key: ObjectKey, state: str, received_ms: int, last_online_time: str | None) -> None:
        row = (key.namespace, key.name, state, received_ms, last_online_time)

        def committed() -> None:
            if key in self._states:
                old = self._states[key]
                kept = last_online_time if last_online_time is not None else old.last_online_time if old else None
                self._states[key] = StateRow(state, received_ms, kept)
            self._written(key)

        await self._submit(lambda conn: conn.execute(_STATE_UPSERT, row), committed)

    def _written(self, key: ObjectKey) -> None:
        for callback in self.on_written:
            callback(key)

    async def save_mapper(self, record: MapperRecord) -> None:
        row = (
            record.name,
            record.protocol,
            record.address,
            record.version,
            record.api_version,
            int(record.with_data),
            record.registered_ms,
        )
        await self._submit(
            lambda conn: conn.execute("INSERT OR REPLACE INTO mappers VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        )

    async def sync_resources(
        self,
        upserts: Iterable[tuple[str, ObjectKey, dict[str, Any]]],
        deletes: Iterable[tuple[str, ObjectKey]],
        now_ms: int,
    ) -> None:
        """Record the CRs the agent now serves (its cache for ``mapper get`` and for restarts)."""
        up = [(kind, k.namespace, k.name, json.dumps(doc, sort_keys=True), now_ms) for kind, k, doc in upserts]
        down = [(kind, k.namespace, k.name) for kind, k in deletes]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?)", up)
            conn.executemany("DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?", down)

        await self._submit(job)

    def meta(self, key: str) -> str | None:
        """A value :meth:`set_meta` stored (committed ones only)."""
        return read_meta(self._reader, key)

    async def set_meta(self, key: str, value: str) -> None:
        await self._submit(lambda conn: conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))

    # ------------------------------------------------------------------ reads (any thread; short)
    def mappers(self) -> list[MapperRecord]:
        return read_mappers(self._reader)

    def resources(self, kind: str | None = None) -> list[ResourceRow]:
        return read_resources(self._reader, kind)

    def twins(self, key: ObjectKey) -> list[TwinRow]:
        """The device's twins as committed, by property name (read-only: the rows are the store's own copy)."""
        cached = self._twins.get(key)
        if cached is None:
            rows = {row.property: row for row in read_twins(self._reader, key)}
            if not self._settled():
                return [rows[name] for name in sorted(rows)]
            cached = self._twins[key] = rows
        return [cached[name] for name in sorted(cached)]

    def state(self, key: ObjectKey) -> StateRow | None:
        if key in self._states:
            return self._states[key]
        row = read_state(self._reader, key)
        if self._settled():
            self._states[key] = row
        return row

    def _settled(self) -> bool:
        # A copy may start from SQLite only when every group it could see has been applied to the copies: one
        # committed but not yet resolved would be applied again on top, briefly putting an older value back.
        return self._groups_begun == self._groups_resolved

    async def drop(self, key: ObjectKey, properties: Iterable[str] | None = None) -> None:
        """Delete the twins of ``properties`` of a device, or (None) all its twins and its state: a property
        removed from its Device, a Device deleted. On a cluster its DeviceStatus goes with it (ownerReference), so
        a device created again later starts empty, and here it must too."""
        ns, name = key.namespace, key.name
        props = None if properties is None else sorted(properties)

        def job(conn: sqlite3.Connection) -> None:
            if props is None:
                conn.execute("DELETE FROM twins WHERE namespace = ? AND device = ?", (ns, name))
                conn.execute("DELETE FROM device_state WHERE namespace = ? AND device = ?", (ns, name))
            else:
                conn.executemany(
                    "DELETE FROM twins WHERE namespace = ? AND device = ? AND property = ?",
                    [(ns, name, p) for p in props],
                )

        def committed() -> None:
            if props is None:
                self.forget(key)
                return
            cached = self._twins.get(key)
            if cached is not None:
                for p in props:
                    cached.pop(p, None)
            self._written(key)  # the cluster's copy is written again, without them

        await self._submit(job, committed)

    def forget(self, key: ObjectKey) -> None:
        """Drop the in-memory copy of a device that is no longer served (SQLite keeps its rows)."""
        self._twins.pop(key, None)
        self._states.pop(key, None)


# json.dumps with options builds a new encoder per call; twins are the hot path, so build it once.
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_QUOTE = json.encoder.encode_basestring_ascii  # the C quoting _ENCODE itself uses (ensure_ascii)


def _dump(meta: dict[str, str] | None) -> str | None:
    """``meta`` as compact JSON with sorted keys. Twin metadata is a map of strings, which is quoted directly:
    the encoder object alone costs more than the text (twenty of these per report)."""
    if meta is None:
        return None
    try:
        return "{" + ",".join([_QUOTE(k) + ":" + _QUOTE(v) for k, v in sorted(meta.items())]) + "}"
    except TypeError:  # not all strings: the general encoder says what is wrong, or copes
        return _ENCODE(meta)


def _load(text: str | None) -> dict[str, str]:
    return {} if not text else dict(json.loads(text))


# Read helpers shared by the agent and the CLI (which opens the database read-only).
def read_mappers(conn: sqlite3.Connection) -> list[MapperRecord]:
    rows = conn.execute("SELECT name, protocol, address, version, api_version, with_data, registered_ms FROM mappers")
    return [MapperRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows.fetchall()]


def read_resources(conn: sqlite3.Connection, kind: str | None = None) -> list[ResourceRow]:
    sql = "SELECT kind, namespace, name, doc, updated_ms FROM resources"
    rows = (
        conn.execute(sql + " WHERE kind = ? ORDER BY namespace, name", (kind,))
        if kind
        else conn.execute(sql + " ORDER BY kind, namespace, name")
    )
    return [ResourceRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows.fetchall()]


def read_twins(conn: sqlite3.Connection, key: ObjectKey) -> list[TwinRow]:
    rows = conn.execute(
        "SELECT property, reported_value, reported_meta, reported_ms, desired_value, desired_meta, desired_ms"
        " FROM twins WHERE namespace = ? AND device = ? ORDER BY property",
        (key.namespace, key.name),
    ).fetchall()
    return [TwinRow(r[0], r[1], _load(r[2]), r[3], r[4], _load(r[5]), r[6]) for r in rows]


def read_state(conn: sqlite3.Connection, key: ObjectKey) -> StateRow | None:
    row = conn.execute(
        "SELECT state, state_ms, last_online_time FROM device_state WHERE namespace = ? AND device = ?",
        (key.namespace, key.name),
    ).fetchone()
    return None if row is None else StateRow(row[0], row[1], row[2])


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])
