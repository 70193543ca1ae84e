"""The REST API's HTTP server against raw sockets: keep-alive, HEAD, and every way a request can be wrong."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest

from mapper_framework.http_server import HttpServer, Response, Router


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    router = Router()

    async def hello(params: dict[str, str]) -> Response:
        return Response.json({"hello": params["who"]})

    async def boom(params: dict[str, str]) -> Response:
        raise RuntimeError("kaput")

    router.get("/hello/{who}", hello)
    router.get("/boom", boom)
    srv = HttpServer(router, "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.stop()


async def exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    writer.close()
    return data


def parse(block: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = block.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_keep_alive_serves_several_requests_on_one_connection(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for who in ("a", "b%20c"):
        writer.write(f"GET /hello/{who} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers, _ = parse(head)
        body = await reader.readexactly(int(headers["content-length"]))
        assert status == 200 and headers["connection"] == "keep-alive"
        assert json.loads(body) == {"hello": "a" if who == "a" else "b c"}
    writer.close()


async def test_errors(server: HttpServer) -> None:
    status, headers, body = parse(await exchange(server.port, b"POST /hello/a HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert status == 405 and headers["allow"] == "GET, HEAD" and b"GET-only" in body
    status, _, body = parse(await exchange(server.port, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert status == 404 and json.loads(body) == {"error": "no route for /nope"}
    status, _, body = parse(await exchange(server.port, b"GARBAGE\r\n\r\n"))
    assert status == 400 and b"malformed request line" in body
    status, _, body = parse(await exchange(server.port, b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert status == 500 and b"see the mapper log" in body and b"kaput" not in body
    status, _, _ = parse(await exchange(server.port, b"GET /hello/a HTTP/1.1\r\nContent-Length: x\r\n\r\n"))
    assert status == 400
    huge = b"GET /hello/a HTTP/1.1\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n"
    status, _, _ = parse(await exchange(server.port, huge))
    assert status == 431
    # A digit that is not ASCII ('²' passes str.isdigit, int() refuses it): 400, not a dropped connection.
    status, _, _ = parse(
        await exchange(server.port, "GET /hello/a HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"))
    )
    assert status == 400


async def test_a_body_announced_and_never_sent_does_not_hold_the_connection(
    server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mapper_framework.http_server as http_server

    monkeypatch.setattr(http_server, "IDLE_TIMEOUT", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /hello/a HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the idle timeout, not held
    writer.close()


async def test_head_and_http_1_0(server: HttpServer) -> None:
    data = await exchange(server.port, b"HEAD /hello/a HTTP/1.1\r\nConnection: close\r\n\r\n")
    status, headers, body = parse(data)
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""
    status, headers, body = parse(await exchange(server.port, b"GET /hello/z HTTP/1.0\r\n\r\n"))
    assert status == 200 and headers["connection"] == "close" and json.loads(body) == {"hello": "z"}


async def test_a_stream_whose_source_fails_ends_with_one_line_not_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    from collections.abc import AsyncIterator as Frames

    from mapper_framework.driver import StreamNotSupported

    async def source() -> Frames[bytes]:
        yield b"part one"
        raise StreamNotSupported("device default/cam: stream rtsp://***@cam/stream ended")

    router = Router()

    async def live(params: dict[str, str]) -> Response:
        return Response(200, b"", "multipart/x-mixed-replace; boundary=x", source())

    router.get("/live", live)
    srv = HttpServer(router, "127.0.0.1", 0)
    await srv.start()
    try:
        caplog.set_level(logging.WARNING)
        data = await exchange(srv.port, b"GET /live HTTP/1.1\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"part one")
        said = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.getMessage() for r in said] == [
            "a streamed answer ended early: device default/cam: stream rtsp://***@cam/stream ended"
        ]
        assert all(r.exc_info is None for r in said)
    finally:
        await srv.stop()
