"""The ONVIF operations the mapper uses, over onvif-zeep-async, with its errors sorted into three kinds.

Why onvif-zeep-async and not onvif-zeep: both install on Python 3.11 with zeep 4.3, but onvif-zeep's last
release is from 2018 and it is synchronous (requests), so every call would hold a worker thread; onvif-zeep-async
is maintained and native asyncio (aiohttp), so a camera's calls share the mapper's event loop. Both sign calls
with WS-UsernameToken (PasswordDigest).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class CameraError(Exception):
    """An ONVIF call failed for a reason of the camera's (a SOAP fault other than authentication)."""


class AuthFailed(CameraError):
    """The camera refused the credentials."""


class Unreachable(CameraError):
    """The camera did not answer (refused, timed out, reset)."""


class NotSupported(CameraError):
    """The camera has no such service (no PTZ, say)."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    manufacturer: str
    model: str
    firmware: str
    serial: str
    hardware: str


@dataclass(frozen=True, slots=True)
class Profile:
    token: str
    name: str
    encoding: str
    width: int
    height: int
    ptz: bool


@dataclass(frozen=True, slots=True)
class PtzPosition:
    pan: float
    tilt: float
    zoom: float
    moving: bool


def _fault_text(exc: BaseException) -> str:
    parts = [str(getattr(exc, "message", "") or exc)]
    for code in getattr(exc, "subcodes", None) or []:
        parts.append(str(getattr(code, "localname", code)))
    return " ".join(parts)


def classify(exc: BaseException, where: str) -> CameraError:
    """Turn what onvif-zeep-async, zeep, aiohttp or the OS raised into one of our three kinds."""
    import aiohttp
    import zeep.exceptions

    if isinstance(exc, CameraError):
        return exc
    if isinstance(exc, zeep.exceptions.Fault):
        text = _fault_text(exc)
        if "NotAuthorized" in text or "not authorized" in text.lower() or "authenticat" in text.lower():
            return AuthFailed(f"{where}: authentication failed (the camera refused the user name or password)")
        if "ActionNotSupported" in text or "not supported" in text.lower():
            return NotSupported(f"{where}: not supported by this camera ({text.strip()})")
        return CameraError(f"{where}: the camera answered with a fault: {text.strip()}")
    if isinstance(exc, zeep.exceptions.TransportError):
        if exc.status_code == 401:
            return AuthFailed(f"{where}: authentication failed (HTTP 401)")
        return CameraError(f"{where}: HTTP {exc.status_code} from the camera")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return Unreachable(f"{where}: no answer (timed out)")
    if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
        return Unreachable(f"{where}: unreachable ({type(exc).__name__}: {exc})")
    onvif_error = _onvif_error_type()
    if onvif_error is not None and isinstance(exc, onvif_error):
        cause = exc.__cause__ or exc.__context__
        if cause is not None and cause is not exc:
            return classify(cause, where)
    return CameraError(f"{where}: {type(exc).__name__}: {exc}")


def _onvif_error_type() -> type[BaseException] | None:
    try:
        from onvif.exceptions import ONVIFError
    except ImportError:  # pragma: no cover - the extra is installed with the mapper
        return None
    error: type[BaseException] = ONVIFError
    return error


class Camera:
    """One camera's ONVIF session: device management, media and (when offered) PTZ."""

    def __init__(self, host: str, port: int, user: str, password: str, timeout: float) -> None:
        self.host, self.port, self.user = host, port, user
        self._password = password
        self.timeout = timeout
        self.where = f"camera {host}:{port}"
        self._cam: Any = None
        self._media: Any = None
        self._ptz: Any = None
        self._has_ptz = False
        self._profiles: list[Profile] = []

    async def open(self) -> None:
        """Discover the services and profiles. Raises AuthFailed, Unreachable or CameraError."""
        try:
            from onvif import ONVIFCamera
        except ImportError as exc:
            raise CameraError("the ONVIF client is not installed. Hint: pip install 'kubeedge-mapper[onvif]'") from exc
        await self.close()
        cam = ONVIFCamera(self.host, self.port, self.user, self._password, no_cache=True)
        self._cam = cam
        try:
            await asyncio.wait_for(cam.update_xaddrs(), self.timeout)
            self._media = await cam.create_media_service()
            self._has_ptz = any("ptz" in str(ns).lower() for ns in cam.xaddrs)
            if self._has_ptz:
                self._ptz = await cam.create_ptz_service()
            await self.refresh_profiles()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise classify(exc, self.where) from None

    async def close(self) -> None:
        cam, self._cam = self._cam, None
        self._media = self._ptz = None
        if cam is not None:
            try:
                await cam.close()
            except Exception as exc:  # closing a session to a dead camera may fail; nothing to keep
                log.debug("%s: close: %s", self.where, exc)

    async def _call(self, what: str, call: Any) -> Any:
        if self._cam is None:
            raise Unreachable(f"{self.where}: not connected")
        try:
            return await asyncio.wait_for(call, self.timeout)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise classify(exc, f"{self.where} {what}") from None

    @property
    def has_ptz(self) -> bool:
        return self._has_ptz

    @property
    def profiles(self) -> list[Profile]:
        return list(self._profiles)

    async def refresh_profiles(self) -> list[Profile]:
        media = self._media
        answer = await self._call("GetProfiles", media.GetProfiles())
        profiles = []
        for p in answer or []:
            enc = getattr(p, "VideoEncoderConfiguration", None)
            res = getattr(enc, "Resolution", None)
            profiles.append(
                Profile(
                    token=str(p.token),
                    name=str(getattr(p, "Name", "") or p.token),
                    encoding=str(getattr(enc, "Encoding", "") or ""),
                    width=int(getattr(res, "Width", 0) or 0),
                    height=int(getattr(res, "Height", 0) or 0),
                    ptz=getattr(p, "PTZConfiguration", None) is not None,
                )
            )
        if not profiles:
            raise CameraError(f"{self.where}: the camera has no media profile")
        self._profiles = profiles
        return profiles

    def profile(self, wanted: str) -> Profile:
        """The profile named or tokened ``wanted`` (the first one when empty)."""
        if not wanted:
            return self._profiles[0]
        for p in self._profiles:
            if wanted in (p.token, p.name):
                return p
        names = ", ".join(f"{p.name} ({p.token})" for p in self._profiles)
        raise CameraError(f"{self.where}: no profile {wanted!r}; the camera has {names}")

    async def device_info(self) -> DeviceInfo:
        devicemgmt = await self._call("devicemgmt", self._cam.create_devicemgmt_service())
        a = await self._call("GetDeviceInformation", devicemgmt.GetDeviceInformation())
        return DeviceInfo(
            manufacturer=str(a.Manufacturer or ""),
            model=str(a.Model or ""),
            firmware=str(a.FirmwareVersion or ""),
            serial=str(a.SerialNumber or ""),
            hardware=str(a.HardwareId or ""),
        )

    async def stream_uri(self, profile: str) -> str:
        token = self.profile(profile).token
        request = {
            "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
            "ProfileToken": token,
        }
        answer = await self._call("GetStreamUri", self._media.GetStreamUri(request))
        return str(answer.Uri)

    async def snapshot_uri(self, profile: str) -> str:
        token = self.profile(profile).token
        answer = await self._call("GetSnapshotUri", self._media.GetSnapshotUri({"ProfileToken": token}))
        return str(answer.Uri)

    # ------------------------------------------------------------------ PTZ
    def _need_ptz(self) -> Any:
        if not self._has_ptz or self._ptz is None:
            raise NotSupported(f"{self.where}: PTZ is not supported by this camera (it offers no PTZ service)")
        return self._ptz

    async def ptz_position(self, profile: str) -> PtzPosition:
        ptz = self._need_ptz()
        token = self.profile(profile).token
        status = await self._call("PTZ GetStatus", ptz.GetStatus({"ProfileToken": token}))
        pos = status.Position
        move = getattr(status, "MoveStatus", None)
        moving = any(str(getattr(move, axis, "IDLE") or "IDLE").upper() == "MOVING" for axis in ("PanTilt", "Zoom"))
        return PtzPosition(pan=float(pos.PanTilt.x), tilt=float(pos.PanTilt.y), zoom=float(pos.Zoom.x), moving=moving)

    async def absolute_move(self, profile: str, pan: float, tilt: float, zoom: float) -> None:
        ptz = self._need_ptz()
        request = {
            "ProfileToken": self.profile(profile).token,
            "Position": {"PanTilt": {"x": pan, "y": tilt}, "Zoom": {"x": zoom}},
        }
        await self._call("PTZ AbsoluteMove", ptz.AbsoluteMove(request))

    async def continuous_move(self, profile: str, pan: float, tilt: float, zoom: float) -> None:
        ptz = self._need_ptz()
        request = {
            "ProfileToken": self.profile(profile).token,
            "Velocity": {"PanTilt": {"x": pan, "y": tilt}, "Zoom": {"x": zoom}},
        }
        await self._call("PTZ ContinuousMove", ptz.ContinuousMove(request))

    async def stop(self, profile: str) -> None:
        ptz = self._need_ptz()
        request = {"ProfileToken": self.profile(profile).token, "PanTilt": True, "Zoom": True}
        await self._call("PTZ Stop", ptz.Stop(request))
