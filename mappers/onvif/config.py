"""Typed configData of ONVIF cameras and their properties, with the field names KubeEdge's ONVIF mapper uses.

``password`` names where the secret is, never the secret itself: a file (a mounted Kubernetes Secret, as
upstream does) or ``env:NAME`` / ``${NAME}`` for an environment variable. The secret is read at connect time,
kept out of ``repr`` and never put into a message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mapper_framework.driver import ConfigError

# Operations, by the lower-cased property name (or the visitor's ``operation``): what a property reads.
STRING_OPS = {
    "geturi": "stream_uri",
    "streamuri": "stream_uri",
    "getsnapshoturi": "snapshot_uri",
    "snapshoturi": "snapshot_uri",
    "deviceinfo": "device_info",
    "manufacturer": "manufacturer",
    "model": "model",
    "firmwareversion": "firmware",
    "firmware": "firmware",
    "serialnumber": "serial",
    "serial": "serial",
    "hardwareid": "hardware",
    "profiles": "profiles",
}
STREAM_OPS = {"saveframe": "save_frame", "savevideo": "save_video"}
PTZ_OPS = {"pan": "pan", "tilt": "tilt", "zoom": "zoom", "ptzmove": "ptz_move", "ptz": "ptz_move"}
OPERATIONS = {**STRING_OPS, **STREAM_OPS, **PTZ_OPS}

FRAME_FORMATS = {"jpg", "jpeg", "png", "bmp"}
VIDEO_FORMATS = {"mp4", "mkv", "avi", "flv", "ts", "mov"}
_ENV = re.compile(r"^(?:env:([A-Za-z_][A-Za-z0-9_]*)|\$\{([A-Za-z_][A-Za-z0-9_]*)\})$")


@dataclass(slots=True)
class OnvifProtocolConfig:
    """``spec.protocol.configData`` of an ONVIF Device."""

    url: str = ""
    userName: str = ""
    password: str = field(default="", repr=False)
    profile: str = ""  # profile name or token; the first profile when empty
    timeout: float = 10.0
    host: str = field(init=False, default="")
    port: int = field(init=False, default=80)

    def __post_init__(self) -> None:
        text = self.url.strip()
        for scheme in ("http://", "https://"):
            if text.startswith(scheme):
                text = text[len(scheme) :]
        text = text.split("/", 1)[0]
        host, sep, port = text.rpartition(":")
        if not text:
            raise ConfigError("url: missing; give the camera's ONVIF address as host:port (e.g. 192.168.1.64:80)")
        if not sep:
            host, port = text, "80"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"url: {self.url!r} is not host:port (e.g. 192.168.1.64:80)")
        self.host, self.port = host.strip("[]"), int(port)
        if self.timeout <= 0:
            raise ConfigError(f"timeout: must be > 0 seconds, got {self.timeout}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def secret(self) -> str:
        """The password, read now (a rotated Secret is picked up at the next connect)."""
        ref = self.password.strip()
        if not ref:
            return ""
        found = _ENV.match(ref)
        if found:
            name = found.group(1) or found.group(2)
            value = os.environ.get(name)
            if value is None:
                # A name is configuration, but this may be a password typed in by mistake: only a NAME_LIKE_THIS
                # is echoed.
                shown = name if re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) else "named there"
                raise ConfigError(f"password: environment variable {shown} is not set. Hint: set it for the mapper")
            return value
        if not (ref.startswith(("/", "./", "../", "~"))):
            # Never echo the value: it may be a password typed in by mistake.
            raise ConfigError(
                "password: must name a file holding the password (an absolute path, e.g. a mounted Secret) or"
                " env:NAME; a password written into the CR is refused"
            )
        path = Path(ref).expanduser()
        # A path is configuration, but this may be a password typed in by mistake ("/Hunter2!"): the path is echoed
        # only when its folder exists, i.e. it names a real place.
        shown = str(path) if path.parent.is_dir() and path.parent != Path("/") else "named there"
        try:
            return path.read_text().rstrip("\r\n")
        except FileNotFoundError:
            raise ConfigError(f"password: file {shown} does not exist. Hint: mount the Secret there") from None
        except OSError as exc:
            raise ConfigError(f"password: cannot read the file {shown}: {exc.strerror}") from None


@dataclass(slots=True)
class OnvifVisitorConfig:
    """A property's ``visitors.configData``: what to read, and for stream properties how to capture."""

    dataType: str = "string"
    operation: str = ""  # overrides the operation named by the property name
    profile: str = ""  # overrides the device's profile for this property
    format: str = ""
    outputDir: str = ""
    frameCount: int = 0
    frameInterval: int = 0
    videoNum: int = 1
    maxFiles: int = 1000
    property_name: str = field(init=False, default="")  # set by the SDK

    def __post_init__(self) -> None:
        self.dataType = self.dataType.lower()
        if self.dataType not in ("string", "stream", "float", "double", "int"):
            raise ConfigError(f"dataType: {self.dataType!r} is not one of string, stream, float")
        if self.frameCount < 0 or self.frameInterval < 0 or self.videoNum < 0 or self.maxFiles < 1:
            raise ConfigError("frameCount, frameInterval and videoNum must be >= 0, maxFiles >= 1")

    @property
    def op(self) -> str:
        """The operation; a ConfigError names the property when neither its name nor ``operation`` is known."""
        key = (self.operation or self.property_name).lower()
        found = OPERATIONS.get(key)
        if found is None:
            known = ", ".join(
                sorted(
                    {
                        "getURI",
                        "getSnapshotURI",
                        "deviceInfo",
                        "manufacturer",
                        "model",
                        "firmwareVersion",
                        "serialNumber",
                        "hardwareId",
                        "profiles",
                        "saveFrame",
                        "saveVideo",
                        "pan",
                        "tilt",
                        "zoom",
                        "ptzMove",
                    }
                )
            )
            raise ConfigError(
                f"property {self.property_name!r}: no ONVIF operation of that name. Hint: name the property (or"
                f" set visitors.configData.operation to) one of {known}"
            )
        return found

    def frame_format(self) -> str:
        fmt = (self.format or "jpg").lower()
        if fmt not in FRAME_FORMATS:
            raise ConfigError(f"format: {fmt!r} is not a frame format ({', '.join(sorted(FRAME_FORMATS))})")
        return "jpg" if fmt == "jpeg" else fmt

    def video_format(self) -> str:
        fmt = (self.format or "mp4").lower()
        if fmt not in VIDEO_FORMATS:
            raise ConfigError(f"format: {fmt!r} is not a video format ({', '.join(sorted(VIDEO_FORMATS))})")
        return fmt
