"""A real RTSP server playing a moving test pattern as H.264, for the ONVIF simulator, tests and benchmarks.

Run by the system Python (``/usr/bin/python3``), which has GStreamer's introspection bindings from Debian
(python3-gi, gir1.2-gst-rtsp-server-1.0); the project's virtualenv does not need them:

    /usr/bin/python3 gst_rtsp_server.py PORT WIDTH HEIGHT FPS [PATH ...]

PORT 0 takes any free port. Every PATH (default ``/stream``) serves the same pattern. Prints ``ready PORT`` (the
port really bound) once it listens and every stream's pipeline runs.

Each stream's pipeline is started at once and kept running, with or without clients. Why: GStreamer's server
otherwise builds a shared stream on the first DESCRIBE and tears it down when that client leaves, and a DESCRIBE
arriving during the teardown is answered 503 (seen here with two DESCRIBE-only connections back to back): a
client's probe followed at once by its real connection could fail now and then. Kept running, a stream is ready for
every client, and a client's first frame comes without waiting for the encoder to start.

It stops on SIGTERM or SIGINT, and when its standard input reaches end of file: the parent holds the other end of
that pipe, so a parent that dies without cleaning up (SIGKILL, a crashed test run) still takes the server with it
instead of leaving it holding the port.

Exit codes: 0 stopped, 2 cannot listen, 3 a Debian package is missing (the message names it), 4 a stream's
pipeline failed to start.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

# The elements of the pipeline and the Debian package each comes from (checked with dpkg -S on the plugin files).
ELEMENTS = {
    "videotestsrc": "gstreamer1.0-plugins-base",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "rtph264pay": "gstreamer1.0-plugins-good",
}
PACKAGES = "python3-gi gir1.2-gst-rtsp-server-1.0 " + " ".join(sorted(set(ELEMENTS.values())))


def pipeline(width: int, height: int, fps: int) -> str:
    """The launch line of one stream.

    A live source, so every client sees the same moment; the ``ball`` pattern moves, so consecutive frames differ
    (a frozen stream is then visible to a test); a keyframe each second so a client that joins late decodes within
    a second, and SPS/PPS repeated in-band for the same reason.
    """
    return (
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1"
        f" ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps}"
        " ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def main(argv: list[str]) -> int:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtsp", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtsp, GstRtspServer
    except (ImportError, ValueError) as exc:
        print(
            f"GStreamer's RTSP server is not available to {sys.executable}: {exc}. Hint: apt install {PACKAGES}",
            file=sys.stderr,
        )
        return 3
    port, width, height, fps = (int(a) for a in argv[:4])
    paths = argv[4:] or ["/stream"]
    Gst.init(None)
    missing = [
        f"{name} (apt install {package})" for name, package in ELEMENTS.items() if not Gst.ElementFactory.find(name)
    ]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}", file=sys.stderr)
        return 3
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    mounts = server.get_mount_points()
    factories = []
    for path in paths:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(pipeline(width, height, fps))
        factory.set_shared(True)  # one encoder per path, however many clients
        mounts.add_factory(path, factory)
        factories.append((path, factory))
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 2
    bound = server.get_bound_port()
    # The shared media a client will get: the factory caches it under the URL's port and path, so it is built
    # with the URL clients use.
    media = []
    for path, factory in factories:
        _result, url = GstRtsp.RTSPUrl.parse(f"rtsp://127.0.0.1:{bound}{path}")
        media.append((path, factory.construct(url)))
    loop = GLib.MainLoop()
    exit_code = [0]

    def announce() -> bool:
        print(f"ready {bound}", flush=True)
        return False

    def fail(message: str) -> bool:
        print(message, file=sys.stderr, flush=True)
        exit_code[0] = 4
        loop.quit()
        return False

    def prepare_all() -> None:
        # prepare() waits for the pipeline to preroll, which needs the main loop running: so not on its thread.
        # Our own prepare is never undone, so the media stays running between clients.
        for path, item in media:
            if item is None or not item.prepare(None):
                GLib.idle_add(fail, f"the pipeline of {path} did not start (see GStreamer's messages above)")
                return
        GLib.idle_add(announce)

    def quit_loop(*_: Any) -> bool:
        loop.quit()
        return False  # remove the source: once is enough

    def stdin_readable(fd: int, _condition: Any) -> bool:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.quit()
            return False
        return True  # the parent wrote something: ignore it, keep watching

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, quit_loop)
    GLib.io_add_watch(
        sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IOCondition.IN | GLib.IOCondition.HUP, stdin_readable
    )
    threading.Thread(target=prepare_all, name="prepare", daemon=True).start()
    loop.run()
    return exit_code[0]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
