"""The local controller (Sedna's LC) for jobs run on this machine.

Workers report to ``POST /sedna/workers/{worker}/info`` (Sedna's route and body, answered with Sedna's
``{"Status": 200, "Message": "OK"}``); each report is routed by ``ownerKind`` and ``ownerName`` to the job it belongs
to, which turns it into status in the embedded status store. A report for a job that is not running here is
refused with 404 and a message naming the job, instead of vanishing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edgeai.lc_client import WorkerMessage

log = logging.getLogger(__name__)

Handler = Callable[[WorkerMessage], None]


class LocalController:
    def __init__(self, bind: str = "127.0.0.1", port: int = 9100) -> None:
        self.bind = bind
        self.port = port
        self._handlers: dict[tuple[str, str, str], Handler] = {}
        self._runner: web.AppRunner | None = None
        self.received = 0
        self.refused = 0

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    def register(self, owner_kind: str, namespace: str, name: str, handler: Handler) -> None:
        self._handlers[(owner_kind.lower(), namespace, name)] = handler

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/sedna/workers/{worker}/info", self._info)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("local controller on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _refuse(self, status: int, message: str) -> web.Response:
        self.refused += 1
        log.warning("worker report refused: %s", message)
        return web.json_response({"Status": status, "Message": message}, status=status)

    async def _info(self, request: web.Request) -> web.Response:
        worker = request.match_info["worker"]
        try:
            body: Any = await request.json()
            msg = WorkerMessage.from_json(body)
        except ValueError as exc:
            return self._refuse(400, f"worker {worker}: {exc}")
        if msg.name != worker:
            return self._refuse(400, f"worker name in the path ({worker}) differs from the body's name ({msg.name})")
        handler = self._handlers.get((msg.owner_kind, msg.namespace, msg.owner_name))
        if handler is None:
            return self._refuse(404, f"no {msg.owner_kind} {msg.namespace}/{msg.owner_name} runs here")
        self.received += 1
        try:
            handler(msg)
        except Exception as exc:
            log.exception("report of %s could not be applied", worker)
            return self._refuse(500, f"report of {worker} could not be applied: {exc}")
        return web.json_response({"Status": 200, "Message": "OK"})
