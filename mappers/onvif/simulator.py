"""A simulated ONVIF camera: the device, media and PTZ operations the mapper uses, over real HTTP/SOAP 1.2 with
WS-Security UsernameToken authentication, and stream URIs that point at a real RTSP server.

Served paths: ``/onvif/device_service``, ``/onvif/media_service``, ``/onvif/ptz_service`` (SOAP) and
``/onvif/snapshot.jpg``. Operations: GetSystemDateAndTime (no authentication, as cameras do), GetServices,
GetCapabilities, GetDeviceInformation, GetProfiles, GetStreamUri, GetSnapshotUri, and with PTZ: GetStatus,
AbsoluteMove, RelativeMove, ContinuousMove, Stop. Anything else is a ``ter:ActionNotSupported`` fault; missing or
wrong credentials a ``ter:NotAuthorized`` fault with HTTP 400 (the ONVIF core spec's answer to a sender fault).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from aiohttp import web

log = logging.getLogger(__name__)

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "ter": "http://www.onvif.org/ver10/error",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
}
CREATED_WINDOW_S = 300  # how far a token's Created may be from our clock
PAN_TILT_SPEED = 0.5  # position units per second at velocity 1
ZOOM_SPEED = 0.25


@dataclass
class CameraSpec:
    """What one simulated camera is."""

    host: str = "127.0.0.1"
    port: int = 8000
    username: str = "admin"
    password: str = field(default="", repr=False)
    rtsp_url: str = "rtsp://127.0.0.1:8554/stream"
    sub_rtsp_url: str = ""  # the second profile's stream; the first one's when empty
    ptz: bool = True
    width: int = 640  # of both profiles' streams (the RTSP server plays one pattern)
    height: int = 480
    manufacturer: str = "KubeEdge Mapper"
    model: str = "SimCam 640"
    firmware: str = "1.0.0"
    serial: str = "SIM-0001"
    hardware: str = "sim-hw-1"


@dataclass
class PtzState:
    """Positions move with the velocity of the last ContinuousMove until Stop (or a limit)."""

    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    since: float = field(default_factory=time.monotonic)

    def settle(self) -> None:
        now = time.monotonic()
        elapsed, self.since = now - self.since, now
        vx, vy, vz = self.velocity
        self.pan = _clamp(self.pan + vx * PAN_TILT_SPEED * elapsed, -1, 1)
        self.tilt = _clamp(self.tilt + vy * PAN_TILT_SPEED * elapsed, -1, 1)
        self.zoom = _clamp(self.zoom + vz * ZOOM_SPEED * elapsed, 0, 1)

    @property
    def moving(self) -> bool:
        return any(self.velocity)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class SoapFault(Exception):
    def __init__(self, subcode: str, reason: str, status: int = 400, sender: bool = True) -> None:
        super().__init__(reason)
        self.subcode, self.reason, self.status, self.sender = subcode, reason, status, sender


def _envelope(body: str) -> str:
    names = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items() if k not in ("wsse", "wsu"))
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope {names}><env:Body>{body}</env:Body></env:Envelope>'


def _fault_xml(fault: SoapFault) -> str:
    code = "env:Sender" if fault.sender else "env:Receiver"
    return _envelope(
        f"<env:Fault><env:Code><env:Value>{code}</env:Value><env:Subcode><env:Value>{fault.subcode}</env:Value>"
        f'</env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">{escape(fault.reason)}</env:Text>'
        "</env:Reason></env:Fault>"
    )


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken profile: Base64(SHA-1(nonce + created + password))."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()


class SimulatedCamera:
    """One camera on ``spec.host:spec.port``; ``auth_failures`` counts refused requests."""

    def __init__(self, spec: CameraSpec, snapshot: bytes) -> None:
        self.spec = spec
        self.snapshot = snapshot
        self.ptz = PtzState()
        self.auth_failures = 0
        self.requests: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self.port = spec.port

    @property
    def base(self) -> str:
        return f"http://{self.spec.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024)
        for service in ("device_service", "media_service", "ptz_service"):
            app.router.add_post(f"/onvif/{service}", self._soap)
        app.router.add_get("/onvif/snapshot.jpg", self._snapshot)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.spec.host, self.spec.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the real port when 0 was asked for

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ HTTP
    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.Response(body=self.snapshot, content_type="image/jpeg")

    async def _soap(self, request: web.Request) -> web.Response:
        service = request.path.rsplit("/", 1)[1]
        try:
            root = ET.fromstring(await request.read())
            body = root.find("env:Body", NS)
            if body is None or len(body) == 0:
                raise SoapFault("ter:InvalidArgs", "no SOAP Body")
            operation = body[0]
            name = operation.tag.rsplit("}", 1)[-1]
            self.requests[name] = self.requests.get(name, 0) + 1
            if name != "GetSystemDateAndTime":
                self._authenticate(root)
            answer = self._dispatch(service, name, operation)
        except SoapFault as fault:
            return web.Response(
                status=fault.status, text=_fault_xml(fault), content_type="application/soap+xml", charset="utf-8"
            )
        except ET.ParseError as exc:
            malformed = SoapFault("ter:WellFormed", f"malformed XML: {exc}")
            return web.Response(status=400, text=_fault_xml(malformed), content_type="application/soap+xml")
        return web.Response(text=_envelope(answer), content_type="application/soap+xml", charset="utf-8")

    def _authenticate(self, root: ET.Element) -> None:
        token = root.find("env:Header/wsse:Security/wsse:UsernameToken", NS)
        if token is None:
            self.auth_failures += 1
            raise SoapFault("ter:NotAuthorized", "Sender not authorized: no UsernameToken")
        user = token.findtext("wsse:Username", "", NS)
        password = token.find("wsse:Password", NS)
        given = (password.text or "") if password is not None else ""
        kind = (password.get("Type", "") if password is not None else "").rsplit("#", 1)[-1]
        ok = user == self.spec.username
        if kind == "PasswordDigest":
            nonce = base64.b64decode(token.findtext("wsse:Nonce", "", NS) or "")
            created = token.findtext("wsu:Created", "", NS) or ""
            expected = password_digest(nonce, created, self.spec.password)
            ok = ok and hmac.compare_digest(given, expected) and _recent(created)
        else:
            ok = ok and hmac.compare_digest(given, self.spec.password)
        if not ok:
            self.auth_failures += 1
            raise SoapFault("ter:NotAuthorized", "Sender not authorized")

    # ------------------------------------------------------------------ operations
    def _dispatch(self, service: str, name: str, op: ET.Element) -> str:
        handler = {
            ("device_service", "GetSystemDateAndTime"): self._time,
            ("device_service", "GetServices"): self._services,
            ("device_service", "GetCapabilities"): self._capabilities,
            ("device_service", "GetDeviceInformation"): self._information,
            ("media_service", "GetProfiles"): self._profiles,
            ("media_service", "GetStreamUri"): self._stream_uri,
            ("media_service", "GetSnapshotUri"): self._snapshot_uri,
            ("ptz_service", "GetStatus"): self._ptz_status,
            ("ptz_service", "AbsoluteMove"): self._absolute_move,
            ("ptz_service", "RelativeMove"): self._relative_move,
            ("ptz_service", "ContinuousMove"): self._continuous_move,
            ("ptz_service", "Stop"): self._stop,
        }.get((service, name))
        if handler is None or (service == "ptz_service" and not self.spec.ptz):
            raise SoapFault("ter:ActionNotSupported", f"{name} is not supported by this device", 400)
        return handler(op)

    def _time(self, op: ET.Element) -> str:
        now = dt.datetime.now(dt.UTC)
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>Manual</tt:DateTimeType>"
            "<tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime>"
            f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>"
            f"<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date></tt:UTCDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _service_list(self) -> list[tuple[str, str]]:
        out = [(NS["tds"], f"{self.base}/onvif/device_service"), (NS["trt"], f"{self.base}/onvif/media_service")]
        if self.spec.ptz:
            out.append((NS["tptz"], f"{self.base}/onvif/ptz_service"))
        return out

    def _services(self, op: ET.Element) -> str:
        items = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{xaddr}</tds:XAddr>"
            "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
            for ns, xaddr in self._service_list()
        )
        return f"<tds:GetServicesResponse>{items}</tds:GetServicesResponse>"

    def _capabilities(self, op: ET.Element) -> str:
        ptz = f"<tt:PTZ><tt:XAddr>{self.base}/onvif/ptz_service</tt:XAddr></tt:PTZ>" if self.spec.ptz else ""
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{self.base}/onvif/device_service</tt:XAddr></tt:Device>"
            f"<tt:Media><tt:XAddr>{self.base}/onvif/media_service</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
            "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
            f"{ptz}</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def _information(self, op: ET.Element) -> str:
        s = self.spec
        return (
            f"<tds:GetDeviceInformationResponse><tds:Manufacturer>{escape(s.manufacturer)}</tds:Manufacturer>"
            f"<tds:Model>{escape(s.model)}</tds:Model><tds:FirmwareVersion>{escape(s.firmware)}</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{escape(s.serial)}</tds:SerialNumber><tds:HardwareId>{escape(s.hardware)}"
            "</tds:HardwareId></tds:GetDeviceInformationResponse>"
        )

    PROFILES = (("profile_1", "MainStream"), ("profile_2", "SubStream"))

    def _profiles(self, op: ET.Element) -> str:
        out = []
        width, height = self.spec.width, self.spec.height
        for token, name in self.PROFILES:
            ptz = (
                '<tt:PTZConfiguration token="ptz_config"><tt:Name>PTZ</tt:Name><tt:UseCount>2</tt:UseCount>'
                "<tt:NodeToken>ptz_node</tt:NodeToken></tt:PTZConfiguration>"
                if self.spec.ptz
                else ""
            )
            out.append(
                f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{name}</tt:Name>'
                f'<tt:VideoEncoderConfiguration token="enc_{token}"><tt:Name>{name}</tt:Name>'
                "<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding>"
                f"<tt:Resolution><tt:Width>{width}</tt:Width><tt:Height>{height}</tt:Height></tt:Resolution>"
                "<tt:Quality>5</tt:Quality><tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type>"
                "<tt:IPv4Address>0.0.0.0</tt:IPv4Address></tt:Address><tt:Port>0</tt:Port><tt:TTL>1</tt:TTL>"
                "<tt:AutoStart>false</tt:AutoStart></tt:Multicast><tt:SessionTimeout>PT60S</tt:SessionTimeout>"
                f"</tt:VideoEncoderConfiguration>{ptz}</trt:Profiles>"
            )
        return f"<trt:GetProfilesResponse>{''.join(out)}</trt:GetProfilesResponse>"

    def _token(self, op: ET.Element, ns: str) -> str:
        token = op.findtext(f"{ns}:ProfileToken", "", NS)
        if token not in {t for t, _ in self.PROFILES}:
            raise SoapFault("ter:InvalidArgVal/ter:NoProfile", f"no profile {token!r}")
        return token

    def _media_uri(self, uri: str, tag: str) -> str:
        return (
            f"<trt:{tag}><trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
            f"</trt:MediaUri></trt:{tag}>"
        )

    def _stream_uri(self, op: ET.Element) -> str:
        token = self._token(op, "trt")
        uri = self.spec.sub_rtsp_url if token == "profile_2" and self.spec.sub_rtsp_url else self.spec.rtsp_url
        return self._media_uri(uri, "GetStreamUriResponse")

    def _snapshot_uri(self, op: ET.Element) -> str:
        self._token(op, "trt")
        return self._media_uri(f"{self.base}/onvif/snapshot.jpg", "GetSnapshotUriResponse")

    def _ptz_status(self, op: ET.Element) -> str:
        self._token(op, "tptz")
        p = self.ptz
        p.settle()
        state = "MOVING" if p.moving else "IDLE"
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            "<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>"
            f'<tt:PanTilt x="{p.pan:.6f}" y="{p.tilt:.6f}"/><tt:Zoom x="{p.zoom:.6f}"/></tt:Position>'
            f"<tt:MoveStatus><tt:PanTilt>{state}</tt:PanTilt><tt:Zoom>{state}</tt:Zoom></tt:MoveStatus>"
            f"<tt:UtcTime>{now}</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>"
        )

    @staticmethod
    def _vector(op: ET.Element, name: str) -> tuple[float | None, float | None, float | None]:
        pan_tilt = op.find(f"tptz:{name}/tt:PanTilt", NS)
        zoom = op.find(f"tptz:{name}/tt:Zoom", NS)

        def number(el: ET.Element | None, attr: str) -> float | None:
            if el is None or el.get(attr) is None:
                return None
            try:
                return float(el.get(attr, ""))
            except ValueError:
                raise SoapFault("ter:InvalidArgVal", f"{name}: {attr} is not a number") from None

        return number(pan_tilt, "x"), number(pan_tilt, "y"), number(zoom, "x")

    def _absolute_move(self, op: ET.Element) -> str:
        self._token(op, "tptz")
        x, y, z = self._vector(op, "Position")
        p = self.ptz
        p.settle()
        p.velocity = (0.0, 0.0, 0.0)
        if x is not None:
            p.pan = _clamp(x, -1, 1)
        if y is not None:
            p.tilt = _clamp(y, -1, 1)
        if z is not None:
            p.zoom = _clamp(z, 0, 1)
        return "<tptz:AbsoluteMoveResponse/>"

    def _relative_move(self, op: ET.Element) -> str:
        self._token(op, "tptz")
        x, y, z = self._vector(op, "Translation")
        p = self.ptz
        p.settle()
        p.pan = _clamp(p.pan + (x or 0), -1, 1)
        p.tilt = _clamp(p.tilt + (y or 0), -1, 1)
        p.zoom = _clamp(p.zoom + (z or 0), 0, 1)
        return "<tptz:RelativeMoveResponse/>"

    def _continuous_move(self, op: ET.Element) -> str:
        self._token(op, "tptz")
        x, y, z = self._vector(op, "Velocity")
        self.ptz.settle()
        self.ptz.velocity = (_clamp(x or 0, -1, 1), _clamp(y or 0, -1, 1), _clamp(z or 0, -1, 1))
        return "<tptz:ContinuousMoveResponse/>"

    def _stop(self, op: ET.Element) -> str:
        self._token(op, "tptz")
        self.ptz.settle()
        self.ptz.velocity = (0.0, 0.0, 0.0)
        return "<tptz:StopResponse/>"


def _recent(created: str) -> bool:
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return abs((dt.datetime.now(dt.UTC) - when).total_seconds()) <= CREATED_WINDOW_S


_SNAPSHOT: bytes | None = None


def test_pattern_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A real JPEG of ffmpeg's test pattern (made once per process)."""
    global _SNAPSHOT
    if _SNAPSHOT is None:
        _SNAPSHOT = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
             f"testsrc=size={width}x{height}:rate=1", "-frames:v", "1", "-f", "mjpeg", "pipe:1"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
    return _SNAPSHOT


async def serve_camera(spec: CameraSpec) -> SimulatedCamera:
    """Start one simulated camera; ``close()`` it when done."""
    camera = SimulatedCamera(spec, test_pattern_jpeg())
    await camera.start()
    log.info("simulated ONVIF camera on %s (PTZ %s), stream %s", camera.base, "on" if spec.ptz else "off",
             spec.rtsp_url)  # fmt: skip
    return camera
