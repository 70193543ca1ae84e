"""The ONVIF mapper end to end: `mapper simulate onvif` as a real process (camera + GStreamer RTSP server), the
agent and the mapper over real Unix sockets, twins and state in the agent's store, and the MJPEG frame stream
served to two consumers at once while collection goes on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from dmi.resources import ObjectKey
from mapper_framework.config import config_from_dict
from mapper_framework.mapper import Mapper
from mappers.onvif import driver_factory
from tests.modbus_peers import free_port
from tests.sdk_driver import stored, until

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "e2e-Pass-7"


def camera_docs(port: int, password_ref: str, frames_dir: Path) -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all((ROOT / "crds/samples/onvif-camera.yaml").read_text()))
    device = docs[1]
    device["metadata"]["name"] = "cam"
    device["spec"]["protocol"]["configData"].update({"url": f"127.0.0.1:{port}", "password": password_ref})
    for prop in device["spec"]["properties"]:
        prop["collectCycle"] = prop["reportCycle"] = 200 if prop["name"] in ("pan", "tilt", "zoom") else 1000
        if prop["name"] == "saveFrame":
            prop["visitors"]["configData"].update({"outputDir": str(frames_dir), "frameCount": 3})
    return docs


@pytest.fixture
async def simulated(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """`mapper simulate onvif` on a CR whose password is a file, as a real process."""
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")
    port = free_port()
    cr = tmp_path / "sim.yaml"
    cr.write_text(yaml.safe_dump_all(camera_docs(port, str(secret), tmp_path / "unused")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mapper_cli.main", "simulate", "onvif", "-f", str(cr), "--rtsp-port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await until(lambda: _listening(port) or proc.poll() is not None, timeout=20, what="simulated camera")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        yield port, secret
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out.decode()
        assert PASSWORD not in out.decode()  # the simulator never prints the password


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


async def start_mapper(make_agent: Any, sockdir: Path, tmp_path: Path, port: int, password_ref: str) -> Any:
    h = await make_agent()
    (h.crs / "cam.yaml").write_text(yaml.safe_dump_all(camera_docs(port, password_ref, tmp_path / "frames")))
    await h.agent.reload()
    config = config_from_dict(
        {
            "grpc_server": {"socket_path": str(sockdir / "onvif.sock")},
            "common": {
                "name": "onvif-mapper",
                "protocol": "onvif",
                "edgecore_sock": str(h.agent.socket_path),
                "http_port": "0",
            },
            "state": {"probe_ms": 200},
        }
    )
    mapper = Mapper(config, driver_factory)
    await mapper.start()
    return h, mapper


def state_of(h: Any) -> str | None:
    row = h.agent.store.state(ObjectKey("default", "cam"))
    return row.state if row is not None else None


async def test_twins_state_and_two_frame_consumers(
    simulated: tuple[int, Path], make_agent: Any, sockdir: Path, tmp_path: Path
) -> None:
    port, secret = simulated
    h, mapper = await start_mapper(make_agent, sockdir, tmp_path, port, str(secret))
    try:
        await until(lambda: state_of(h) == "ok", timeout=20, what="camera ok")
        await until(lambda: "getURI" in stored(h.agent, "cam"), timeout=20, what="getURI twin")
        uri = stored(h.agent, "cam")["getURI"][0]
        assert uri is not None and uri.startswith("rtsp://127.0.0.1:") and uri.endswith("/stream")
        await until(lambda: "deviceInfo" in stored(h.agent, "cam"), timeout=20, what="deviceInfo twin")
        assert stored(h.agent, "cam")["deviceInfo"][0] == (
            "manufacturer:KubeEdge_Mapper,model:SimCam_640,firmware:1.0.0,serial:SIM-cam"
        )
        await until(lambda: "pan" in stored(h.agent, "cam"), what="pan twin")

        runtime = mapper.registry.runtimes[("default", "cam")]
        pan = runtime.twins["pan"]
        reads_before, missed_before = pan.reads, runtime.missed_reads
        assert mapper.rest is not None
        url = f"http://127.0.0.1:{mapper.rest.port}/api/v1/stream/default/cam/saveFrame"

        async def consume(want: int) -> list[bytes]:
            frames: list[bytes] = []
            async with aiohttp.ClientSession() as session, session.get(url) as answer:
                assert answer.status == 200
                assert answer.headers["Content-Type"].startswith("multipart/x-mixed-replace; boundary=")
                reader = aiohttp.MultipartReader.from_response(answer)
                while len(frames) < want:
                    part = await reader.next()
                    assert part is not None and isinstance(part, aiohttp.BodyPartReader)
                    assert part.headers["Content-Type"] == "image/jpeg"
                    frames.append(bytes(await part.read()))
            return frames

        one, two = await asyncio.wait_for(asyncio.gather(consume(75), consume(75)), 60)
        for frames in (one, two):
            assert all(f[:2] == b"\xff\xd8" and f[-2:] == b"\xff\xd9" for f in frames)
            assert len(set(frames)) >= 60  # a moving pattern: distinct frames
        # Collection went on meanwhile, and no round of it was lost to the streaming.
        assert pan.reads > reads_before + 5
        assert runtime.missed_reads == missed_before
        # One decoder served both consumers.
        driver = runtime.driver
        hubs = list(driver._hubs.values())  # type: ignore[attr-defined]
        assert len(hubs) == 1 and hubs[0].stats.restarts == 1

        # The newest frame alone, and a stream asked of a property that is no stream.
        async with aiohttp.ClientSession() as session:
            async with session.get(url.replace("/stream/", "/frame/")) as answer:
                assert answer.status == 200 and answer.headers["Content-Type"] == "image/jpeg"
                assert (await answer.read())[:2] == b"\xff\xd8"
            async with session.get(url.replace("saveFrame", "pan")) as answer:
                assert answer.status == 404
                assert "not a stream" in (await answer.json())["error"]

        # A PTZ write through the REST device method reaches the camera.
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{mapper.rest.port}/api/v1/devicemethod/default/cam/ptz/ptzMove"
            async with session.get(f"{base}/left") as answer:
                assert answer.status == 200, await answer.text()
            await until(lambda: stored(h.agent, "cam").get("ptzMove", (None,))[0] == "moving", what="moving")
            async with session.get(f"{base}/stop") as answer:
                assert answer.status == 200
            await until(lambda: stored(h.agent, "cam").get("ptzMove", (None,))[0] == "idle", what="idle")
        assert float(stored(h.agent, "cam")["pan"][0] or 0) < 0  # it moved left
    finally:
        await mapper.stop()


async def test_wrong_password_unhealthy_then_camera_down_offline(
    simulated: tuple[int, Path], make_agent: Any, sockdir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port, _secret = simulated
    os.environ["E2E_WRONG_PASSWORD"] = "definitely-wrong"
    try:
        h, mapper = await start_mapper(make_agent, sockdir, tmp_path, port, "env:E2E_WRONG_PASSWORD")
        try:
            await until(lambda: state_of(h) == "unhealthy", timeout=20, what="unhealthy")
            runtime = mapper.registry.runtimes[("default", "cam")]
            await until(lambda: bool(runtime.twins["getURI"].error), what="read error")
            assert "authentication failed" in runtime.twins["getURI"].error
            assert "definitely-wrong" not in caplog.text
            assert "authentication failed" in caplog.text
        finally:
            await mapper.stop()
    finally:
        del os.environ["E2E_WRONG_PASSWORD"]


async def test_camera_unreachable_is_offline(make_agent: Any, sockdir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD)
    h, mapper = await start_mapper(make_agent, sockdir, tmp_path, free_port(), str(secret))
    try:
        await until(lambda: state_of(h) == "offline", timeout=20, what="offline")
        assert "unreachable" in mapper.registry.runtimes[("default", "cam")].error
    finally:
        await mapper.stop()
