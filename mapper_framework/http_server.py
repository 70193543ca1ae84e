"""A small asyncio HTTP/1.1 server for the mapper's GET-only REST API.

The REST API needs routing, JSON bodies and keep-alive, nothing more; a full web framework would cost a
Raspberry Pi about 12 MB of resident memory for that. Requests are bounded (8 KiB of head, a 30 s idle
timeout), malformed ones get 400, other methods 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

MAX_HEAD = 8192
IDLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Response:
    """An answer. With ``stream``, ``body`` is ignored and the chunks are sent as they come, until the
    iterator ends or the client goes away (the connection is then closed: there is no length to frame it)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(data).encode())

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode(), "text/plain; version=0.0.4; charset=utf-8")


Handler = Callable[[dict[str, str]], Awaitable[Response]]


class Router:
    """Patterns like ``/api/v1/device/{namespace}/{name}``; each ``{x}`` matches one path segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[list[str], Handler]] = []

    def get(self, pattern: str, handler: Handler) -> None:
        self._routes.append((pattern.strip("/").split("/"), handler))

    def match(self, path: str) -> tuple[Handler, dict[str, str]] | None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        for pattern, handler in self._routes:
            if len(pattern) != len(parts):
                continue
            params: dict[str, str] = {}
            for want, got in zip(pattern, parts, strict=True):
                if want.startswith("{") and want.endswith("}"):
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return handler, params
        return None


class HttpServer:
    def __init__(self, router: Router, host: str, port: int) -> None:
        self.router = router
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return whether the connection stays open."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        except asyncio.LimitOverrunError:
            await self._send(writer, Response.json({"error": "request head too large"}, 431), False)
            return False
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._send(writer, Response.json({"error": "malformed request line"}, 400), False)
            return False
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        length = headers.get("content-length", "0")
        # ASCII digits only: str.isdigit() also takes '²', which int() refuses.
        if not (length.isascii() and length.isdigit()) or int(length) > 65536:
            await self._send(writer, Response.json({"error": "bad or too large Content-Length"}, 400), False)
            return False
        if int(length):
            # GET bodies mean nothing here; drain them, within the idle timeout (a body announced and never sent
            # must not hold the connection forever).
            await asyncio.wait_for(reader.readexactly(int(length)), IDLE_TIMEOUT)
        if method not in ("GET", "HEAD"):
            await self._send(
                writer,
                Response.json({"error": f"method {method} not allowed: this API is GET-only"}, 405),
                keep,
                extra="Allow: GET, HEAD\r\n",
            )
            return keep
        found = self.router.match(urlsplit(target).path)
        if found is None:
            response = Response.json({"error": f"no route for {urlsplit(target).path}"}, 404)
        else:
            handler, params = found
            try:
                response = await handler(params)
            except Exception:
                log.exception("REST %s failed", target)
                response = Response.json({"error": "internal error; see the mapper log"}, 500)
        if response.stream is not None:
            await self._stream(writer, response, head_only=method == "HEAD")
            return False
        await self._send(writer, response, keep, head_only=method == "HEAD")
        return keep

    async def _stream(self, writer: asyncio.StreamWriter, r: Response, head_only: bool) -> None:
        assert r.stream is not None
        head = (
            f"HTTP/1.1 {r.status} {HTTPStatus(r.status).phrase}\r\nContent-Type: {r.content_type}\r\n"
            "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1"))
        try:
            await writer.drain()
            if head_only:
                return
            async for chunk in r.stream:
                writer.write(chunk)
                # drain() waits while a slow client's buffer is full: that client falls behind (its source
                # skips frames for it), nobody else does.
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the source failed mid-stream (a camera gone): the status line is long sent
            log.warning("a streamed answer ended early: %s", exc)
        finally:
            close = getattr(r.stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def _send(
        self, writer: asyncio.StreamWriter, r: Response, keep: bool, head_only: bool = False, extra: str = ""
    ) -> None:
        reason = HTTPStatus(r.status).phrase
        head = (
            f"HTTP/1.1 {r.status} {reason}\r\nContent-Type: {r.content_type}\r\nContent-Length: {len(r.body)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n{extra}\r\n"
        )
        writer.write(head.encode("latin-1") + (b"" if head_only else r.body))
        await writer.drain()
