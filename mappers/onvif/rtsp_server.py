"""Start and stop the test-pattern RTSP server (:mod:`mappers.onvif.gst_rtsp_server`) as a child process.

Why GStreamer's RTSP server: it is a real, widely deployed RTSP implementation packaged by Debian
(gir1.2-gst-rtsp-server-1.0), serves many clients from one encoder, and its H.264 over RTP/RTSP is what IP
cameras send. The alternatives here were rtsp-server-perl fed by an ffmpeg publisher (two processes, and the
stream exists only while the publisher runs) or a media server that Debian does not package.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")


class RtspServerError(RuntimeError):
    """The RTSP server could not start."""


@dataclass
class RtspServer:
    """A running server: ``url`` is its first stream."""

    port: int
    width: int
    height: int
    fps: int
    paths: list[str]
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return self.url_of(self.paths[0])

    def url_of(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_rtsp_server(
    port: int, width: int = 640, height: int = 480, fps: int = 25, paths: list[str] | None = None
) -> RtspServer:
    """Start the server on 127.0.0.1:``port`` and return once it accepts connections."""
    python = SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else shutil.which("python3")
    if python is None:
        raise RtspServerError("no system python3 to run GStreamer's RTSP server")
    paths = paths or ["/stream"]
    proc = subprocess.Popen(
        [python, str(SCRIPT), str(port), str(width), str(height), str(fps), *paths],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server = RtspServer(port, width, height, fps, paths, proc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise RtspServerError(f"the RTSP server exited ({proc.returncode}): {err}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return server
        time.sleep(0.05)
    server.close()
    raise RtspServerError(f"the RTSP server did not listen on 127.0.0.1:{port} within 15 s")
