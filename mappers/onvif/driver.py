"""The ONVIF camera driver: what each property reads and writes, and the camera's state.

A property's operation is named by the property (KubeEdge's ``getURI``, ``saveFrame``, ``saveVideo``, plus
``deviceInfo``, ``profiles``, ``pan``/``tilt``/``zoom``, ``ptzMove``...) or by ``visitors.configData.operation``.

State: ``offline`` while the camera does not answer; ``unhealthy`` with "authentication failed" when it refuses
the credentials (then it is asked again only after a growing pause, never once per property per cycle), when
the password cannot be read, or when its stream cannot be opened; ``ok`` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mapper_framework.driver import ConfigError, Driver, StreamNotSupported
from mapper_framework.values import PropertyValueError
from mappers.onvif.camera import AuthFailed, Camera, CameraError, NotSupported, PtzPosition, Unreachable
from mappers.onvif.capture import file_prefix, save_frames, save_videos
from mappers.onvif.config import OnvifProtocolConfig, OnvifVisitorConfig
from mappers.onvif.frames import FrameHub, StreamError

log = logging.getLogger(__name__)

AUTH_RETRY_FIRST_S = 30.0
AUTH_RETRY_MAX_S = 600.0
PTZ_CACHE_S = 0.2
_TWIN_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_.,:/@#]")
_MOVES = {
    "left": (-0.5, 0.0, 0.0),
    "right": (0.5, 0.0, 0.0),
    "up": (0.0, 0.5, 0.0),
    "down": (0.0, -0.5, 0.0),
    "zoomin": (0.0, 0.0, 0.5),
    "zoomout": (0.0, 0.0, -0.5),
}


def twin_text(text: str) -> str:
    """Free text from the camera with the characters edgecore's twin rule refuses (spaces...) made ``_``."""
    return _TWIN_UNSAFE.sub("_", text.strip())


def with_credentials(uri: str, user: str, password: str) -> str:
    """``rtsp://host/...`` with ``user:password@`` added (cameras ask the same credentials for RTSP)."""
    from urllib.parse import quote

    scheme, sep, rest = uri.partition("://")
    if not sep or not user or "@" in rest.split("/", 1)[0]:
        return uri
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


