"""Sedna's ``BigModelService``: the cloud worker of a joint inference service.

Serves ``POST /{service}/predict`` (``{"data": [...]}`` -> ``{"result": [...]}``) and ``GET /{service}`` (the
routes) on ``BIG_MODEL_BIND_PORT`` (5000), as Sedna's does. It also answers on ``/sedna/...``, the path Sedna's own
edge workers use whatever the service is called. Predictions run one at a time on the event loop's executor
thread, so an estimator need not be thread-safe and the server keeps accepting while a prediction runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any

from aiohttp import web

from edgeai.config import WorkerEnv
from edgeai.estimator import Estimator

log = logging.getLogger(__name__)


def _plain(result: Any) -> Any:
    tolist = getattr(result, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(result, tuple):
        return [_plain(r) for r in result]
    if isinstance(result, list):
        return [_plain(r) for r in result]
    return result


class BigModelService:
    """``BigModelService(estimator).start()``: load ``MODEL_URL`` and serve predictions until stopped."""

    def __init__(self, estimator: Any, config: WorkerEnv | None = None) -> None:
        self.env = config or WorkerEnv.from_env()
        self.estimator = Estimator(estimator)
        self.served = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None

    def _predict_sync(self, data: Any, kwargs: dict[str, Any]) -> Any:
        with self._lock:
            return _plain(self.estimator.predict(_array(data), **kwargs))

    async def _predict(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(body, dict) or "data" not in body:
            return web.json_response({"error": "body must be an object with a 'data' field"}, status=400)
        kwargs = {k: v for k, v in body.items() if k not in ("data", "callback", "post_process")}
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, self._predict_sync, body["data"], kwargs)
        except Exception as exc:  # the estimator's own failure: tell the caller, keep serving
            self.failed += 1
            log.warning("predict failed: %s", exc)
            return web.json_response({"error": f"predict failed: {exc}"}, status=500)
        self.served += 1
        return web.json_response({"result": result})

    async def _routes(self, request: web.Request) -> web.Response:
        name = request.match_info["service"]
        return web.json_response({"infos": [{"path": f"/{name}/predict", "methods": ["POST"]}]})

    async def serve(self, ready: threading.Event | None = None) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT when run by :meth:`start`)."""
        if self.env.model_url:
            await asyncio.get_running_loop().run_in_executor(None, self.estimator.load, self.env.model_url)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{service}/predict", self._predict)
        app.router.add_get("/{service}", self._routes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.env.big_model_bind_ip, self.env.big_model_bind_port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.env.big_model_bind_port
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        log.info("big model %s serving on %s:%s", self.env.job_name, self.env.big_model_bind_ip, self.port)
        if ready is not None:
            ready.set()
        try:
            await self._stopped.wait()
        finally:
            await self._runner.cleanup()

    def start(self) -> None:
        """Blocking, as in Sedna: serve until SIGTERM or SIGINT."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            await self.serve()

        asyncio.run(main())

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)


def _array(data: Any) -> Any:
    """Request data as a numpy array when numpy is there (what Sedna's estimators receive)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with the ai extra
        return data
    try:
        return np.asarray(data)
    except (ValueError, TypeError):
        return data
