"""The ONVIF camera simulator and its RTSP server, driven by the client the mapper uses (onvif-zeep-async's
ONVIFCamera with its own WSDLs) and by ffprobe/ffmpeg: real HTTP/SOAP 1.2, a real GStreamer RTSP server, and
`mapper simulate onvif` as a real process."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFError

from mappers.onvif import rtsp_server as rtsp_module
from mappers.onvif.rtsp_server import RtspServer, RtspServerError, rtsp_describe, start_rtsp_server
from mappers.onvif.simulator import CameraSpec, PtzState, SimulatedCamera, parse_duration, serve_camera
from tests.modbus_peers import free_port
from tests.sdk_driver import until

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Sim-Pass-9"
TDS = "http://www.onvif.org/ver10/device/wsdl"
TRT = "http://www.onvif.org/ver10/media/wsdl"
TPTZ = "http://www.onvif.org/ver20/ptz/wsdl"


@pytest.fixture(scope="module")
def rtsp() -> Iterator[RtspServer]:
    with start_rtsp_server(0, 640, 480, 25, ["/stream", "/sub"]) as server:
        yield server


def camera_spec(rtsp: RtspServer, ptz: bool = True) -> CameraSpec:
    return CameraSpec(
        port=0,
        password=PASSWORD,
        ptz=ptz,
        rtsp_url=rtsp.url_of("/stream"),
        sub_rtsp_url=rtsp.url_of("/sub"),
        manufacturer="Acme",
        model="Cam-9",
        firmware="2.4.1",
        serial="SN-77",
        hardware="HW-3",
    )


@pytest.fixture
async def camera(rtsp: RtspServer) -> AsyncIterator[SimulatedCamera]:
    async with await serve_camera(camera_spec(rtsp)) as sim:
        yield sim


@pytest.fixture
async def plain_camera(rtsp: RtspServer) -> AsyncIterator[SimulatedCamera]:
    async with await serve_camera(camera_spec(rtsp, ptz=False)) as sim:
        yield sim


@pytest.fixture
async def client(camera: SimulatedCamera) -> AsyncIterator[ONVIFCamera]:
    cam = ONVIFCamera("127.0.0.1", camera.port, "admin", PASSWORD, no_cache=True)
    try:
        await cam.update_xaddrs()
        yield cam
    finally:
        await cam.close()


def probe(target: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height,r_frame_rate", "-of", "json",
         target],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    streams: list[dict[str, Any]] = json.loads(out)["streams"]
    assert len(streams) == 1, streams
    return streams[0]


# ---------------------------------------------------------------------- device service


async def test_device_information_services_and_capabilities(camera: SimulatedCamera, client: ONVIFCamera) -> None:
    base = f"http://127.0.0.1:{camera.port}/onvif"
    # update_xaddrs went through GetServices: the three services, at the address we reached the camera on
    assert client.xaddrs == {TDS: f"{base}/device_service", TRT: f"{base}/media_service", TPTZ: f"{base}/ptz_service"}
    devicemgmt = await client.create_devicemgmt_service()
    info = await devicemgmt.GetDeviceInformation()
    assert (info.Manufacturer, info.Model, info.FirmwareVersion, info.SerialNumber, info.HardwareId) == (
        "Acme", "Cam-9", "2.4.1", "SN-77", "HW-3",
    )  # fmt: skip
    with_caps = await devicemgmt.GetServices({"IncludeCapability": True})
    assert [s.Namespace for s in with_caps] == [TDS, TRT, TPTZ]
    assert all(s.Capabilities is not None for s in with_caps)
    assert all(s.Capabilities is None for s in await devicemgmt.GetServices({"IncludeCapability": False}))
    media_caps = await (await client.create_media_service()).GetServiceCapabilities()
    assert media_caps.SnapshotUri is True and media_caps.ProfileCapabilities.MaximumNumberOfProfiles == 2
    caps = await client.get_capabilities()  # GetCapabilities, the older way
    assert caps is not None and caps["PTZ"]["XAddr"] == f"{base}/ptz_service"
    assert caps["Media"]["StreamingCapabilities"]["RTP_RTSP_TCP"] is True
    clock = await devicemgmt.authless_GetSystemDateAndTime()  # no credentials at all: clients read the clock first
    assert clock.UTCDateTime.Date.Year == dt.datetime.now(dt.UTC).year
    assert camera.auth_failures == 0
    assert camera.requests["GetServices"] == 3 and camera.requests["GetCapabilities"] == 1


async def test_a_client_that_adjusts_its_clock_works(camera: SimulatedCamera) -> None:
    cam = ONVIFCamera("127.0.0.1", camera.port, "admin", PASSWORD, no_cache=True, adjust_time=True)
    try:
        await cam.update_xaddrs()
        assert camera.requests["GetSystemDateAndTime"] == 1
        info = await (await cam.create_devicemgmt_service()).GetDeviceInformation()
        assert info.SerialNumber == "SN-77"
    finally:
        await cam.close()


# ---------------------------------------------------------------------- media service and streams


async def test_profiles_and_stream_uris_play_on_the_rtsp_server(rtsp: RtspServer, client: ONVIFCamera) -> None:
    media = await client.create_media_service()
    profiles = await media.GetProfiles()
    assert [(p.token, p.Name) for p in profiles] == [("profile_1", "MainStream"), ("profile_2", "SubStream")]
    for p in profiles:
        encoder = p.VideoEncoderConfiguration
        assert (encoder.Encoding, encoder.Resolution.Width, encoder.Resolution.Height) == ("H264", 640, 480)
        assert encoder.RateControl.FrameRateLimit == 25
        assert p.PTZConfiguration.NodeToken == "ptz_node"
    assert (await media.GetProfile({"ProfileToken": "profile_2"})).Name == "SubStream"
    uris = []
    for token in ("profile_1", "profile_2"):
        setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
        uris.append((await media.GetStreamUri({"StreamSetup": setup, "ProfileToken": token})).Uri)
    assert uris == [rtsp.url_of("/stream"), rtsp.url_of("/sub")]
    stream = await asyncio.to_thread(probe, uris[0])
    assert stream == {"codec_name": "h264", "width": 640, "height": 480, "r_frame_rate": "25/1"}
    assert "H264" in rtsp_describe(uris[1])
    with pytest.raises(zeep.exceptions.Fault) as caught:
        await media.GetStreamUri({"StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                                  "ProfileToken": "nope"})  # fmt: skip
    assert [q.localname for q in caught.value.subcodes] == ["InvalidArgVal", "NoProfile"]


def test_the_stream_moves(rtsp: RtspServer) -> None:
    # Six frames 0.2 s apart, shrunk to 80x60 grey: the ball crosses pixels at full contrast between two of them,
    # where a still picture only shows the encoder's noise (measured here: at most ~35 levels of 255).
    size = 80 * 60
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", rtsp.url, "-vf", "fps=5,scale=80:60,format=gray",
         "-frames:v", "6", "-f", "rawvideo", "-"],
        capture_output=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    frames = [raw[i : i + size] for i in range(0, len(raw) - size + 1, size)]
    assert len(frames) == 6
    changes = [max(abs(a - b) for a, b in zip(one, two, strict=True)) for one, two in itertools.pairwise(frames)]
    assert min(changes) > 128, changes


async def test_snapshot_is_a_real_jpeg_behind_http_digest(
    camera: SimulatedCamera, client: ONVIFCamera, tmp_path: Path
) -> None:
    uri = await client.get_snapshot_uri("profile_1")
    assert uri == f"http://127.0.0.1:{camera.port}/onvif/snapshot.jpg"
    jpeg = await client.get_snapshot("profile_1")  # the client answers the Digest challenge
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    (tmp_path / "snap.jpg").write_bytes(jpeg)
    picture = await asyncio.to_thread(probe, str(tmp_path / "snap.jpg"))
    assert (picture["codec_name"], picture["width"], picture["height"]) == ("mjpeg", 640, 480)
    async with aiohttp.ClientSession() as http:
        async with http.get(uri) as answer:
            assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Digest ")
        wrong = aiohttp.DigestAuthMiddleware("admin", "not-it")
        async with http.get(uri, middlewares=(wrong,)) as answer:
            assert answer.status == 401
    assert camera.auth_failures == 1  # the wrong password; a bare challenge is not a failure


# ---------------------------------------------------------------------- PTZ


async def status(ptz: Any) -> tuple[float, float, float, str, str]:
    s = await ptz.GetStatus({"ProfileToken": "profile_1"})
    return (s.Position.PanTilt.x, s.Position.PanTilt.y, s.Position.Zoom.x, s.MoveStatus.PanTilt, s.MoveStatus.Zoom)


async def test_ptz_absolute_relative_continuous_and_stop(camera: SimulatedCamera, client: ONVIFCamera) -> None:
    ptz = await client.create_ptz_service()
    assert await status(ptz) == (0.0, 0.0, 0.0, "IDLE", "IDLE")
    position = {"PanTilt": {"x": 0.5, "y": -0.25}, "Zoom": {"x": 0.4}}
    await ptz.AbsoluteMove({"ProfileToken": "profile_1", "Position": position})
    assert await status(ptz) == (0.5, -0.25, 0.4, "IDLE", "IDLE")
    await ptz.RelativeMove({"ProfileToken": "profile_1", "Translation": {"PanTilt": {"x": 0.75, "y": 0.25}}})
    assert await status(ptz) == (1.0, 0.0, 0.4, "IDLE", "IDLE")  # clamped at the end of the pan range
    await ptz.ContinuousMove({"ProfileToken": "profile_1", "Velocity": {"PanTilt": {"x": -1.0, "y": 0.0}}})
    pan, _tilt, zoom, moving, zoom_moving = await status(ptz)
    assert (moving, zoom_moving, zoom) == ("MOVING", "IDLE", 0.4)
    await asyncio.sleep(0.4)
    assert (await status(ptz))[0] < pan - 0.1  # 0.5/s at velocity 1: it went left
    await ptz.Stop({"ProfileToken": "profile_1", "PanTilt": True, "Zoom": True})
    stopped = await status(ptz)
    assert stopped[3:] == ("IDLE", "IDLE")
    await asyncio.sleep(0.2)
    assert await status(ptz) == stopped  # and stays there
    assert camera.ptz.pan == pytest.approx(stopped[0], abs=1e-6)
    # A continuous move with a Timeout stops by itself.
    await ptz.ContinuousMove(
        {"ProfileToken": "profile_1", "Velocity": {"Zoom": {"x": 1.0}}, "Timeout": dt.timedelta(seconds=0.2)}
    )
    await asyncio.sleep(0.5)
    *_, zoom_state = await status(ptz)
    assert zoom_state == "IDLE" and camera.ptz.zoom == pytest.approx(0.4 + 0.25 * 0.2, abs=0.02)
    with pytest.raises(zeep.exceptions.Fault) as caught:
        await ptz.AbsoluteMove({"ProfileToken": "profile_1", "Position": {"PanTilt": {"x": 1.5, "y": 0.0}}})
    assert [q.localname for q in caught.value.subcodes] == ["InvalidArgVal", "InvalidPosition"]


async def test_ptz_nodes_and_configurations(client: ONVIFCamera) -> None:
    ptz = await client.create_ptz_service()
    (node,) = await ptz.GetNodes()
    assert node.token == "ptz_node"
    spaces = node.SupportedPTZSpaces
    assert (spaces.AbsolutePanTiltPositionSpace[0].XRange.Min, spaces.AbsolutePanTiltPositionSpace[0].XRange.Max) == (
        -1.0, 1.0,
    )  # fmt: skip
    assert spaces.AbsoluteZoomPositionSpace[0].XRange.Min == 0.0
    (config,) = await ptz.GetConfigurations()
    assert config.NodeToken == "ptz_node" and config.ZoomLimits.Range.XRange.Max == 1.0
    assert (await ptz.GetConfiguration({"PTZConfigurationToken": config.token})).token == "ptz_config"


def test_continuous_motion_stops_at_the_end_of_a_range_and_at_its_timeout() -> None:
    state = PtzState(since=0.0)
    state.velocity = (1.0, -0.5, 1.0)
    state.settle(now=1.0)
    assert (state.pan, state.tilt, state.zoom, state.moving) == (0.5, -0.25, 0.25, True)
    state.settle(now=10.0)
    assert (state.pan, state.tilt, state.zoom, state.moving) == (1.0, -1.0, 1.0, False)
    state = PtzState(since=0.0, velocity=(0.0, 1.0, 0.0), until=0.5)
    state.settle(now=3.0)
    assert (state.tilt, state.moving, state.until) == (0.25, False, None)
    assert parse_duration("PT1.5S") == 1.5 and parse_duration("PT1M2S") == 62.0 and parse_duration("P1DT1H") == 90000
    with pytest.raises(ValueError):
        parse_duration("PT")


async def test_a_camera_without_ptz_says_so(plain_camera: SimulatedCamera) -> None:
    cam = ONVIFCamera("127.0.0.1", plain_camera.port, "admin", PASSWORD, no_cache=True)
    try:
        await cam.update_xaddrs()
        assert TPTZ not in cam.xaddrs and TRT in cam.xaddrs
        caps = await cam.get_capabilities()
        assert caps is not None and caps["PTZ"] is None and caps["Media"] is not None
        with pytest.raises(ONVIFError, match="doesn`t support service: ptz"):
            await cam.create_ptz_service()
        profiles = await (await cam.create_media_service()).GetProfiles()
        assert all(p.PTZConfiguration is None for p in profiles)
        devicemgmt = await cam.create_devicemgmt_service()
        with pytest.raises(zeep.exceptions.Fault) as caught:
            await devicemgmt.GetCapabilities({"Category": "PTZ"})
        assert [q.localname for q in caught.value.subcodes] == ["ActionNotSupported", "NoSuchService"]
    finally:
        await cam.close()
    # A client that posts to the PTZ path anyway (signed correctly) gets the fault, not a move.
    status_code, fault = await raw_soap(plain_camera, "ptz_service", f'<GetStatus xmlns="{TPTZ}"><ProfileToken>'
                                        "profile_1</ProfileToken></GetStatus>", password=PASSWORD)  # fmt: skip
    assert (status_code, fault) == (500, ["env:Receiver", "ter:ActionNotSupported", "ter:NoSuchService"])
    assert plain_camera.auth_failures == 0


# ---------------------------------------------------------------------- authentication and faults


async def test_wrong_password_is_not_authorized_and_counted(camera: SimulatedCamera) -> None:
    cam = ONVIFCamera("127.0.0.1", camera.port, "admin", "wrong-one", no_cache=True)
    try:
        with pytest.raises(zeep.exceptions.Fault) as caught:
            await cam.update_xaddrs()  # GetServices refused, then its fallback GetCapabilities refused
        assert [q.localname for q in caught.value.subcodes] == ["NotAuthorized"]
    finally:
        await cam.close()
    assert camera.auth_failures == 2
    assert (camera.requests["GetServices"], camera.requests["GetCapabilities"]) == (1, 1)
    assert await raw_soap(camera, "device_service", f'<GetDeviceInformation xmlns="{TDS}"/>', password="nope") == (
        400, ["env:Sender", "ter:NotAuthorized"],
    )  # fmt: skip
    assert await raw_soap(camera, "device_service", f'<GetDeviceInformation xmlns="{TDS}"/>', password=None) == (
        400, ["env:Sender", "ter:NotAuthorized"],
    )  # fmt: skip
    assert camera.auth_failures == 4


async def test_what_the_token_must_carry(camera: SimulatedCamera) -> None:
    op = f'<GetDeviceInformation xmlns="{TDS}"/>'
    assert (await raw_soap(camera, "device_service", op, password=PASSWORD))[0] == 200
    assert (await raw_soap(camera, "device_service", op, password=PASSWORD, digest=False))[0] == 200  # PasswordText
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)  # outside the window: a replayed token
    assert (await raw_soap(camera, "device_service", op, password=PASSWORD, created=stale))[0] == 400
    assert (await raw_soap(camera, "device_service", op, password=PASSWORD, user="root"))[0] == 400
    assert camera.auth_failures == 2


async def test_unknown_operations_and_malformed_requests(camera: SimulatedCamera) -> None:
    assert await raw_soap(camera, "device_service", f'<Reboot xmlns="{TDS}"/>', password=PASSWORD) == (
        500, ["env:Receiver", "ter:ActionNotSupported"],
    )  # fmt: skip
    # a media operation posted to the device service is just as unknown there
    assert (await raw_soap(camera, "device_service", f'<GetProfiles xmlns="{TRT}"/>', password=PASSWORD))[0] == 500
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{camera.port}/onvif/device_service"
        async with http.post(url, data=b"<not xml", headers={"Content-Type": "application/soap+xml"}) as answer:
            assert answer.status == 400 and "ter:WellFormed" in await answer.text()
        soap11 = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>'
        async with http.post(url, data=soap11, headers={"Content-Type": "text/xml"}) as answer:
            assert answer.status == 500 and "env:VersionMismatch" in await answer.text()


async def raw_soap(
    camera: SimulatedCamera,
    service: str,
    operation: str,
    password: str | None,
    user: str = "admin",
    digest: bool = True,
    created: dt.datetime | None = None,
) -> tuple[int, list[str]]:
    """POST one SOAP 1.2 request signed here (not by zeep); returns the HTTP status and the fault's codes."""
    header = ""
    if password is not None:
        nonce = os.urandom(16)
        when = (created or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if digest:
            value = base64.b64encode(hashlib.sha1(nonce + when.encode() + password.encode()).digest()).decode()
            kind = "PasswordDigest"
        else:
            value, kind = password, "PasswordText"
        wsse = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
        wsu = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
        profile = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
        header = (
            f'<s:Header><wsse:Security xmlns:wsse="{wsse}" xmlns:wsu="{wsu}"><wsse:UsernameToken>'
            f'<wsse:Username>{user}</wsse:Username><wsse:Password Type="{profile}#{kind}">{value}</wsse:Password>'
            f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce><wsu:Created>{when}</wsu:Created>"
            "</wsse:UsernameToken></wsse:Security></s:Header>"
        )
    envelope = f'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">{header}<s:Body>{operation}</s:Body></s:Envelope>'
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{camera.port}/onvif/{service}"
        async with http.post(url, data=envelope.encode(), headers={"Content-Type": "application/soap+xml"}) as answer:
            text = await answer.text()
            assert answer.content_type == "application/soap+xml"
            return answer.status, _fault_codes(text)


def _fault_codes(text: str) -> list[str]:
    import xml.etree.ElementTree as ET

    env = "{http://www.w3.org/2003/05/soap-envelope}"
    code = ET.fromstring(text).find(f"{env}Body/{env}Fault/{env}Code")
    out: list[str] = []
    while code is not None:
        out.append((code.findtext(f"{env}Value") or "").strip())
        code = code.find(f"{env}Subcode")
    return out


# ---------------------------------------------------------------------- the RTSP server itself


def test_rtsp_server_errors_name_the_fix(rtsp: RtspServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RtspServerError, match="cannot listen"):
        start_rtsp_server(rtsp.port)  # taken by the module's server
    # A Python without GStreamer's bindings (ours: the virtualenv has no gi) gets the Debian packages to install.
    monkeypatch.setattr(rtsp_module, "SYSTEM_PYTHON", sys.executable)
    with pytest.raises(RtspServerError, match=r"apt install python3-gi gir1\.2-gst-rtsp-server-1\.0"):
        start_rtsp_server(0)
    with pytest.raises(RtspServerError, match="404"):
        rtsp_describe(rtsp.url_of("/nowhere"))


# ---------------------------------------------------------------------- `mapper simulate onvif`


def simulate_crs(tmp_path: Path, ports: list[int], password_ref: str) -> Path:
    model, device = yaml.safe_load_all((ROOT / "crds/samples/onvif-camera.yaml").read_text())
    docs = [model]
    for i, port in enumerate(ports):
        cam = json.loads(json.dumps(device))
        cam["metadata"]["name"] = f"cam-{i}"
        cam["spec"]["protocol"]["configData"].update({"url": f"127.0.0.1:{port}", "password": password_ref})
        docs.append(cam)
    path = tmp_path / "cameras.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


async def test_mapper_simulate_onvif_serves_every_camera_of_the_crs(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")
    # --password-file gives the password even though the CRs name a file that is not there
    crs = simulate_crs(tmp_path, ports, "/nonexistent/password")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mapper_cli.main", "simulate", "onvif", "-f", str(crs), "--rtsp-port", "0",
         "--no-ptz", "--password-file", str(secret)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        await until(lambda: all(_listening(p) for p in ports) or proc.poll() is not None, 20, "the cameras")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        uris = []
        for i, port in enumerate(ports):
            cam = ONVIFCamera("127.0.0.1", port, "admin", PASSWORD, no_cache=True)
            try:
                await cam.update_xaddrs()
                assert TPTZ not in cam.xaddrs  # --no-ptz
                info = await (await cam.create_devicemgmt_service()).GetDeviceInformation()
                assert info.SerialNumber == f"SIM-cam-{i}"
                media = await cam.create_media_service()
                setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
                uris.append((await media.GetStreamUri({"StreamSetup": setup, "ProfileToken": "profile_1"})).Uri)
            finally:
                await cam.close()
        assert uris[0] == uris[1]  # one RTSP server for all the cameras
        assert "H264" in await asyncio.to_thread(rtsp_describe, uris[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "camera default/cam-0" in text and "camera default/cam-1" in text and uris[0] in text
    assert PASSWORD not in text  # it never prints the password
    assert not _listening(ports[0])
    rtsp_port = int(uris[0].split(":")[2].split("/")[0])
    assert not _listening(rtsp_port)  # the RTSP server went with it


def test_mapper_simulate_onvif_says_where_the_password_is_missing(tmp_path: Path) -> None:
    crs = simulate_crs(tmp_path, [free_port()], str(tmp_path / "absent"))
    done = subprocess.run(
        [sys.executable, "-m", "mapper_cli.main", "simulate", "onvif", "-f", str(crs)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"password: file {tmp_path / 'absent'} does not exist" in done.stderr
    assert "--password-file" in done.stderr and "Traceback" not in done.stderr


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False
