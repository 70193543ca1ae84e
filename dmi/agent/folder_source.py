"""Devices and models from a folder of CR YAML, watched for changes.

The folder is polled (cheap ``stat`` calls; works on every filesystem, bind
mounts and ConfigMap volumes included). On a change every file is validated;
a file with errors keeps contributing the objects of its last good version,
so a typo never removes a working device, and its errors are logged with file,
document and field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dmi.resources import DeviceModelResource, DeviceResource, is_kind, parse_device, parse_model
from dmi.validate import LoadedDocument, ValidationReport, iter_cr_files, validate_paths

log = logging.getLogger(__name__)

Fingerprint = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Contents:
    models: tuple[DeviceModelResource, ...]
    devices: tuple[DeviceResource, ...]
    report: ValidationReport


class FolderSource:
    def __init__(self, folder: Path, on_update: Callable[[Contents], object], interval: float = 1.0) -> None:
        self.folder = folder
        self._on_update = on_update
        self._interval = interval
        self._fingerprint: Fingerprint | None = None
        self._good: dict[str, list[LoadedDocument]] = {}
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
        bad = report.invalid_files()
        by_file: dict[str, list[LoadedDocument]] = {}
        for doc in report.documents:
            by_file.setdefault(doc.file, []).append(doc)
        current_files = {str(p) for p in iter_cr_files([self.folder])}
        for file in current_files | set(by_file):
            if file in bad:
                continue
            self._good[file] = by_file.get(file, [])
        for gone in set(self._good) - current_files:
            del self._good[gone]
        self._log_issues(report)
        models: list[DeviceModelResource] = []
        devices: list[DeviceResource] = []
        for docs in self._good.values():
            for loaded in docs:
                if is_kind(loaded.doc, "DeviceModel"):
                    models.append(parse_model(loaded.doc))
                elif is_kind(loaded.doc, "Device"):
                    devices.append(parse_device(loaded.doc))
        return Contents(tuple(models), tuple(devices), report)

    def _log_issues(self, report: ValidationReport) -> None:
        lines = {str(issue) for issue in report.issues}
        for line in sorted(lines - self._logged):
            if line.startswith("warning: "):
                log.warning("%s", line)
            else:
                log.error("%s (the file's last good version stays in use)", line)
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
