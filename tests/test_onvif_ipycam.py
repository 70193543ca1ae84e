"""The ONVIF driver against a camera emulator we did not write: IPyCam 1.3.0 from PyPI (its own ONVIF server with
WS-UsernameToken and its native RTSP server), installed into a virtualenv of its own (it brings OpenCV)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapper_framework.driver import parse_config
from mappers.onvif.camera import AuthFailed, CameraError
from mappers.onvif.config import OnvifProtocolConfig, OnvifVisitorConfig
from mappers.onvif.driver import OnvifDriver
from tests.modbus_peers import free_port

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".mapper" / "ipycam-venv"
IPYCAM = "ipycam==1.3.0"
PASSWORD = "ipycam-Pass-1"


def ipycam_python() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", IPYCAM], check=True)
        (VENV / ".installed").write_text(IPYCAM)
    return python


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ipycam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("ipycam")
    clip = work / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=25",
         "-t", "10", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", str(clip)],
        check=True,
    )  # fmt: skip
    ports = {"onvif_port": free_port(), "rtsp_port": free_port(), "web_port": free_port(), "rtmp_port": free_port()}
    config = {
        **ports,
        "local_ip": "127.0.0.1",
        "username": "admin",
        "password": PASSWORD,
        "main_width": 640,
        "main_height": 480,
        "main_fps": 25,
    }
    (work / "camera_config.json").write_text(json.dumps(config))
    proc = subprocess.Popen(
        [str(ipycam_python()), "-m", "ipycam", "--config", "camera_config.json", "--source", str(clip),
         "--hw", "cpu", "--no-timestamp", "--log-level", "WARNING"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (listening(ports["onvif_port"]) and listening(ports["rtsp_port"])):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "ipycam exited"
            assert time.monotonic() < deadline, "ipycam did not listen within 30 s"
            time.sleep(0.1)
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def driver_config(port: int, password_env: str) -> OnvifProtocolConfig:
    data = {"url": f"127.0.0.1:{port}", "userName": "admin", "password": f"env:{password_env}", "timeout": 5}
    return parse_config(OnvifProtocolConfig, data, "device default/ipycam")


def visitor(name: str, **data: Any) -> OnvifVisitorConfig:
    v = parse_config(OnvifVisitorConfig, data, f"property {name}")
    v.property_name = name
    return v


async def test_strings_frames_and_ptz_moves(ipycam: dict[str, Any], tmp_path: Path) -> None:
    os.environ["IPYCAM_PASSWORD"] = PASSWORD
    driver = OnvifDriver("default/ipycam")
    try:
        await driver.connect(driver_config(ipycam["onvif_port"], "IPYCAM_PASSWORD"))
        assert await driver.state() == "ok"
        assert await driver.read(visitor("getURI")) == f"rtsp://127.0.0.1:{ipycam['rtsp_port']}/video_main"
        assert await driver.read(visitor("deviceInfo")) == (
            "manufacturer:PythonCam,model:VirtualCam-1,firmware:1.3.0,serial:PY-000001"
        )
        profiles = await driver.read(visitor("profiles"))
        assert profiles.startswith("MainStream:") and ",SubStream:" in profiles
        assert (await driver.read(visitor("getSnapshotURI"))).startswith(f"http://127.0.0.1:{ipycam['onvif_port']}/")
        # Frames from its RTSP server, decoded by our ffmpeg child.
        out = tmp_path / "frames"
        last = await driver.read(
            visitor("saveFrame", dataType="stream", outputDir=str(out), frameCount=3, frameInterval=40_000_000)
        )
        assert Path(last).exists() and len(list(out.glob("*.jpg"))) == 3
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", last],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert probe == "mjpeg,640,480"
        # PTZ: moves are accepted; its GetStatus answer is malformed XML (an IPyCam bug), which we report as a
        # clear error on that property while the others go on.
        await driver.write(visitor("ptzMove"), "left")
        await driver.write(visitor("ptzMove"), "stop")
        with pytest.raises(CameraError, match=r"camera 127\.0\.0\.1:\d+ PTZ GetStatus: "):
            await driver.read(visitor("pan", dataType="float"))
        assert await driver.read(visitor("getURI")) == f"rtsp://127.0.0.1:{ipycam['rtsp_port']}/video_main"
    finally:
        await driver.close()
        del os.environ["IPYCAM_PASSWORD"]


async def test_wrong_password_is_unhealthy(ipycam: dict[str, Any]) -> None:
    os.environ["IPYCAM_WRONG"] = "not-the-password"
    driver = OnvifDriver("default/ipycam")
    try:
        await driver.connect(driver_config(ipycam["onvif_port"], "IPYCAM_WRONG"))
        assert await driver.state() == "unhealthy"
        with pytest.raises(AuthFailed, match="authentication failed") as caught:
            await driver.read(visitor("getURI"))
        assert "not-the-password" not in str(caught.value)
    finally:
        await driver.close()
        del os.environ["IPYCAM_WRONG"]
