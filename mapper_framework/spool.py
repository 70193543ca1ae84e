"""Store-and-forward on disk: the outbox written to a file while the agent is away, read back at start.

Without it, values collected during an agent outage live in memory only and a mapper restart (an update, a
power cut) loses them. The file holds the outbox as it is (latest value per device and property, plus pending
states), written atomically (temporary file + rename) at most every ``interval_s`` while reports fail, once
more at shutdown, and removed when everything has been delivered.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from mapper_framework.twin_report import DeviceKey, TwinReport

log = logging.getLogger(__name__)

FORMAT = 1


class Spool:
    def __init__(self, path: Path, limit: int, interval_s: float) -> None:
        self.path = path
        self.limit = limit
        self.interval_s = interval_s
        self._last_save = 0.0
        self.on_disk = path.exists()  # saves a stat() per send round when there is nothing to remove

    def due(self) -> bool:
        return time.monotonic() - self._last_save >= self.interval_s

    def save(self, twins: dict[DeviceKey, dict[str, TwinReport]], states: dict[DeviceKey, str]) -> None:
        """Write the pending twins and states (newest first when over ``limit``; the overflow is logged)."""
        pairs = [(k, t) for k, pending in twins.items() for t in pending.values()]
        if len(pairs) > self.limit:
            pairs.sort(key=lambda p: p[1].timestamp_ms, reverse=True)
            log.warning(
                "store-and-forward: %d twin(s) pending, %d kept on disk (report.spool_limit); the oldest %d are"
                " kept in memory only",
                len(pairs),
                self.limit,
                len(pairs) - self.limit,
            )
            pairs = pairs[: self.limit]
        rows = [[k[0], k[1], *t] for k, t in pairs]
        data: dict[str, Any] = {
            "format": FORMAT,
            "twins": rows,
            "states": [[k[0], k[1], s] for k, s in states.items()],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(data, out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)
        self.on_disk = True
        self._last_save = time.monotonic()
        log.info("store-and-forward: %d twin(s), %d state(s) saved to %s", len(rows), len(states), self.path)

    def load(self) -> tuple[dict[DeviceKey, dict[str, TwinReport]], dict[DeviceKey, str]]:
        """What an earlier run left; an unreadable file is reported, set aside, and nothing is loaded from it."""
        twins: dict[DeviceKey, dict[str, TwinReport]] = {}
        states: dict[DeviceKey, str] = {}
        if not self.path.exists():
            return twins, states
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            for ns, name, prop, value, type_, stamp, observed in data["twins"]:
                twins.setdefault((ns, name), {})[prop] = TwinReport(prop, value, type_, int(stamp), observed)
            for ns, name, state in data["states"]:
                states[(ns, name)] = state
        except (OSError, ValueError, KeyError, TypeError) as exc:
            broken = self.path.with_name(self.path.name + ".broken")
            log.error("store-and-forward file %s is unreadable (%s); moved to %s", self.path, exc, broken)
            self.path.replace(broken)
            self.on_disk = False
            return {}, {}
        count = sum(len(t) for t in twins.values())
        log.info("store-and-forward: %d twin(s), %d state(s) from the last run to deliver", count, len(states))
        return twins, states

    def clear(self) -> None:
        if self.on_disk:
            self.path.unlink(missing_ok=True)
            self.on_disk = False
            log.info("store-and-forward: everything delivered; %s removed", self.path)
