"""Devices and models from a folder of CR YAML, watched for changes.

The folder is polled (cheap ``stat`` calls; works on every filesystem, bind
mounts and ConfigMap volumes included). On a change every file is validated.
A document with errors keeps serving its last good version (matched by kind,
namespace and name) while the good documents beside it apply; a file that does
not parse at all keeps all of its last good documents. So a typo never removes
a working device, and its errors are logged with file, document and field. After
a restart the last good versions are what the agent served before it (kept in
its store), so a file broken while the agent was down takes nothing away either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmi.resources import DeviceModelResource, DeviceResource, is_kind, parse_device, parse_model
from dmi.validate import LoadedDocument, ValidationReport, iter_cr_files, validate_paths

log = logging.getLogger(__name__)

Fingerprint = dict[str, tuple[int, int]]


Identity = tuple[str, str, str]  # kind, namespace, name


@dataclass(frozen=True)
class Contents:
    models: tuple[DeviceModelResource, ...]
    devices: tuple[DeviceResource, ...]
    report: ValidationReport
    # Which file each served document came from (the agent keeps it for the next start; see FolderSource).
    origins: tuple[tuple[str, str, str, str], ...] = ()


def _identity(doc: LoadedDocument) -> Identity:
    meta = doc.doc.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return str(doc.doc.get("kind")), str(meta.get("namespace") or "default"), str(meta.get("name"))


class FolderSource:
    def __init__(
        self,
        folder: Path,
        on_update: Callable[[Contents], object],
        interval: float = 1.0,
        last_served: Sequence[dict[str, Any]] = (),
        origins: Mapping[Identity, str] | None = None,
    ) -> None:
        """``last_served``: the documents the agent served before it (re)started, the last good versions of the
        first load (without them a restart would drop every device whose file is broken at that moment);
        ``origins``: the file each of them came from (``Contents.origins`` of that time)."""
        self.folder = folder
        self._on_update = on_update
        self._interval = interval
        self._fingerprint: Fingerprint | None = None
        self._fingerprint_loaded = False
        self._good: dict[str, list[LoadedDocument]] = {}
        self._last_served = [LoadedDocument("(last served)", n, doc) for n, doc in enumerate(last_served)]
        self._origins = dict(origins) if origins is not None else None
        self._logged: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def _scan(self) -> Fingerprint:
        out: Fingerprint = {}
        for path in iter_cr_files([self.folder]):
            try:
                st = path.stat()
            except OSError:
                continue
            out[str(path)] = (st.st_mtime_ns, st.st_size)
        return out

    def load(self) -> Contents:
        """Read and validate the folder now; keep the last good version of broken files."""
        self._fingerprint = self._scan()
        report = validate_paths([self.folder])
        unreadable = {i.file for i in report.errors if i.index is None}
        bad_docs = {(i.file, i.index) for i in report.errors if i.index is not None}
        by_file: dict[str, list[LoadedDocument]] = {}
        for doc in report.documents:
            by_file.setdefault(doc.file, []).append(doc)
        current_files = {str(p) for p in iter_cr_files([self.folder])}
        first = self._fingerprint_loaded is False
        self._fingerprint_loaded = True
        previous = {_identity(d): d for d in self._last_served} if first else {}
        previous.update({_identity(d): d for docs in self._good.values() for d in docs})
        for file in current_files:
            if file in unreadable:
                continue  # keeps its last good documents
            kept: list[LoadedDocument] = []
            for doc in by_file.get(file, []):
                if (doc.file, doc.index) not in bad_docs:
                    kept.append(doc)
                elif (last := previous.get(_identity(doc))) is not None:
                    kept.append(last)
            self._good[file] = kept
        for gone in set(self._good) - current_files:
            del self._good[gone]
        if first and unreadable & current_files:
            # An unreadable file keeps what it held when it was last read: the documents recorded as coming from
            # it. Without that record (a store from before it was kept), whatever was served and is in no readable
            # file now stays with the first unreadable file, until it parses again.
            present = {_identity(d) for docs in self._good.values() for d in docs}
            for file in sorted(unreadable & current_files):
                self._good[file] = [
                    d
                    for d in self._last_served
                    if _identity(d) not in present
                    and (self._origins.get(_identity(d)) == file if self._origins is not None else True)
                ]
                present.update(_identity(d) for d in self._good[file])
        self._last_served = []
        self._one_per_identity(previous)
        self._log_issues(report)
        models: list[DeviceModelResource] = []
        devices: list[DeviceResource] = []
        for docs in self._good.values():
            for loaded in docs:
                if is_kind(loaded.doc, "DeviceModel"):
                    models.append(parse_model(loaded.doc))
                elif is_kind(loaded.doc, "Device"):
                    devices.append(parse_device(loaded.doc))
        origins = tuple(sorted((*_identity(d), file) for file, docs in self._good.items() for d in docs))
        return Contents(tuple(models), tuple(devices), report, origins)

    def _one_per_identity(self, previous: Mapping[Identity, LoadedDocument]) -> None:
        """One document per object: when two files define it, the one served so far stays (the validator names the
        duplicate by file order, which can be the original); the other is dropped, and the validator said so."""
        holders: dict[Identity, list[str]] = {}
        for file, docs in self._good.items():
            for doc in docs:
                holders.setdefault(_identity(doc), []).append(file)
        for ident, files in holders.items():
            if len(files) < 2:
                continue
            served = previous.get(ident)
            origin = self._origins.get(ident) if self._origins is not None else None  # after a restart
            if served is not None and served.file in files:
                keep = served.file
            elif origin in files:
                keep = origin
            else:
                keep = sorted(files)[0]
            for file in files:
                if file != keep:
                    self._good[file] = [d for d in self._good[file] if _identity(d) != ident]

    def _log_issues(self, report: ValidationReport) -> None:
        lines = {str(issue) for issue in report.issues}
        for line in sorted(lines - self._logged):
            if line.startswith("warning: "):
                log.warning("%s", line)
            else:
                log.error("%s (its last good version, if any, stays in use)", line)
        self._logged = lines

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="folder-source")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                if self._scan() != self._fingerprint:
                    contents = await asyncio.to_thread(self.load)
                    self._on_update(contents)
            except Exception:  # a watcher that dies silently would freeze the agent's view
                log.exception("reading %s failed; will retry", self.folder)
