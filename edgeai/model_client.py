"""The edge worker's client of the big model: Sedna's wire format, a hard time limit, no stall.

``POST http://{BIG_MODEL_IP}:{BIG_MODEL_PORT}/{service}/predict`` with ``{"data": [...]}``, answer
``{"result": [...]}``. Sedna's client retries five times three seconds apart, so one hard example costs 12 s when the
big model is down; here one attempt is bounded by ``timeout_s`` (default 1 s) and, after a failure, the big model is
not asked again for a short back-off (0.5 s doubling to 5 s), so a dead cloud costs a fallback to the edge result,
not a stall. A Sedna big model serves ``/sedna/predict`` whatever the service is called; a 404 on our path makes
the client try that one.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from typing import Any


class CloudUnavailable(Exception):
    """The big model did not answer usefully; the message says why."""


@dataclass
class CloudStats:
    requests: int = 0
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    last_error: str | None = None


class ModelClient:
    def __init__(
        self,
        service: str,
        host: str,
        port: int,
        timeout_s: float = 1.0,
        backoff_s: tuple[float, float] = (0.5, 5.0),
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._backoff_min, self._backoff_max = backoff_s
        self._backoff = 0.0
        self._retry_at = 0.0
        self._conn: http.client.HTTPConnection | None = None
        self.path = f"/{service}/predict"
        self.stats = CloudStats()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def inference(self, data: Any, **kwargs: Any) -> dict[str, Any]:
        """The big model's answer ``{"result": ...}``; raises CloudUnavailable within ``timeout_s``."""
        now = time.monotonic()
        if now < self._retry_at:
            self.stats.skipped += 1
            raise CloudUnavailable(f"big model at {self.url} is backing off after: {self.stats.last_error}")
        self.stats.requests += 1
        payload = data.tolist() if hasattr(data, "tolist") else data
        body = json.dumps({"data": payload}).encode()
        try:
            status, answer = self._post(self.path, body)
            if status == 404 and self.path != "/sedna/predict":
                status, answer = self._post("/sedna/predict", body)
                if status == 200:
                    self.path = "/sedna/predict"
            if status != 200:
                raise CloudUnavailable(f"big model at {self.url} answered HTTP {status}: {answer[:200]!r}")
            try:
                result = json.loads(answer)
            except json.JSONDecodeError:
                raise CloudUnavailable(f"big model at {self.url} answered something that is not JSON") from None
            if not isinstance(result, dict) or "result" not in result:
                raise CloudUnavailable(f"big model at {self.url} answered without a 'result' field")
        except CloudUnavailable as exc:
            self._failed(str(exc))
            raise
        except (OSError, http.client.HTTPException) as exc:
            reason = "timed out" if isinstance(exc, (TimeoutError, socket.timeout)) else str(exc) or type(exc).__name__
            self._failed(f"big model at {self.url}: {reason}")
            raise CloudUnavailable(self.stats.last_error) from None
        self.stats.answered += 1
        self._backoff = 0.0
        self._retry_at = 0.0
        return result

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):
            conn = self._conn
            if conn is None:
                conn = self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server closed: one fresh attempt, then give up.
                self.close()
                if attempt:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def _failed(self, reason: str) -> None:
        self.stats.failed += 1
        self.stats.last_error = reason
        self.close()
        self._backoff = min(self._backoff_max, max(self._backoff_min, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
