"""Status of local jobs in Sedna's shapes: conditions appended on change, heartbeats, key/value metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from edgeai.lc_client import now_iso


@dataclass
class Conditions:
    """Sedna's condition list: a new entry when the condition changes, the heartbeat refreshed otherwise."""

    items: list[dict[str, Any]] = field(default_factory=list)
    limit: int = 50

    def set(self, ctype: str, reason: str = "", message: str = "", **extra: Any) -> bool:
        """Record a condition; True when it differs from the current one."""
        now = now_iso()
        cur = self.items[-1] if self.items else None
        same = (
            cur is not None
            and cur["type"] == ctype
            and cur.get("reason") == reason
            and cur.get("message") == message
            and all(cur.get(k) == v for k, v in extra.items())
        )
        if same and cur is not None:
            cur["lastHeartbeatTime"] = now
            return False
        entry: dict[str, Any] = {
            "type": ctype,
            "status": "True",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }
        entry.update(extra)
        self.items.append(entry)
        del self.items[: -self.limit]
        return True

    @property
    def current(self) -> dict[str, Any] | None:
        return self.items[-1] if self.items else None


def metrics_list(info: dict[str, Any]) -> list[dict[str, str]]:
    """A worker's ``ownerInfo`` as Sedna's ``status.metrics``: key/value strings, times left out."""
    out = []
    for key, value in info.items():
        if key in ("startTime", "updateTime"):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        out.append({"key": key, "value": text})
    return out
