"""ONVIF frames: frames/s the mapper's MJPEG stream delivers from a 640x480 25 fps camera, and what it costs.

Real processes: `mapper simulate onvif` (the simulated camera and GStreamer's RTSP server playing H.264), a
recording DMI server (bench/_dmi_recorder.py) and `mapper run onvif`. Consumers read
GET /api/v1/stream/default/cam/saveFrame over HTTP for the window. Printed, for one consumer and for two:
frames/s each consumer received, the gap between frames p50/p99, CPU % of the mapper (the Python process), of
its ffmpeg decoder child and both, and their peak RSS. Baseline in the same run: a bare ffmpeg doing the same
decode + JPEG encode to /dev/null (the cost of the work itself), and a bare decode (`-f null`).

    .venv/bin/python bench/onvif_frames.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._measure import CpuWindow, peak_rss_mb, percentile, wait_for_socket
from tests.modbus_peers import free_port

ROOT = Path(__file__).resolve().parent.parent

PY = [sys.executable]


def camera_docs(port: int, secret: Path) -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all((ROOT / "crds/samples/onvif-camera.yaml").read_text()))
    device = docs[1]
    device["metadata"]["name"] = "cam"
    device["spec"]["protocol"]["configData"].update({"url": f"127.0.0.1:{port}", "password": str(secret)})
    frames_dir = str(secret.parent / "frames")
    # The stream only: string twins every 10 s, no saveFrame captures competing for the CPU measured.
    device["spec"]["properties"] = [
        p for p in device["spec"]["properties"] if p["name"] in ("getURI", "deviceInfo", "saveFrame")
    ]
    device["spec"].pop("methods", None)
    for p in device["spec"]["properties"]:
        p["collectCycle"] = p["reportCycle"] = 10_000 if p["name"] != "saveFrame" else 3_600_000
        if p["name"] == "saveFrame":
            p["visitors"]["configData"]["outputDir"] = frames_dir
    return docs


async def consume(url: str, seconds: float, gaps: list[float]) -> int:
    frames = 0
    last = 0.0
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        answer.raise_for_status()
        reader = aiohttp.MultipartReader.from_response(answer)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            part = await reader.next()
            if part is None:
                break
            assert isinstance(part, aiohttp.BodyPartReader)
            await part.read()
            now = time.monotonic()
            if last:
                gaps.append((now - last) * 1000)
            last = now
            frames += 1
    return frames


def decoder_of(pid: int) -> psutil.Process | None:
    for child in psutil.Process(pid).children(recursive=True):
        if "ffmpeg" in child.name():
            return child
    return None


def run_consumers(url: str, consumers: int, seconds: float, mapper_pid: int) -> dict[str, Any]:
    async def go() -> tuple[list[list[float]], dict[str, float]]:
        gaps: list[list[float]] = [[] for _ in range(consumers)]
        tasks = [asyncio.create_task(consume(url, seconds + 3, gaps[i])) for i in range(consumers)]
        await asyncio.sleep(3)  # decoder up, first keyframe in
        ffmpeg = decoder_of(mapper_pid)
        if ffmpeg is None:
            raise SystemExit("no ffmpeg decoder under the mapper: is the stream up?")
        cpu_m, cpu_f = CpuWindow(mapper_pid), CpuWindow(ffmpeg.pid)
        cpu_m.start()
        cpu_f.start()
        for g in gaps:
            g.clear()  # the window starts now
        await asyncio.gather(*tasks)
        cpu = {"mapper": cpu_m.stop(), "ffmpeg": cpu_f.stop(), "ffmpeg_rss": peak_rss_mb(ffmpeg.pid)}
        return gaps, cpu

    gaps, cpu = asyncio.run(go())
    first = sorted(gaps[0])
    return {
        "fps": [len(g) / seconds for g in gaps],
        "gap_p50": percentile(first, 50),
        "gap_p99": percentile(first, 99),
        "cpu_mapper": cpu["mapper"],
        "cpu_ffmpeg": cpu["ffmpeg"],
        "rss_mapper": peak_rss_mb(mapper_pid),
        "rss_ffmpeg": cpu["ffmpeg_rss"],
    }


def bare_ffmpeg(uri: str, seconds: float, encode: bool) -> dict[str, Any]:
    out = ["-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-"] if encode else ["-f", "null", "-"]
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-rtsp_transport", "tcp", "-i", uri, "-an",
         *out],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(3)
    cpu = CpuWindow(proc.pid)
    cpu.start()
    time.sleep(seconds)
    result = {"cpu": cpu.stop(), "rss": peak_rss_mb(proc.pid)}
    proc.terminate()
    proc.wait()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is needed: apt install ffmpeg (make test installs it)")
    work = Path(tempfile.mkdtemp(prefix="km-onvif-", dir="/tmp"))
    secret = work / "secret"
    secret.write_text("bench-password")
    cam_port, rtsp_port, http_port = free_port(), free_port(), free_port()
    crs = work / "crs"
    crs.mkdir()
    (crs / "cam.yaml").write_text(yaml.safe_dump_all(camera_docs(cam_port, secret)))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim = subprocess.Popen(
            [*PY, "-m", "mapper_cli.main", "simulate", "onvif", "-f", str(crs), "--rtsp-port", str(rtsp_port),
             "--log-level", "error"],
            cwd=ROOT,
        )  # fmt: skip
        procs.append(sim)
        sock = work / "dmi.sock"
        recorder = subprocess.Popen([*PY, str(ROOT / "bench/_dmi_recorder.py"), str(sock), str(crs),
                                     str(work / "rec.json"), "10000"])  # fmt: skip
        procs.append(recorder)
        wait_for_socket(sock, recorder)
        config = work / "mapper.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "grpc_server": {"socket_path": str(work / "onvif.sock")},
                    "common": {"name": "onvif-mapper", "protocol": "onvif", "edgecore_sock": str(sock),
                               "http_port": str(http_port)},
                }
            )
        )  # fmt: skip
        time.sleep(2)
        mapper = subprocess.Popen(
            [*PY, "-m", "mapper_cli.main", "run", "onvif", "-c", str(config), "--log-level", "error"], cwd=ROOT
        )
        procs.append(mapper)
        time.sleep(4)
        if mapper.poll() is not None or sim.poll() is not None:
            raise SystemExit("the mapper or the simulator exited at start")
        url = f"http://127.0.0.1:{http_port}/api/v1/stream/default/cam/saveFrame"
        print("one consumer ...", file=sys.stderr)
        one = run_consumers(url, 1, args.seconds, mapper.pid)
        time.sleep(6)  # the decoder stops when idle; the next run starts it again
        print("two consumers ...", file=sys.stderr)
        two = run_consumers(url, 2, args.seconds, mapper.pid)
        uri = f"rtsp://127.0.0.1:{rtsp_port}/stream"
        print("bare ffmpeg ...", file=sys.stderr)
        bare_enc = bare_ffmpeg(uri, args.seconds, True)
        bare_dec = bare_ffmpeg(uri, args.seconds, False)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nONVIF frames: 640x480 H.264 at 25 fps over RTSP -> mapper -> MJPEG over HTTP, {args.seconds:.0f} s windows"
    )
    cols = ["1 consumer", "2 consumers", "bare ffmpeg enc", "bare ffmpeg dec"]
    print(f"{'':36}" + "".join(f"{c:>18}" for c in cols))

    def row(label: str, values: list[str]) -> None:
        print(f"{label:36}" + "".join(f"{v:>18}" for v in values))

    row("frames/s per consumer", [" / ".join(f"{f:.1f}" for f in one["fps"]),
                                  " / ".join(f"{f:.1f}" for f in two["fps"]), "-", "-"])  # fmt: skip
    row("gap between frames p50/p99 ms", [f"{one['gap_p50']:.0f}/{one['gap_p99']:.0f}",
                                          f"{two['gap_p50']:.0f}/{two['gap_p99']:.0f}", "-", "-"])  # fmt: skip
    row("CPU % mapper (Python)", [f"{one['cpu_mapper']:.1f}%", f"{two['cpu_mapper']:.1f}%", "-", "-"])
    row("CPU % decoder (ffmpeg child)", [f"{one['cpu_ffmpeg']:.1f}%", f"{two['cpu_ffmpeg']:.1f}%",
                                         f"{bare_enc['cpu']:.1f}%", f"{bare_dec['cpu']:.1f}%"])  # fmt: skip
    row("CPU % mapper + decoder", [f"{one['cpu_mapper'] + one['cpu_ffmpeg']:.1f}%",
                                   f"{two['cpu_mapper'] + two['cpu_ffmpeg']:.1f}%", "-", "-"])  # fmt: skip
    row("peak RSS MB mapper / decoder", [f"{one['rss_mapper']:.1f} / {one['rss_ffmpeg']:.1f}",
                                         f"{two['rss_mapper']:.1f} / {two['rss_ffmpeg']:.1f}",
                                         f"- / {bare_enc['rss']:.1f}", f"- / {bare_dec['rss']:.1f}"])  # fmt: skip
    print("target: sustain the stream's 25 frames/s at <= 30% of one core (mapper + decoder)")


if __name__ == "__main__":
    main()
