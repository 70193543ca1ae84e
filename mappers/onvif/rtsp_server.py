"""Start and stop the test-pattern RTSP server (:mod:`mappers.onvif.gst_rtsp_server`) as a child process.

Why GStreamer's RTSP server: it is a real, widely deployed RTSP implementation packaged by Debian
(gir1.2-gst-rtsp-server-1.0), serves many clients from one encoder, and its H.264 over RTP/RTSP is what IP
cameras send. The alternatives here were rtsp-server-perl fed by an ffmpeg publisher (two processes, and the
stream exists only while the publisher runs) or a media server that Debian does not package.

Why a child process run by ``/usr/bin/python3``: GStreamer's Python bindings (python3-gi) are a Debian package
for the system Python; building PyGObject into the virtualenv needs a C toolchain and the GLib headers. A child
process also keeps GLib's main loop away from the caller's asyncio loop.

    server = start_rtsp_server(0)          # any free port; 640x480, 25 fps, H.264 at /stream
    server.url                             # rtsp://127.0.0.1:PORT/stream
    server.close()                         # or: with start_rtsp_server(0) as server: ...
"""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")
DEBIAN_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
    " gstreamer1.0-plugins-ugly"
)


class RtspServerError(RuntimeError):
    """The RTSP server could not start, or a stream of it cannot be played."""


@dataclass
class RtspServer:
    """A running server on 127.0.0.1:``port``; ``url`` is its first stream, ``url_of(path)`` any other."""

    port: int
    width: int
    height: int
    fps: int
    paths: list[str]
    process: subprocess.Popen[bytes] = field(repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.url_of(self.paths[0])

    def url_of(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}{path}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def errors(self) -> str:
        """What the server wrote to its standard error so far (GStreamer warnings, the reason it stopped)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def start_rtsp_server(
    port: int = 0,
    width: int = 640,
    height: int = 480,
    fps: int = 25,
    paths: list[str] | None = None,
    timeout: float = 15.0,
) -> RtspServer:
    """Start the server on 127.0.0.1:``port`` (0: any free port) with one stream per path (default ``/stream``).

    Returns once every stream is playable: the server listens and answers an RTSP DESCRIBE on each path with an
    H.264 session description, which it can only do after the pipeline (test source, encoder) has started.
    Raises :class:`RtspServerError` naming the Debian package to install when GStreamer or a plugin is missing.
    """
    python = SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else shutil.which("python3")
    if python is None:
        raise RtspServerError(f"no system python3 to run GStreamer's RTSP server. Hint: apt install {DEBIAN_PACKAGES}")
    paths = paths or ["/stream"]
    # stderr goes to a file, not a pipe: nobody reads it while the server runs, and GStreamer warnings piling up
    # in a full pipe would block the server. stdin is a pipe we never write: its end of file tells the child that
    # we are gone.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the server handle owns it and closes it
    proc = subprocess.Popen(
        [python, str(SCRIPT), str(port), str(width), str(height), str(fps), *paths],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    server = RtspServer(port, width, height, fps, paths, proc, log)
    deadline = time.monotonic() + timeout
    try:
        server.port = _wait_ready(server, deadline)
        for path in paths:
            _wait_playable(server, server.url_of(path), deadline)
    except BaseException:
        server.close()
        raise
    return server


def _wait_ready(server: RtspServer, deadline: float) -> int:
    """The port from the child's ``ready PORT`` line."""
    stdout = server.process.stdout
    assert stdout is not None
    while time.monotonic() < deadline:
        readable, _, _ = select.select([stdout], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        if readable:
            line = stdout.readline().decode(errors="replace").split()
            if len(line) == 2 and line[0] == "ready" and line[1].isdigit():
                return int(line[1])
            if not line:  # end of file: the child is gone
                break
        if server.process.poll() is not None:
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=1)  # it may be writing its reason and exiting: let it finish
    code = server.process.poll()
    if code is None:
        raise RtspServerError(f"the RTSP server did not start within the time given: {server.errors()}")
    raise RtspServerError(f"the RTSP server exited ({code}): {server.errors() or 'no message'}")


def _wait_playable(server: RtspServer, url: str, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        if not server.running:
            raise RtspServerError(f"the RTSP server exited ({server.process.returncode}): {server.errors()}")
        try:
            sdp = rtsp_describe(url, timeout=max(0.5, deadline - time.monotonic()))
        except (OSError, RtspServerError) as exc:
            last = str(exc)
            time.sleep(0.1)
            continue
        if "H264" not in sdp:
            raise RtspServerError(f"{url} does not offer H.264: {sdp!r}")
        return
    raise RtspServerError(f"{url} is not playable: {last or 'no answer'}. {server.errors()}".strip())


def rtsp_describe(url: str, timeout: float = 5.0) -> str:
    """The session description (SDP) an RTSP server gives for ``url``, from one DESCRIBE request.

    Raises :class:`RtspServerError` for any answer but 200, and OSError when the server cannot be reached.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "rtsp" or not parts.hostname:
        raise RtspServerError(f"not an rtsp:// URL: {url!r}")
    request = f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: kubeedge-mapper\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port or 554), timeout=timeout) as sock:
        sock.sendall(request.encode())
        reader = sock.makefile("rb")
        status = reader.readline().decode("latin-1").strip()
        headers: dict[str, str] = {}
        while line := reader.readline().decode("latin-1").strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        body = reader.read(length) if length > 0 else b""
    fields = status.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("RTSP/") or fields[1] != "200":
        raise RtspServerError(f"DESCRIBE {url}: {status or 'no answer'}")
    return body.decode(errors="replace")
