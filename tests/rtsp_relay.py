"""A real RTSP stream whose video ffmpeg encodes: ffmpeg sends its ``testsrc`` pattern as H.264 RTP over UDP on
loopback and GStreamer's RTSP server (mappers/onvif/gst_rtsp_server.py, run by the system Python) re-serves it."""

from __future__ import annotations

import select
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from mappers.onvif import rtsp_server
from mappers.onvif.rtsp_server import RtspServer, rtsp_describe


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Run by the system Python: GStreamer's RTSP server from mappers/onvif, with its pipeline swapped for one that
# re-serves the H.264 RTP ffmpeg sends to a UDP port (the server script itself is left as it is).
RELAY = """
import sys
sys.path.insert(0, sys.argv[1])
import gst_rtsp_server as server
udp_port = int(sys.argv[2])
server.pipeline = lambda width, height, fps: (
    f"( udpsrc port={udp_port} address=127.0.0.1"
    ' caps="application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96"'
    " ! rtph264depay ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
sys.exit(server.main(sys.argv[3:]))
"""


class RtspRelay:
    """ffmpeg encoding testsrc to H.264 RTP/UDP, re-served over RTSP by GStreamer; the server can be restarted."""

    def __init__(self) -> None:
        self.udp_port = free_udp_port()
        self.rtsp_port = 0
        self.server: RtspServer | None = None
        self.feeder = subprocess.Popen(
            [
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
                "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p",
                "-f", "rtp", "-payload_type", "96", f"rtp://127.0.0.1:{self.udp_port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.rtsp_port}/stream"

    def start_server(self) -> None:
        log = tempfile.TemporaryFile()  # noqa: SIM115 - the RtspServer handle closes it
        onvif_dir = str(Path(rtsp_server.__file__).parent)
        args = [onvif_dir, str(self.udp_port), str(self.rtsp_port), "320", "240", "25", "/stream"]
        proc = subprocess.Popen(
            [rtsp_server.SYSTEM_PYTHON, "-c", RELAY, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
        )
        self.server = RtspServer(self.rtsp_port, 320, 240, 25, ["/stream"], proc, log)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        words = proc.stdout.readline().decode().split() if ready else []
        if len(words) != 2 or words[0] != "ready":
            self.server.close()
            raise RuntimeError(f"the RTSP relay did not start: {self.server.errors()}")
        self.rtsp_port = self.server.port = int(words[1])
        deadline = time.monotonic() + 15
        while "H264" not in self._describe():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.url} does not play: {self.server.errors()}")
            time.sleep(0.1)

    def _describe(self) -> str:
        try:
            return rtsp_describe(self.url, timeout=2)
        except (OSError, RuntimeError):
            return ""

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def close(self) -> None:
        self.stop_server()
        self.feeder.terminate()
        self.feeder.wait(10)
