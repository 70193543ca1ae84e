"""A simulated ONVIF camera: the device, media and PTZ operations a client needs, over real HTTP/SOAP 1.2 with
WS-Security UsernameToken authentication, stream URIs that point at a real RTSP server and a real JPEG snapshot.

Paths (``POST``, SOAP 1.2): ``/onvif/device_service``, ``/onvif/media_service``, ``/onvif/ptz_service``; and
``GET /onvif/snapshot.jpg`` (HTTP Digest, as cameras do; open when ``CameraSpec.snapshot_auth`` is false).

Operations:

- device: GetSystemDateAndTime (the one answered without credentials: clients read the clock first, to sign with
  it), GetCapabilities (Category All/Device/Media/PTZ), GetServices (IncludeCapability false or true),
  GetServiceCapabilities, GetDeviceInformation;
- media (ver10): GetProfiles, GetProfile, GetStreamUri, GetSnapshotUri, GetServiceCapabilities;
- PTZ (ver20, only with ``CameraSpec.ptz``): GetNodes, GetNode, GetConfigurations, GetConfiguration, GetStatus,
  AbsoluteMove, RelativeMove, ContinuousMove (with Timeout), Stop, GetServiceCapabilities.

Faults are SOAP 1.2 faults with the ONVIF subcodes (ONVIF Core, "SOAP fault messages"), HTTP 400 for a sender's
fault and 500 for a receiver's (the SOAP 1.2 HTTP binding): missing or wrong credentials ``env:Sender /
ter:NotAuthorized``; an operation the camera does not have ``env:Receiver / ter:ActionNotSupported`` (the whole PTZ
path when PTZ is off, with ``ter:NoSuchService`` under it); a bad argument ``env:Sender / ter:InvalidArgVal / ...``.

For tests::

    rtsp = start_rtsp_server(0)                                   # mappers.onvif.rtsp_server
    camera = await serve_camera(CameraSpec(port=0, password="pw", rtsp_url=rtsp.url))
    camera.port, camera.ptz.pan, camera.auth_failures, camera.requests["GetProfiles"]
    await camera.close(); rtsp.close()
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from xml.sax.saxutils import escape

from aiohttp import web

log = logging.getLogger(__name__)

SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
NS = {
    "env": SOAP_ENV,
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "ter": "http://www.onvif.org/ver10/error",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
}
# Prefixes declared on every answer: a fault's subcodes are QNames, resolved by the client against them.
_ANSWER_PREFIXES = ("env", "tds", "trt", "tptz", "tt", "ter")
SOAP_CONTENT_TYPE = "application/soap+xml"
CREATED_WINDOW_S = 300.0  # how far a token's Created may be from our clock (the usual camera tolerance)
PAN_TILT_SPEED = 0.5  # position units per second at velocity 1
ZOOM_SPEED = 0.25
PROFILES = (("profile_1", "MainStream"), ("profile_2", "SubStream"))
PTZ_NODE = "ptz_node"
PTZ_CONFIG = "ptz_config"
SNAPSHOT_PATH = "/onvif/snapshot.jpg"
DIGEST_REALM = "simulated-camera"
# The generic spaces of ONVIF PTZ: positions pan/tilt in [-1, 1] and zoom in [0, 1], velocities in [-1, 1].
_SPACE = "http://www.onvif.org/ver10/tptz"
SPACES = {
    "AbsolutePanTiltPositionSpace": (f"{_SPACE}/PanTiltSpaces/PositionGenericSpace", (-1.0, 1.0), (-1.0, 1.0)),
    "AbsoluteZoomPositionSpace": (f"{_SPACE}/ZoomSpaces/PositionGenericSpace", (0.0, 1.0), None),
    "RelativePanTiltTranslationSpace": (f"{_SPACE}/PanTiltSpaces/TranslationGenericSpace", (-1.0, 1.0), (-1.0, 1.0)),
    "RelativeZoomTranslationSpace": (f"{_SPACE}/ZoomSpaces/TranslationGenericSpace", (-1.0, 1.0), None),
    "ContinuousPanTiltVelocitySpace": (f"{_SPACE}/PanTiltSpaces/VelocityGenericSpace", (-1.0, 1.0), (-1.0, 1.0)),
    "ContinuousZoomVelocitySpace": (f"{_SPACE}/ZoomSpaces/VelocityGenericSpace", (-1.0, 1.0), None),
    "PanTiltSpeedSpace": (f"{_SPACE}/PanTiltSpaces/GenericSpeedSpace", (0.0, 1.0), None),
    "ZoomSpeedSpace": (f"{_SPACE}/ZoomSpaces/ZoomGenericSpeedSpace", (0.0, 1.0), None),
}


@dataclass
class CameraSpec:
    """What one simulated camera is. ``port`` 0 takes any free port (read it back from ``SimulatedCamera.port``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    username: str = "admin"
    password: str = field(default="", repr=False)
    rtsp_url: str = "rtsp://127.0.0.1:8554/stream"
    sub_rtsp_url: str = ""  # the second profile's stream; the first one's when empty
    ptz: bool = True
    width: int = 640  # of both profiles' streams (the RTSP server plays one pattern)
    height: int = 480
    fps: int = 25
    manufacturer: str = "KubeEdge Mapper"
    model: str = "SimCam 640"
    firmware: str = "1.0.0"
    serial: str = "SIM-0001"
    hardware: str = "sim-hw-1"
    snapshot_auth: bool = True  # the snapshot URL asks for HTTP Digest with the same user and password


@dataclass
class PtzState:
    """Where the camera points. Positions follow the velocity of the last ContinuousMove until Stop, its Timeout,
    or the end of an axis' range (where that axis stops, as a motor at its end stop does)."""

    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    since: float = field(default_factory=time.monotonic)
    until: float | None = None  # when the current continuous move times out

    def settle(self, now: float | None = None) -> None:
        """Bring the position up to ``now`` (monotonic seconds)."""
        now = time.monotonic() if now is None else now
        end = now if self.until is None else min(now, self.until)
        elapsed = max(0.0, end - self.since)
        self.since = now
        vx, vy, vz = self.velocity
        self.pan, vx = _advance(self.pan, vx * PAN_TILT_SPEED * elapsed, vx, -1.0, 1.0)
        self.tilt, vy = _advance(self.tilt, vy * PAN_TILT_SPEED * elapsed, vy, -1.0, 1.0)
        self.zoom, vz = _advance(self.zoom, vz * ZOOM_SPEED * elapsed, vz, 0.0, 1.0)
        self.velocity = (vx, vy, vz)
        if self.until is not None and now >= self.until:
            self.velocity, self.until = (0.0, 0.0, 0.0), None

    @property
    def moving(self) -> bool:
        """Pan, tilt or zoom is moving (as of the last :meth:`settle`)."""
        return any(self.velocity)

    @property
    def pan_tilt_moving(self) -> bool:
        return bool(self.velocity[0] or self.velocity[1])

    @property
    def zoom_moving(self) -> bool:
        return bool(self.velocity[2])


def _advance(position: float, delta: float, velocity: float, low: float, high: float) -> tuple[float, float]:
    """The new position and velocity of one axis: at an end of its range, the axis stops."""
    moved = position + delta
    if moved <= low and velocity < 0:
        return low, 0.0
    if moved >= high and velocity > 0:
        return high, 0.0
    return _clamp(moved, low, high), velocity


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class SoapFault(Exception):
    """An answer as a SOAP 1.2 fault: its code (``env:Sender``: HTTP 400; ``env:Receiver`` or
    ``env:VersionMismatch``: HTTP 500) and the ONVIF subcodes, outermost first (e.g. ``("ter:InvalidArgVal",
    "ter:NoProfile")``)."""

    def __init__(self, subcodes: tuple[str, ...], reason: str, code: str = "env:Sender") -> None:
        super().__init__(reason)
        self.subcodes, self.reason, self.code = subcodes, reason, code

    @property
    def status(self) -> int:
        return 400 if self.code == "env:Sender" else 500

    def xml(self) -> str:
        code = self.code
        subcodes = "".join(f"<env:Subcode><env:Value>{s}</env:Value>" for s in self.subcodes)
        subcodes += "</env:Subcode>" * len(self.subcodes)
        return (
            f"<env:Fault><env:Code><env:Value>{code}</env:Value>{subcodes}</env:Code>"
            f'<env:Reason><env:Text xml:lang="en">{escape(self.reason)}</env:Text></env:Reason></env:Fault>'
        )


def _not_supported(what: str, no_such_service: bool = False) -> SoapFault:
    subcodes = ("ter:ActionNotSupported", "ter:NoSuchService") if no_such_service else ("ter:ActionNotSupported",)
    return SoapFault(subcodes, f"{what} is not supported by this device", code="env:Receiver")


def _invalid(detail: str, reason: str) -> SoapFault:
    return SoapFault(("ter:InvalidArgVal", f"ter:{detail}"), reason)


def _envelope(body: str) -> str:
    names = " ".join(f'xmlns:{k}="{NS[k]}"' for k in _ANSWER_PREFIXES)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope {names}><env:Body>{body}</env:Body></env:Envelope>'


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken profile: Base64(SHA-1(nonce + created + password))."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()


def parse_duration(text: str) -> float:
    """Seconds in an xs:duration such as ``PT1.5S`` or ``PT1M`` (years and months as 365 and 30 days)."""
    found = re.fullmatch(
        r"\s*(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?)?\s*", text
    )
    if found is None or text.strip().endswith(("P", "T")):
        raise ValueError(f"not an xs:duration: {text!r}")
    sign, years, months, days, hours, minutes, seconds = found.groups()
    total = (
        int(years or 0) * 365 * 86400
        + int(months or 0) * 30 * 86400
        + int(days or 0) * 86400
        + int(hours or 0) * 3600
        + int(minutes or 0) * 60
        + float(seconds or 0)
    )
    return -total if sign else total


@dataclass(frozen=True)
class _Call:
    """One operation to answer: its element and the base URL the client reached us at."""

    op: ET.Element
    base: str

    def text(self, path: str, default: str = "") -> str:
        found = self.op.findtext(path, None, NS)
        return default if found is None else found.strip()


_Handler = Callable[[_Call], str]


class SimulatedCamera:
    """One camera on ``spec.host:port``.

    For asserts: ``ptz`` (its :class:`PtzState`; call ``ptz.settle()`` before reading a position during a move),
    ``auth_failures`` (requests refused for missing or wrong credentials, SOAP and snapshot alike), ``requests``
    (operation name -> times asked, refused ones included) and ``port`` (the real one when 0 was asked for).
    """

    def __init__(self, spec: CameraSpec, snapshot: bytes) -> None:
        self.spec = spec
        self.snapshot = snapshot
        self.ptz = PtzState()
        self.auth_failures = 0
        self.requests: dict[str, int] = {}
        self.port = spec.port
        self._runner: web.AppRunner | None = None
        self._digest_nonces: dict[str, float] = {}  # HTTP Digest nonces we issued -> when
        self._services: dict[str, dict[str, _Handler]] = {
            "device_service": {
                "GetSystemDateAndTime": self._time,
                "GetCapabilities": self._capabilities,
                "GetServices": self._services_list,
                "GetServiceCapabilities": self._device_service_capabilities,
                "GetDeviceInformation": self._information,
            },
            "media_service": {
                "GetProfiles": self._profiles,
                "GetProfile": self._profile,
                "GetStreamUri": self._stream_uri,
                "GetSnapshotUri": self._snapshot_uri,
                "GetServiceCapabilities": self._media_service_capabilities,
            },
            "ptz_service": {
                "GetNodes": self._ptz_nodes,
                "GetNode": self._ptz_node,
                "GetConfigurations": self._ptz_configurations,
                "GetConfiguration": self._ptz_configuration,
                "GetStatus": self._ptz_status,
                "AbsoluteMove": self._absolute_move,
                "RelativeMove": self._relative_move,
                "ContinuousMove": self._continuous_move,
                "Stop": self._stop,
                "GetServiceCapabilities": self._ptz_service_capabilities,
            },
        }

    @property
    def base(self) -> str:
        """``http://host:port`` of this camera as configured (answers use the address the client reached)."""
        return f"http://{self.spec.host}:{self.port}"

    @property
    def device_url(self) -> str:
        return f"{self.base}/onvif/device_service"

    async def start(self) -> None:
        """Listen on ``spec.host:spec.port``."""
        app = web.Application(client_max_size=256 * 1024)
        for service in self._services:
            app.router.add_post(f"/onvif/{service}", self._soap)
        app.router.add_get(SNAPSHOT_PATH, self._snapshot)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.spec.host, self.spec.port)
        try:
            await site.start()
        except BaseException:
            await self.close()
            raise
        self.port = int(self._runner.addresses[0][1])  # the real port when 0 was asked for

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> SimulatedCamera:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ HTTP
    async def _soap(self, request: web.Request) -> web.Response:
        service = request.path.rsplit("/", 1)[1]
        # What the client reached us at: URLs in answers use it, so they work behind 0.0.0.0 or a port mapping.
        base = f"{request.scheme}://{request.host}" if request.host else self.base
        try:
            try:
                root = ET.fromstring(await request.read())
            except ET.ParseError as exc:
                raise SoapFault(("ter:WellFormed",), f"malformed XML: {exc}") from None
            if root.tag != f"{{{SOAP_ENV}}}Envelope":
                if root.tag == f"{{{SOAP11_ENV}}}Envelope":
                    raise SoapFault((), "SOAP 1.1 is not supported: send SOAP 1.2", code="env:VersionMismatch")
                raise SoapFault(("ter:WellFormed",), "not a SOAP envelope")
            body = root.find("env:Body", NS)
            if body is None or len(body) == 0:
                raise SoapFault(("ter:WellFormed",), "no SOAP Body")
            operation = body[0]
            namespace, _, name = operation.tag[1:].partition("}")
            self.requests[name] = self.requests.get(name, 0) + 1
            if name != "GetSystemDateAndTime":
                self._authenticate(root)
            answer = self._dispatch(service, namespace, name, _Call(operation, base))
        except SoapFault as fault:
            log.debug("camera %s: fault %s: %s", self.port, "/".join(fault.subcodes), fault.reason)
            return self._answer(fault.xml(), fault.status)
        return self._answer(answer, 200)

    @staticmethod
    def _answer(body: str, status: int) -> web.Response:
        return web.Response(status=status, text=_envelope(body), content_type=SOAP_CONTENT_TYPE, charset="utf-8")

    def _authenticate(self, root: ET.Element) -> None:
        token = root.find("env:Header/wsse:Security/wsse:UsernameToken", NS)
        if token is None:
            self.auth_failures += 1
            raise SoapFault(("ter:NotAuthorized",), "Sender not authorized: no WS-Security UsernameToken")
        user = (token.findtext("wsse:Username", "", NS) or "").strip()
        password = token.find("wsse:Password", NS)
        given = (password.text or "").strip() if password is not None else ""
        kind = (password.get("Type", "") if password is not None else "").rsplit("#", 1)[-1]
        created = (token.findtext("wsu:Created", "", NS) or "").strip()
        ok = hmac.compare_digest(user.encode(), self.spec.username.encode())
        if kind == "PasswordDigest":
            try:
                nonce = base64.b64decode(token.findtext("wsse:Nonce", "", NS) or "", validate=True)
            except ValueError:
                nonce = b""
            expected = password_digest(nonce, created, self.spec.password)
            ok = hmac.compare_digest(given.encode(), expected.encode()) and bool(nonce) and _recent(created) and ok
        else:  # PasswordText (also when Type is left out, its default in the profile)
            ok = hmac.compare_digest(given.encode(), self.spec.password.encode()) and ok
            ok = ok and (not created or _recent(created))
        if not ok:
            self.auth_failures += 1
            raise SoapFault(("ter:NotAuthorized",), "Sender not authorized")

    async def _snapshot(self, request: web.Request) -> web.Response:
        if self.spec.snapshot_auth and not self._digest_ok(request):
            nonce = secrets.token_hex(16)
            self._digest_nonces[nonce] = time.monotonic()
            # Forget nonces nobody answered within the window, so a client looping on 401 cannot grow the table.
            horizon = time.monotonic() - CREATED_WINDOW_S
            self._digest_nonces = {n: t for n, t in self._digest_nonces.items() if t >= horizon}
            challenge = f'Digest realm="{DIGEST_REALM}", qop="auth", algorithm=MD5, nonce="{nonce}"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge}, text="authentication required")
        return web.Response(body=self.snapshot, content_type="image/jpeg")

    def _digest_ok(self, request: web.Request) -> bool:
        """RFC 7616 Digest, MD5, qop=auth, with a nonce we issued."""
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("digest "):
            return False
        fields = _digest_fields(header[7:])
        nonce = fields.get("nonce", "")
        if nonce not in self._digest_nonces or fields.get("uri") != request.path_qs:
            self.auth_failures += 1
            return False

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{self.spec.username}:{DIGEST_REALM}:{self.spec.password}")
        ha2 = md5(f"{request.method}:{fields.get('uri', '')}")
        if fields.get("qop") == "auth":
            expected = md5(f"{ha1}:{nonce}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:auth:{ha2}")
        else:
            expected = md5(f"{ha1}:{nonce}:{ha2}")
        ok = fields.get("username") == self.spec.username and hmac.compare_digest(
            fields.get("response", "").encode(), expected.encode()
        )
        if not ok:
            self.auth_failures += 1
        return ok

    # ------------------------------------------------------------------ operations
    def _dispatch(self, service: str, namespace: str, name: str, call: _Call) -> str:
        if service == "ptz_service" and not self.spec.ptz:
            raise _not_supported("PTZ", no_such_service=True)
        handler = self._services[service].get(name)
        expected = {"device_service": NS["tds"], "media_service": NS["trt"], "ptz_service": NS["tptz"]}[service]
        if handler is None or namespace != expected:
            raise _not_supported(f"{name} ({namespace})")
        return handler(call)

    def _time(self, call: _Call) -> str:
        now = dt.datetime.now(dt.UTC)
        when = (
            f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>"
            f"<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date>"
        )
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>Manual</tt:DateTimeType>"
            "<tt:DaylightSavings>false</tt:DaylightSavings><tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
            f"<tt:UTCDateTime>{when}</tt:UTCDateTime><tt:LocalDateTime>{when}</tt:LocalDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _service_list(self, base: str) -> list[tuple[str, str, str]]:
        """(namespace, XAddr, service capabilities) of each service offered."""
        out = [
            (NS["tds"], f"{base}/onvif/device_service", self._device_caps()),
            (NS["trt"], f"{base}/onvif/media_service", self._media_caps()),
        ]
        if self.spec.ptz:
            out.append((NS["tptz"], f"{base}/onvif/ptz_service", self._ptz_caps()))
        return out

    def _services_list(self, call: _Call) -> str:
        include = _boolean(call.text("tds:IncludeCapability", "false"), "IncludeCapability")
        items = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{escape(xaddr)}</tds:XAddr>"
            + (f"<tds:Capabilities>{caps}</tds:Capabilities>" if include else "")
            + "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
            for ns, xaddr, caps in self._service_list(call.base)
        )
        return f"<tds:GetServicesResponse>{items}</tds:GetServicesResponse>"

    @staticmethod
    def _device_caps() -> str:
        return (
            '<tds:Capabilities><tds:Network IPFilter="false" ZeroConfiguration="false" IPVersion6="false"'
            ' DynDNS="false" NTP="0"/><tds:Security UsernameToken="true" HttpDigest="false"/>'
            '<tds:System DiscoveryResolve="false" DiscoveryBye="false" RemoteDiscovery="false" SystemBackup="false"'
            ' SystemLogging="false" FirmwareUpgrade="false"/></tds:Capabilities>'
        )

    @staticmethod
    def _media_caps() -> str:
        return (
            '<trt:Capabilities SnapshotUri="true" Rotation="false" VideoSourceMode="false" OSD="false">'
            f'<trt:ProfileCapabilities MaximumNumberOfProfiles="{len(PROFILES)}"/>'
            '<trt:StreamingCapabilities RTPMulticast="false" RTP_TCP="true" RTP_RTSP_TCP="true"'
            ' NonAggregateControl="false" NoRTSPStreaming="false"/></trt:Capabilities>'
        )

    @staticmethod
    def _ptz_caps() -> str:
        return '<tptz:Capabilities EFlip="false" Reverse="false" GetCompatibleConfigurations="false"/>'

    def _device_service_capabilities(self, call: _Call) -> str:
        return f"<tds:GetServiceCapabilitiesResponse>{self._device_caps()}</tds:GetServiceCapabilitiesResponse>"

    def _media_service_capabilities(self, call: _Call) -> str:
        return f"<trt:GetServiceCapabilitiesResponse>{self._media_caps()}</trt:GetServiceCapabilitiesResponse>"

    def _ptz_service_capabilities(self, call: _Call) -> str:
        return f"<tptz:GetServiceCapabilitiesResponse>{self._ptz_caps()}</tptz:GetServiceCapabilitiesResponse>"

    def _capabilities(self, call: _Call) -> str:
        found = call.op.findall("tds:Category", NS)
        categories = [c for el in found for c in (el.text or "").split()] or ["All"]
        wanted = {c.lower() for c in categories}
        offered = {"all", "device", "media"} | ({"ptz"} if self.spec.ptz else set())
        if not wanted <= offered:
            missing = ", ".join(sorted(categories, key=str.lower))
            raise _not_supported(f"capability category {missing}", no_such_service=True)
        every = "all" in wanted
        base = call.base
        device = (
            f"<tt:Device><tt:XAddr>{escape(base)}/onvif/device_service</tt:XAddr>"
            "<tt:Security><tt:TLS1.1>false</tt:TLS1.1><tt:TLS1.2>false</tt:TLS1.2>"
            "<tt:OnboardKeyGeneration>false</tt:OnboardKeyGeneration><tt:AccessPolicyConfig>false"
            "</tt:AccessPolicyConfig><tt:X.509Token>false</tt:X.509Token><tt:SAMLToken>false</tt:SAMLToken>"
            "<tt:KerberosToken>false</tt:KerberosToken><tt:RELToken>false</tt:RELToken></tt:Security></tt:Device>"
        )
        media = (
            f"<tt:Media><tt:XAddr>{escape(base)}/onvif/media_service</tt:XAddr><tt:StreamingCapabilities>"
            "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
            "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
        )
        ptz = f"<tt:PTZ><tt:XAddr>{escape(base)}/onvif/ptz_service</tt:XAddr></tt:PTZ>"
        parts = [
            device if every or "device" in wanted else "",
            media if every or "media" in wanted else "",
            ptz if self.spec.ptz and (every or "ptz" in wanted) else "",
        ]
        capabilities = f"<tds:Capabilities>{''.join(parts)}</tds:Capabilities>"
        return f"<tds:GetCapabilitiesResponse>{capabilities}</tds:GetCapabilitiesResponse>"

    def _information(self, call: _Call) -> str:
        s = self.spec
        return (
            f"<tds:GetDeviceInformationResponse><tds:Manufacturer>{escape(s.manufacturer)}</tds:Manufacturer>"
            f"<tds:Model>{escape(s.model)}</tds:Model><tds:FirmwareVersion>{escape(s.firmware)}</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{escape(s.serial)}</tds:SerialNumber><tds:HardwareId>{escape(s.hardware)}"
            "</tds:HardwareId></tds:GetDeviceInformationResponse>"
        )

    # ------------------------------------------------------------------ media
    def _profile_xml(self, token: str, name: str, element: str) -> str:
        s = self.spec
        source = (
            '<tt:VideoSourceConfiguration token="video_source_config"><tt:Name>VideoSource</tt:Name>'
            f"<tt:UseCount>{len(PROFILES)}</tt:UseCount><tt:SourceToken>video_source</tt:SourceToken>"
            f'<tt:Bounds x="0" y="0" width="{s.width}" height="{s.height}"/></tt:VideoSourceConfiguration>'
        )
        encoder = (
            f'<tt:VideoEncoderConfiguration token="encoder_{token}"><tt:Name>{name}</tt:Name>'
            "<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding>"
            f"<tt:Resolution><tt:Width>{s.width}</tt:Width><tt:Height>{s.height}</tt:Height></tt:Resolution>"
            f"<tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>{s.fps}</tt:FrameRateLimit>"
            "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>2048</tt:BitrateLimit></tt:RateControl>"
            f"<tt:H264><tt:GovLength>{s.fps}</tt:GovLength><tt:H264Profile>Baseline</tt:H264Profile></tt:H264>"
            "<tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address>"
            "</tt:Address><tt:Port>0</tt:Port><tt:TTL>1</tt:TTL><tt:AutoStart>false</tt:AutoStart></tt:Multicast>"
            "<tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration>"
        )
        ptz = self._ptz_configuration_xml("tt:PTZConfiguration") if s.ptz else ""
        return f'<{element} token="{token}" fixed="true"><tt:Name>{name}</tt:Name>{source}{encoder}{ptz}</{element}>'

    def _profiles(self, call: _Call) -> str:
        items = "".join(self._profile_xml(token, name, "trt:Profiles") for token, name in PROFILES)
        return f"<trt:GetProfilesResponse>{items}</trt:GetProfilesResponse>"

    def _profile(self, call: _Call) -> str:
        token = self._token(call, "trt")
        name = dict(PROFILES)[token]
        return f"<trt:GetProfileResponse>{self._profile_xml(token, name, 'trt:Profile')}</trt:GetProfileResponse>"

    @staticmethod
    def _token(call: _Call, prefix: str) -> str:
        token = call.text(f"{prefix}:ProfileToken")
        if token not in dict(PROFILES):
            raise _invalid("NoProfile", f"no profile {token!r}")
        return token

    @staticmethod
    def _media_uri(uri: str, tag: str) -> str:
        return (
            f"<trt:{tag}><trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
            f"</trt:MediaUri></trt:{tag}>"
        )

    def _stream_uri(self, call: _Call) -> str:
        token = self._token(call, "trt")
        protocol = call.text("trt:StreamSetup/tt:Transport/tt:Protocol", "RTSP")
        stream = call.text("trt:StreamSetup/tt:Stream", "RTP-Unicast")
        if stream != "RTP-Unicast" or protocol not in ("RTSP", "TCP", "UDP"):
            # What the simulator's RTSP server cannot give: multicast, or RTSP tunnelled in HTTP.
            raise _invalid("InvalidStreamSetup", f"stream setup {stream} over {protocol} is not supported")
        uri = self.spec.sub_rtsp_url if token == PROFILES[1][0] and self.spec.sub_rtsp_url else self.spec.rtsp_url
        return self._media_uri(uri, "GetStreamUriResponse")

    def _snapshot_uri(self, call: _Call) -> str:
        self._token(call, "trt")
        return self._media_uri(f"{call.base}{SNAPSHOT_PATH}", "GetSnapshotUriResponse")

    # ------------------------------------------------------------------ PTZ
    @staticmethod
    def _space_xml(tag: str, uri: str, x: tuple[float, float], y: tuple[float, float] | None) -> str:
        def rng(name: str, limits: tuple[float, float]) -> str:
            return f"<tt:{name}><tt:Min>{limits[0]:g}</tt:Min><tt:Max>{limits[1]:g}</tt:Max></tt:{name}>"

        return f"<{tag}><tt:URI>{uri}</tt:URI>{rng('XRange', x)}{rng('YRange', y) if y else ''}</{tag}>"

    def _ptz_node_xml(self, element: str) -> str:
        spaces = "".join(self._space_xml(f"tt:{name}", *value) for name, value in SPACES.items())
        return (
            f'<{element} token="{PTZ_NODE}" FixedHomePosition="false"><tt:Name>PTZ</tt:Name>'
            f"<tt:SupportedPTZSpaces>{spaces}</tt:SupportedPTZSpaces>"
            "<tt:MaximumNumberOfPresets>0</tt:MaximumNumberOfPresets><tt:HomeSupported>false</tt:HomeSupported>"
            f"</{element}>"
        )

    def _ptz_configuration_xml(self, element: str) -> str:
        absolute_pt, absolute_zoom = SPACES["AbsolutePanTiltPositionSpace"], SPACES["AbsoluteZoomPositionSpace"]
        return (
            f'<{element} token="{PTZ_CONFIG}"><tt:Name>PTZ</tt:Name><tt:UseCount>{len(PROFILES)}</tt:UseCount>'
            f"<tt:NodeToken>{PTZ_NODE}</tt:NodeToken>"
            f"<tt:DefaultAbsolutePantTiltPositionSpace>{absolute_pt[0]}</tt:DefaultAbsolutePantTiltPositionSpace>"
            f"<tt:DefaultAbsoluteZoomPositionSpace>{absolute_zoom[0]}</tt:DefaultAbsoluteZoomPositionSpace>"
            f"<tt:DefaultRelativePanTiltTranslationSpace>{SPACES['RelativePanTiltTranslationSpace'][0]}"
            "</tt:DefaultRelativePanTiltTranslationSpace>"
            f"<tt:DefaultRelativeZoomTranslationSpace>{SPACES['RelativeZoomTranslationSpace'][0]}"
            "</tt:DefaultRelativeZoomTranslationSpace>"
            f"<tt:DefaultContinuousPanTiltVelocitySpace>{SPACES['ContinuousPanTiltVelocitySpace'][0]}"
            "</tt:DefaultContinuousPanTiltVelocitySpace>"
            f"<tt:DefaultContinuousZoomVelocitySpace>{SPACES['ContinuousZoomVelocitySpace'][0]}"
            "</tt:DefaultContinuousZoomVelocitySpace>"
            '<tt:DefaultPTZSpeed><tt:PanTilt x="1" y="1"/><tt:Zoom x="1"/></tt:DefaultPTZSpeed>'
            "<tt:DefaultPTZTimeout>PT10S</tt:DefaultPTZTimeout>"
            f"<tt:PanTiltLimits>{self._space_xml('tt:Range', *absolute_pt)}</tt:PanTiltLimits>"
            f"<tt:ZoomLimits>{self._space_xml('tt:Range', *absolute_zoom)}</tt:ZoomLimits>"
            f"</{element}>"
        )

    def _ptz_nodes(self, call: _Call) -> str:
        return f"<tptz:GetNodesResponse>{self._ptz_node_xml('tptz:PTZNode')}</tptz:GetNodesResponse>"

    def _ptz_node(self, call: _Call) -> str:
        if call.text("tptz:NodeToken") != PTZ_NODE:
            raise _invalid("NoEntity", f"no PTZ node {call.text('tptz:NodeToken')!r}")
        return f"<tptz:GetNodeResponse>{self._ptz_node_xml('tptz:PTZNode')}</tptz:GetNodeResponse>"

    def _ptz_configurations(self, call: _Call) -> str:
        items = self._ptz_configuration_xml("tptz:PTZConfiguration")
        return f"<tptz:GetConfigurationsResponse>{items}</tptz:GetConfigurationsResponse>"

    def _ptz_configuration(self, call: _Call) -> str:
        if call.text("tptz:PTZConfigurationToken") != PTZ_CONFIG:
            raise _invalid("NoConfig", f"no PTZ configuration {call.text('tptz:PTZConfigurationToken')!r}")
        items = self._ptz_configuration_xml("tptz:PTZConfiguration")
        return f"<tptz:GetConfigurationResponse>{items}</tptz:GetConfigurationResponse>"

    def _ptz_status(self, call: _Call) -> str:
        self._token(call, "tptz")
        p = self.ptz
        p.settle()
        pan_tilt = "MOVING" if p.pan_tilt_moving else "IDLE"
        zoom = "MOVING" if p.zoom_moving else "IDLE"
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            "<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>"
            f'<tt:PanTilt x="{p.pan:.6f}" y="{p.tilt:.6f}" space="{SPACES["AbsolutePanTiltPositionSpace"][0]}"/>'
            f'<tt:Zoom x="{p.zoom:.6f}" space="{SPACES["AbsoluteZoomPositionSpace"][0]}"/></tt:Position>'
            f"<tt:MoveStatus><tt:PanTilt>{pan_tilt}</tt:PanTilt><tt:Zoom>{zoom}</tt:Zoom></tt:MoveStatus>"
            f"<tt:UtcTime>{now}</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>"
        )

    @staticmethod
    def _vector(call: _Call, name: str) -> tuple[float | None, float | None, float | None]:
        pan_tilt = call.op.find(f"tptz:{name}/tt:PanTilt", NS)
        zoom = call.op.find(f"tptz:{name}/tt:Zoom", NS)

        def number(el: ET.Element | None, attr: str) -> float | None:
            if el is None or el.get(attr) is None:
                return None
            try:
                return float(el.get(attr, ""))
            except ValueError:
                raise _invalid("InvalidPosition", f"{name}: {attr} is not a number") from None

        return number(pan_tilt, "x"), number(pan_tilt, "y"), number(zoom, "x")

    def _absolute_move(self, call: _Call) -> str:
        self._token(call, "tptz")
        x, y, z = self._vector(call, "Position")
        # Outside the position space is the client's error (ONVIF PTZ: ter:InvalidPosition), not clamped.
        for value, low, high, axis in ((x, -1.0, 1.0, "pan"), (y, -1.0, 1.0, "tilt"), (z, 0.0, 1.0, "zoom")):
            if value is not None and not low <= value <= high:
                raise _invalid("InvalidPosition", f"{axis} {value:g} is outside [{low:g}, {high:g}]")
        p = self.ptz
        p.settle()
        p.velocity, p.until = (0.0, 0.0, 0.0), None
        # The move is done at once: the simulator has no motor to wait for.
        p.pan = p.pan if x is None else x
        p.tilt = p.tilt if y is None else y
        p.zoom = p.zoom if z is None else z
        return "<tptz:AbsoluteMoveResponse/>"

    def _relative_move(self, call: _Call) -> str:
        self._token(call, "tptz")
        x, y, z = self._vector(call, "Translation")
        p = self.ptz
        p.settle()
        p.velocity, p.until = (0.0, 0.0, 0.0), None
        p.pan = _clamp(p.pan + (x or 0.0), -1.0, 1.0)
        p.tilt = _clamp(p.tilt + (y or 0.0), -1.0, 1.0)
        p.zoom = _clamp(p.zoom + (z or 0.0), 0.0, 1.0)
        return "<tptz:RelativeMoveResponse/>"

    def _continuous_move(self, call: _Call) -> str:
        self._token(call, "tptz")
        x, y, z = self._vector(call, "Velocity")
        timeout = call.text("tptz:Timeout")
        try:
            seconds = parse_duration(timeout) if timeout else None
        except ValueError:
            raise _invalid("InvalidTimeout", f"Timeout {timeout!r} is not an xs:duration") from None
        if seconds is not None and seconds <= 0:
            raise _invalid("InvalidTimeout", f"Timeout {timeout!r} is not positive")
        p = self.ptz
        p.settle()
        vx, vy, vz = p.velocity
        # An axis left out of the request keeps its motion (the velocity given replaces only what it names).
        p.velocity = (
            vx if x is None else _clamp(x, -1.0, 1.0),
            vy if y is None else _clamp(y, -1.0, 1.0),
            vz if z is None else _clamp(z, -1.0, 1.0),
        )
        p.until = None if seconds is None else p.since + seconds
        return "<tptz:ContinuousMoveResponse/>"

    def _stop(self, call: _Call) -> str:
        self._token(call, "tptz")
        pan_tilt = _boolean(call.text("tptz:PanTilt", "true"), "PanTilt")
        zoom = _boolean(call.text("tptz:Zoom", "true"), "Zoom")
        p = self.ptz
        p.settle()
        vx, vy, vz = p.velocity
        p.velocity = (0.0 if pan_tilt else vx, 0.0 if pan_tilt else vy, 0.0 if zoom else vz)
        if not p.moving:
            p.until = None
        return "<tptz:StopResponse/>"


