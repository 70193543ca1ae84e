"""A real RTSP server playing a moving test pattern as H.264, for the ONVIF simulator, tests and benchmarks.

Run by the system Python (``/usr/bin/python3``), which has GStreamer's introspection bindings from Debian
(python3-gi, gir1.2-gst-rtsp-server-1.0); the project's virtualenv does not need them:

    /usr/bin/python3 gst_rtsp_server.py PORT WIDTH HEIGHT FPS [PATH ...]

Prints ``ready`` once the port listens. Every PATH (default ``/stream``) serves the same pattern.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        print(
            f"GStreamer's RTSP server is not available to {sys.executable}: {exc}. Hint: apt install python3-gi"
            " gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
            " gstreamer1.0-plugins-ugly",
            file=sys.stderr,
        )
        return 3
    port, width, height, fps = (int(a) for a in argv[:4])
    paths = argv[4:] or ["/stream"]
    Gst.init(None)
    if Gst.ElementFactory.find("x264enc") is None:
        print("x264enc missing. Hint: apt install gstreamer1.0-plugins-ugly", file=sys.stderr)
        return 3
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    # A live source, so every client sees the same moment; a keyframe each second so a client that joins
    # late decodes within a second; SPS/PPS repeated in-band for the same reason.
    launch = (
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1"
        f" ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps}"
        " ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    mounts = server.get_mount_points()
    for path in paths:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)  # one encoder per path, however many clients
        mounts.add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 2
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
