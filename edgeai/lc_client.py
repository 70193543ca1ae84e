"""Worker -> local controller reports, in Sedna's wire format.

``POST {LC_SERVER}/sedna/workers/{worker}/info`` with Sedna's ``MessageContent`` body. Two things differ from
Sedna's library on purpose: ``ownerName`` is the real job or service name (Sedna sends ``"sedna"`` for every joint
inference service, so its metrics never land), and every inference is counted once (Sedna counts hard examples
twice, so its upload ratio reads 0.50 when 99% went to the cloud).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgeai.config import WorkerEnv

log = logging.getLogger(__name__)

KIND_JOINT_INFERENCE = "jointinferenceservice"
KIND_INCREMENTAL_LEARNING = "incrementallearningjob"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WorkerMessage:
    """Sedna's ``MessageContent``: what a worker tells its local controller."""

    name: str
    namespace: str
    owner_name: str
    owner_kind: str
    kind: str
    status: str = ""
    owner_info: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "ownerName": self.owner_name,
            "ownerKind": self.owner_kind,
            "kind": self.kind,
            "results": self.results,
            "ownerInfo": self.owner_info,
        }
        if self.status:
            body["status"] = self.status
        return body

    @classmethod
    def from_json(cls, body: Any) -> WorkerMessage:
        if not isinstance(body, dict):
            raise ValueError("body: expected a JSON object")
        for key in ("name", "ownerName", "ownerKind", "kind"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise ValueError(f"body.{key}: required string")
        info = body.get("ownerInfo") or {}
        results = body.get("results") or []
        if not isinstance(info, dict):
            raise ValueError("body.ownerInfo: expected an object")
        if not isinstance(results, list):
            raise ValueError("body.results: expected a list")
        return cls(
            name=body["name"],
            namespace=str(body.get("namespace") or "default"),
            owner_name=body["ownerName"],
            owner_kind=body["ownerKind"].lower(),
            kind=body["kind"],
            status=str(body.get("status") or ""),
            owner_info=info,
            results=[r for r in results if isinstance(r, dict)],
        )


def post_message(lc_server: str, message: WorkerMessage, timeout_s: float = 2.0) -> None:
    """Send one report; raises OSError (URLError included) when the controller cannot be reached."""
    url = f"{lc_server.rstrip('/')}/sedna/workers/{message.name}/info"
    data = json.dumps(message.to_json()).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        resp.read()


class LCReporter:
    """Sends a worker's counters every ``LC_PERIOD`` seconds from a daemon thread, and once more when closed."""

    def __init__(self, env: WorkerEnv, owner_kind: str, kind: str, info: Callable[[], dict[str, Any]]) -> None:
        self.env = env
        self.owner_kind = owner_kind
        self.kind = kind
        self._info = info
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failed = 0
        self.last_error: str | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lc-reporter", daemon=True)
            self._thread.start()

    def report(self, status: str = "", results: list[dict[str, Any]] | None = None) -> bool:
        msg = WorkerMessage(
            name=self.env.worker_name,
            namespace=self.env.namespace,
            owner_name=self.env.job_name,
            owner_kind=self.owner_kind,
            kind=self.kind,
            status=status,
            owner_info=self._info(),
            results=results or [],
        )
        try:
            post_message(self.env.lc_server, msg)
        except (OSError, urllib.error.URLError) as exc:
            self.failed += 1
            if self.last_error is None:
                log.warning("local controller %s unreachable: %s (reports continue)", self.env.lc_server, exc)
            self.last_error = str(exc)
            return False
        self.sent += 1
        self.last_error = None
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.env.lc_period_s):
            self.report()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            self.report()