class OnvifDriver(Driver[OnvifProtocolConfig, OnvifVisitorConfig]):
    protocol_config = OnvifProtocolConfig
    visitor_config = OnvifVisitorConfig

    def __init__(self, device: str, frame_idle_s: float = 5.0) -> None:
        self.device = device
        self.frame_idle_s = frame_idle_s
        self.config: OnvifProtocolConfig | None = None
        self.camera: Camera | None = None
        self._secret = ""
        self._problem = ""  # credentials refused or unreadable: unhealthy
        self._retry_at = 0.0
        self._retry_pause = AUTH_RETRY_FIRST_S
        self._unreachable = ""
        self._stream_error = ""
        self._hubs: dict[str, FrameHub] = {}
        self._jobs: dict[str, asyncio.Task[str]] = {}
        self._last: dict[str, str | BaseException] = {}
        self._ptz: tuple[float, str, PtzPosition] | None = None
        self.auth_attempts = 0

    # ------------------------------------------------------------------ session
    async def connect(self, config: OnvifProtocolConfig) -> None:
        self.config = config
        await self._open()

    async def _open(self) -> None:
        """Open the session. Raises Unreachable (the SDK retries and shows offline); records auth problems."""
        assert self.config is not None
        try:
            self._secret = self.config.secret()
        except ConfigError as exc:
            self._fail_auth(f"device {self.device}: {exc}")
            return
        camera = Camera(self.config.host, self.config.port, self.config.userName, self._secret, self.config.timeout)
        self.auth_attempts += 1
        try:
            await camera.open()
        except AuthFailed as exc:
            self._fail_auth(f"device {self.device}: {exc} as user {self.config.userName!r}")
            return
        except Unreachable as exc:
            self._unreachable = str(exc)
            raise
        self.camera = camera
        # A new session: a stream error from before the camera went away says nothing about its stream now.
        self._problem, self._unreachable, self._stream_error = "", "", ""
        self._retry_pause = AUTH_RETRY_FIRST_S
        log.info(
            "device %s: camera %s, %d profile(s), PTZ %s",
            self.device,
            self.config.address,
            len(camera.profiles),
            "yes" if camera.has_ptz else "no",
        )

    def _fail_auth(self, message: str) -> None:
        if message != self._problem:
            log.error(
                "%s; asking again in %.0f s. Hint: check the user name and the password file",
                message,
                self._retry_pause,
            )
        self._problem = message
        self._retry_at = time.monotonic() + self._retry_pause
        self._retry_pause = min(self._retry_pause * 2, AUTH_RETRY_MAX_S)
        self.camera = None

    async def _session(self) -> Camera:
        if self.camera is None:
            if self._problem and time.monotonic() < self._retry_at:
                raise AuthFailed(self._problem)
            try:
                await self._open()
            except Unreachable as exc:
                self._unreachable = str(exc)
                raise
            if self.camera is None:
                raise AuthFailed(self._problem)
        return self.camera

    async def _guard(self, call: Any) -> Any:
        """Await a camera call, keeping track of whether the camera answers and accepts us."""
        try:
            result = await call
        except Unreachable as exc:
            self._unreachable = str(exc)
            raise
        except AuthFailed as exc:
            self._fail_auth(str(exc))
            raise
        self._unreachable = ""
        return result

    async def state(self) -> str:
        if self._problem:
            return "unhealthy"
        if self._unreachable or self.camera is None:
            return "offline"
        if self._stream_error:
            return "unhealthy"
        return "ok"

    async def close(self) -> None:
        for job in self._jobs.values():
            job.cancel()
        for job in list(self._jobs.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job  # cancelled or failed captures: nothing left to report
        self._jobs.clear()
        for hub in self._hubs.values():
            await hub.close()
        self._hubs.clear()
        if self.camera is not None:
            await self.camera.close()
            self.camera = None

    # ------------------------------------------------------------------ reads
    def _profile(self, visitor: OnvifVisitorConfig) -> str:
        return visitor.profile or (self.config.profile if self.config else "")

    async def read(self, visitor: OnvifVisitorConfig) -> Any:
        op = visitor.op
        camera = await self._session()
        profile = self._profile(visitor)
        if op == "stream_uri":
            return await self._guard(camera.stream_uri(profile))
        if op == "snapshot_uri":
            return await self._guard(camera.snapshot_uri(profile))
        if op == "profiles":
            profiles = await self._guard(camera.refresh_profiles())
            return ",".join(twin_text(f"{p.name}:{p.token}:{p.encoding}:{p.width}x{p.height}") for p in profiles)
        if op in ("device_info", "manufacturer", "model", "firmware", "serial", "hardware"):
            info = await self._guard(camera.device_info())
            if op == "device_info":
                return ",".join(
                    f"{k}:{twin_text(v)}"
                    for k, v in (
                        ("manufacturer", info.manufacturer),
                        ("model", info.model),
                        ("firmware", info.firmware),
                        ("serial", info.serial),
                    )
                )
            return twin_text(str(getattr(info, op)))
        if op in ("pan", "tilt", "zoom"):
            return getattr(await self._position(camera, profile), op)
        if op == "ptz_move":
            return "moving" if (await self._position(camera, profile, fresh=True)).moving else "idle"
        if op in ("save_frame", "save_video"):
            return await self._capture(visitor, op)
        raise ConfigError(f"operation {op} cannot be read")

    async def _position(self, camera: Camera, profile: str, fresh: bool = False) -> PtzPosition:
        # pan, tilt and zoom fall due together: one GetStatus serves the three.
        now = time.monotonic()
        if not fresh and self._ptz is not None and self._ptz[1] == profile and now - self._ptz[0] < PTZ_CACHE_S:
            return self._ptz[2]
        position: PtzPosition = await self._guard(camera.ptz_position(profile))
        self._ptz = (now, profile, position)
        return position

    # ------------------------------------------------------------------ streams
    async def _stream_uri(self, visitor: OnvifVisitorConfig) -> str:
        camera = await self._session()
        uri: str = await self._guard(camera.stream_uri(self._profile(visitor)))
        assert self.config is not None
        return with_credentials(uri, self.config.userName, self._secret)

    async def _hub(self, visitor: OnvifVisitorConfig) -> FrameHub:
        uri = await self._stream_uri(visitor)
        hub = self._hubs.get(uri)
        if hub is None:
            hub = FrameHub(uri, label=f"device {self.device}", idle_s=self.frame_idle_s)
            self._hubs[uri] = hub
        return hub

    async def _capture(self, visitor: OnvifVisitorConfig, op: str) -> str:
        """Start a capture if none runs, and answer with the newest finished one (the first is awaited).

        Captures run beside the collect rounds, so a 30-frame saveFrame never delays the other properties.
        """
        name = visitor.property_name
        running = self._jobs.get(name)
        if running is None or running.done():
            running = asyncio.create_task(self._capture_job(visitor, op), name=f"{op}-{self.device}-{name}")
            self._jobs[name] = running
        if name not in self._last:
            await asyncio.shield(running)
        last = self._last[name]
        if isinstance(last, BaseException):
            raise last
        return last

    async def _capture_job(self, visitor: OnvifVisitorConfig, op: str) -> str:
        name = visitor.property_name
        try:
            folder = Path(visitor.outputDir or f"/tmp/kubeedge-mapper/{self.device.replace('/', '_')}")
            prefix = file_prefix(self.device, name)
            if op == "save_frame":
                hub = await self._hub(visitor)
                paths = await save_frames(
                    hub,
                    folder,
                    prefix,
                    visitor.frame_format(),
                    visitor.frameCount or 1,
                    visitor.frameInterval,
                    visitor.maxFiles,
                )
            else:
                paths = await save_videos(
                    await self._stream_uri(visitor),
                    folder,
                    prefix,
                    visitor.video_format(),
                    visitor.frameCount or 25,
                    visitor.videoNum or 1,
                    visitor.maxFiles,
                )
            if not paths:
                raise StreamError(f"device {self.device} property {name}: no file written")
        except StreamError as exc:
            self._stream_error = str(exc)
            self._last[name] = StreamError(_scrub(str(exc), self._secret))
            return ""
        except (CameraError, ConfigError, OSError) as exc:
            self._last[name] = exc
            return ""
        self._stream_error = ""
        result = str(paths[-1])
        self._last[name] = result
        return result

    def frames(self, visitor: OnvifVisitorConfig) -> AsyncIterator[bytes]:
        if visitor.op not in ("save_frame", "save_video", "stream_uri"):
            raise StreamNotSupported(
                f"property {visitor.property_name} is not a stream; use getURI, saveFrame or saveVideo"
            )
        return self._frames(visitor)

    async def _frames(self, visitor: OnvifVisitorConfig) -> AsyncIterator[bytes]:
        try:
            hub = await self._hub(visitor)
        except CameraError as exc:
            raise StreamNotSupported(str(exc)) from None
        stream = hub.subscribe()
        try:
            async for frame in stream:
                self._stream_error = ""  # the stream works (again)
                yield frame
        except StreamError as exc:
            self._stream_error = str(exc)
            raise StreamNotSupported(_scrub(str(exc), self._secret)) from None
        finally:
            await stream.aclose()

    # ------------------------------------------------------------------ writes
    async def write(self, visitor: OnvifVisitorConfig, value: Any) -> None:
        op = visitor.op
        camera = await self._session()
        profile = self._profile(visitor)
        if op in ("pan", "tilt", "zoom"):
            now = await self._position(camera, profile, fresh=True)
            target = {"pan": now.pan, "tilt": now.tilt, "zoom": now.zoom}
            target[op] = float(value)
            await self._guard(camera.absolute_move(profile, target["pan"], target["tilt"], target["zoom"]))
            self._ptz = None
            return
        if op == "ptz_move":
            command = str(value).strip().lower()
            if command == "stop":
                await self._guard(camera.stop(profile))
            elif command in _MOVES:
                await self._guard(camera.continuous_move(profile, *_MOVES[command]))
            else:
                try:
                    x, y, z = (float(v) for v in command.split(","))
                except ValueError:
                    x = y = z = math.nan
                if not all(-1.0 <= v <= 1.0 for v in (x, y, z)):  # NaN fails this too
                    raise PropertyValueError(
                        f"ptzMove: {value!r} is not a command; use stop, left, right, up, down, zoomin, zoomout"
                        " or a velocity 'pan,tilt,zoom', each in [-1,1]"
                    )
                await self._guard(camera.continuous_move(profile, x, y, z))
            self._ptz = None
            return
        raise PermissionError(f"device {self.device} property {visitor.property_name}: {op} cannot be written")


_URI_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def _scrub(text: str, secret: str) -> str:
    """Belt and braces: ffmpeg echoes the URI it was given, credentials included (percent-encoded, as
    :func:`with_credentials` writes them): every ``scheme://user:password@`` becomes ``scheme://***@``, and the
    password itself, in either form, ``***``."""
    from urllib.parse import quote

    text = _URI_CREDENTIALS.sub(r"\1***@", text)
    if secret:
        for form in (secret, quote(secret, safe="")):
            text = text.replace(form, "***")
    return text


__all__ = ["NotSupported", "OnvifDriver"]
