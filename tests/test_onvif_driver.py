"""The ONVIF driver against the ONVIF simulator over real HTTP/SOAP (WS-UsernameToken digest), with a real RTSP
server playing a test pattern: strings, PTZ, saveFrame/saveVideo probed with ffprobe, and the three failures
(wrong password, camera down, stream down) each with its state and message."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapper_framework.driver import parse_config
from mapper_framework.values import PropertyValueError
from mappers.onvif.camera import AuthFailed, NotSupported, Unreachable
from mappers.onvif.config import OnvifProtocolConfig, OnvifVisitorConfig
from mappers.onvif.driver import OnvifDriver
from mappers.onvif.frames import StreamError
from mappers.onvif.rtsp_server import start_rtsp_server
from mappers.onvif.simulator import CameraSpec, serve_camera
from tests.modbus_peers import free_port

PASSWORD = "Cam-Pass-42"


@pytest.fixture(scope="module")
def rtsp() -> Iterator[Any]:
    server = start_rtsp_server(free_port(), 640, 480, 25)
    yield server
    server.close()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


def spec(port: int, rtsp_url: str, ptz: bool = True) -> CameraSpec:
    return CameraSpec(
        host="127.0.0.1",
        port=port,
        username="admin",
        password=PASSWORD,
        ptz=ptz,
        rtsp_url=rtsp_url,
    )


@pytest.fixture
async def camera(rtsp: Any) -> AsyncIterator[Any]:
    server = await serve_camera(spec(free_port(), rtsp.url))
    yield server
    await server.close()


def protocol(port: int, password: str) -> OnvifProtocolConfig:
    data = {"url": f"127.0.0.1:{port}", "userName": "admin", "password": password, "timeout": 3}
    return parse_config(OnvifProtocolConfig, data, "device default/cam")


def visitor(name: str, **data: Any) -> OnvifVisitorConfig:
    v = parse_config(OnvifVisitorConfig, data, f"property {name}")
    v.property_name = name
    return v


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stream: dict[str, Any] = json.loads(out)["streams"][0]
    return stream


async def test_strings_from_the_camera(camera: Any, password_file: Path, rtsp: Any) -> None:
    driver = OnvifDriver("default/cam")
    await driver.connect(protocol(camera.port, str(password_file)))
    assert await driver.state() == "ok"
    assert await driver.read(visitor("getURI")) == rtsp.url
    info = await driver.read(visitor("deviceInfo"))
    assert info.startswith("manufacturer:") and ",model:" in info and ",serial:" in info
    assert " " not in info  # edgecore's twin rule
    assert (await driver.read(visitor("profiles"))).count(",") >= 1
    assert (await driver.read(visitor("getSnapshotURI"))).startswith("http://")
    # A named profile: the second one's stream URI.
    second = driver.camera.profiles[1] if driver.camera else None
    assert second is not None
    assert (await driver.read(visitor("streamURI", profile=second.token))).startswith("rtsp://127.0.0.1:")
    with pytest.raises(Exception, match="no profile 'nope'"):
        await driver.read(visitor("getURI", profile="nope"))
    await driver.close()


async def test_ptz_positions_moves_and_stop(camera: Any, password_file: Path) -> None:
    driver = OnvifDriver("default/cam")
    await driver.connect(protocol(camera.port, str(password_file)))
    await driver.write(visitor("pan", dataType="float"), 0.5)
    await driver.write(visitor("zoom", dataType="float"), 0.25)
    assert await driver.read(visitor("pan", dataType="float")) == pytest.approx(0.5)
    assert await driver.read(visitor("zoom", dataType="float")) == pytest.approx(0.25)
    assert await driver.read(visitor("tilt", dataType="float")) == pytest.approx(0.0)
    await driver.write(visitor("ptzMove"), "right")
    assert await driver.read(visitor("ptzMove")) == "moving"
    await asyncio.sleep(0.3)
    await driver.write(visitor("ptzMove"), "stop")
    assert await driver.read(visitor("ptzMove")) == "idle"
    assert await driver.read(visitor("pan", dataType="float")) > 0.5  # it moved right
    with pytest.raises(ValueError, match="ptzMove: 'sideways' is not a command"):
        await driver.write(visitor("ptzMove"), "sideways")
    for outside in ("5,5,5", "nan,0,0", "0,0,-1.5"):  # velocities out of [-1,1] never reach the camera
        with pytest.raises(PropertyValueError, match=r"each in \[-1,1\]"):
            await driver.write(visitor("ptzMove"), outside)
    await driver.close()


async def test_a_camera_without_ptz_says_so(rtsp: Any, password_file: Path) -> None:
    server = await serve_camera(spec(free_port(), rtsp.url, ptz=False))
    try:
        driver = OnvifDriver("default/cam")
        await driver.connect(protocol(server.port, str(password_file)))
        with pytest.raises(NotSupported, match="PTZ is not supported by this camera"):
            await driver.read(visitor("pan", dataType="float"))
        assert await driver.state() == "ok"  # a missing feature is not an outage
        assert await driver.read(visitor("getURI")) == rtsp.url
        await driver.close()
    finally:
        await server.close()


async def test_wrong_password_is_unhealthy_without_a_retry_storm(camera: Any, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    driver = OnvifDriver("default/cam")
    await driver.connect(protocol(camera.port, str(wrong)))  # no raise: the SDK would retry a raise at once
    assert await driver.state() == "unhealthy"
    failures = camera.auth_failures
    for _ in range(20):
        with pytest.raises(AuthFailed, match="authentication failed") as caught:
            await driver.read(visitor("getURI"))
        assert "not-the-password" not in str(caught.value)
    assert camera.auth_failures == failures  # the camera was not asked again
    assert driver.auth_attempts == 1
    await driver.close()


async def test_camera_down_is_offline_and_comes_back(rtsp: Any, password_file: Path) -> None:
    port = free_port()
    server = await serve_camera(spec(port, rtsp.url))
    driver = OnvifDriver("default/cam")
    await driver.connect(protocol(port, str(password_file)))
    assert await driver.read(visitor("getURI")) == rtsp.url
    await server.close()
    with pytest.raises(Unreachable, match=r"camera 127\.0\.0\.1:\d+ GetStreamUri: unreachable"):
        await driver.read(visitor("getURI"))
    assert await driver.state() == "offline"
    server = await serve_camera(spec(port, rtsp.url))
    try:
        assert await driver.read(visitor("getURI")) == rtsp.url
        assert await driver.state() == "ok"
    finally:
        await driver.close()
        await server.close()


async def test_unreachable_at_connect_raises_for_the_sdk_to_retry(password_file: Path) -> None:
    driver = OnvifDriver("default/cam")
    with pytest.raises(Unreachable, match="unreachable"):
        await driver.connect(protocol(free_port(), str(password_file)))
    assert await driver.state() == "offline"


async def test_save_frame_and_save_video(camera: Any, password_file: Path, tmp_path: Path) -> None:
    driver = OnvifDriver("default/cam", frame_idle_s=0.2)
    await driver.connect(protocol(camera.port, str(password_file)))
    frames = tmp_path / "frames"
    v = visitor(
        "saveFrame", dataType="stream", format="jpg", outputDir=str(frames), frameCount=5, frameInterval=100_000_000
    )
    last = await driver.read(v)
    assert last.endswith("-0004.jpg") and Path(last).exists()
    files = sorted(frames.glob("default_cam-saveFrame-*.jpg"))
    assert len(files) == 5
    for f in files:
        assert probe(f)["codec_name"] == "mjpeg" and probe(f)["width"] == 640
    clips = tmp_path / "clips"
    v = visitor("saveVideo", dataType="stream", format="mp4", outputDir=str(clips), frameCount=50, videoNum=2)
    await driver.read(v)
    made = sorted(clips.glob("default_cam-saveVideo-*.mp4"))
    assert len(made) == 2
    for clip in made:
        info = probe(clip)
        assert (info["codec_name"], info["width"], info["height"]) == ("h264", 640, 480)
        assert 45 <= int(info["nb_read_frames"]) <= 55
    await driver.close()


async def test_stream_down_is_unhealthy_with_the_reason(password_file: Path, tmp_path: Path) -> None:
    dead = f"rtsp://127.0.0.1:{free_port()}/stream"
    server = await serve_camera(spec(free_port(), dead))
    try:
        driver = OnvifDriver("default/cam")
        await driver.connect(protocol(server.port, str(password_file)))
        v = visitor("saveFrame", dataType="stream", outputDir=str(tmp_path), frameCount=1)
        with pytest.raises(StreamError, match="Connection refused") as caught:
            await driver.read(v)
        assert PASSWORD not in str(caught.value)
        assert await driver.state() == "unhealthy"
        assert await driver.read(visitor("getURI")) == dead  # the camera itself still answers
        await driver.close()
    finally:
        await server.close()


async def test_a_stream_that_works_again_clears_unhealthy(password_file: Path, tmp_path: Path) -> None:
    """A camera with no saveFrame/saveVideo property: a failed REST stream made it unhealthy for good (only a
    capture cleared it). A stream that delivers again, or a new session after the camera was away, clears it."""
    from mapper_framework.driver import StreamNotSupported

    clip = tmp_path / "stream.mp4"  # not there yet: the stream fails
    server = await serve_camera(spec(free_port(), str(clip)))
    try:
        driver = OnvifDriver("default/cam")
        await driver.connect(protocol(server.port, str(password_file)))
        with pytest.raises(StreamNotSupported):
            async for _ in driver.frames(visitor("getURI")):
                pass
        assert await driver.state() == "unhealthy"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=25",
             "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", str(clip)],
            check=True,
        )  # fmt: skip
        frames = driver.frames(visitor("getURI"))
        async for _ in frames:
            break
        await frames.aclose()  # type: ignore[attr-defined]
        assert await driver.state() == "ok"
        await driver.close()
    finally:
        await server.close()