def _boolean(text: str, name: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _invalid("InvalidArgs", f"{name}: {text!r} is not an xs:boolean")


def _digest_fields(text: str) -> dict[str, str]:
    """The ``key="quoted"`` and ``key=bare`` pairs of an ``Authorization: Digest`` header, keys lower-cased."""
    return {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', text)
    }


def _recent(created: str) -> bool:
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return abs((dt.datetime.now(dt.UTC) - when).total_seconds()) <= CREATED_WINDOW_S


_SNAPSHOTS: dict[tuple[int, int], bytes] = {}


def pattern_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A real JPEG of ffmpeg's test pattern at this size (made once per size and process)."""
    if (width, height) not in _SNAPSHOTS:
        try:
            _SNAPSHOTS[width, height] = subprocess.run(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                 f"testsrc=size={width}x{height}:rate=1", "-frames:v", "1", "-f", "mjpeg", "pipe:1"],
                capture_output=True, check=True, timeout=30,
            ).stdout  # fmt: skip
        except FileNotFoundError:
            raise RuntimeError(
                "ffmpeg is not installed (it makes the camera's snapshot). Hint: apt install ffmpeg"
            ) from None
    return _SNAPSHOTS[width, height]


async def serve_camera(spec: CameraSpec) -> SimulatedCamera:
    """Start one simulated camera on ``spec.host:spec.port``; ``close()`` it when done (or ``async with`` it)."""
    snapshot = await asyncio.to_thread(pattern_jpeg, spec.width, spec.height)
    camera = SimulatedCamera(spec, snapshot)
    await camera.start()
    log.info(
        "simulated ONVIF camera on %s (PTZ %s), stream %s", camera.base, "on" if spec.ptz else "off", spec.rtsp_url
    )
    return camera
