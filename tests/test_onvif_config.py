"""ONVIF configData: the camera address, where the password comes from (never the password itself in a message),
and which operation a property names."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapper_framework.driver import ConfigError, parse_config
from mappers.onvif.config import OnvifProtocolConfig, OnvifVisitorConfig
from mappers.onvif.driver import twin_text, with_credentials


def protocol(**data: object) -> OnvifProtocolConfig:
    return parse_config(OnvifProtocolConfig, {"url": "127.0.0.1:8000", "userName": "admin", **data}, "device d")


def test_url_forms() -> None:
    assert protocol().address == "127.0.0.1:8000"
    assert protocol(url="http://10.0.0.5:8080/onvif/device_service").address == "10.0.0.5:8080"
    assert protocol(url="cam.local").address == "cam.local:80"
    for bad in ("", "host:notaport", "host:70000"):
        with pytest.raises(ConfigError, match="url"):
            protocol(url=bad)


def test_password_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-Pass\n")
    assert protocol(password=str(secret)).secret() == "s3cret-Pass"
    monkeypatch.setenv("CAM_PASSWORD", "from-env")
    assert protocol(password="env:CAM_PASSWORD").secret() == "from-env"
    assert protocol(password="${CAM_PASSWORD}").secret() == "from-env"
    assert "from-env" not in repr(protocol(password="env:CAM_PASSWORD"))
    with pytest.raises(ConfigError, match=r"file .*missing-file does not exist\. Hint: mount the Secret"):
        protocol(password=str(tmp_path / "missing-file")).secret()
    monkeypatch.delenv("CAM_PASSWORD")
    with pytest.raises(ConfigError, match="environment variable CAM_PASSWORD is not set"):
        protocol(password="env:CAM_PASSWORD").secret()


def test_a_password_typed_into_the_cr_is_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        protocol(password="hunter2").secret()
    assert "hunter2" not in str(caught.value)
    assert "must name a file" in str(caught.value)


def test_operations_by_property_name_or_operation_key() -> None:
    def op(name: str, **data: object) -> str:
        visitor = parse_config(OnvifVisitorConfig, {"dataType": "string", **data}, "property")
        visitor.property_name = name
        return visitor.op

    assert op("getURI") == "stream_uri"
    assert op("deviceInfo") == "device_info"
    assert op("saveFrame") == "save_frame"
    assert op("mainStream", operation="getURI") == "stream_uri"
    assert op("pan") == "pan"
    with pytest.raises(ConfigError, match=r"property 'colour': no ONVIF operation of that name\. Hint"):
        op("colour")


def test_stream_fields_are_checked() -> None:
    visitor = parse_config(OnvifVisitorConfig, {"dataType": "stream", "format": "PNG"}, "p")
    assert visitor.frame_format() == "png"
    with pytest.raises(ConfigError, match="not a video format"):
        visitor.video_format()
    with pytest.raises(ConfigError, match="dataType"):
        parse_config(OnvifVisitorConfig, {"dataType": "picture"}, "p")
    with pytest.raises(ConfigError, match=">= 0"):
        parse_config(OnvifVisitorConfig, {"frameCount": -1}, "p")


def test_twin_text_and_credentials_in_stream_uris() -> None:
    assert twin_text("Acme Corp. (EU)") == "Acme_Corp.__EU_"
    assert with_credentials("rtsp://10.0.0.5:554/s1", "admin", "p@ss:w") == "rtsp://admin:p%40ss%3Aw@10.0.0.5:554/s1"
    assert with_credentials("rtsp://u:p@10.0.0.5/s1", "admin", "x") == "rtsp://u:p@10.0.0.5/s1"


def test_credentials_never_survive_in_an_error_text() -> None:
    """ffmpeg echoes the URI it was given, whose password with_credentials percent-encoded."""
    from mappers.onvif.driver import _scrub

    secret = "p@ss w/rd:%41"
    uri = with_credentials("rtsp://127.0.0.1:8554/stream", "admin", secret)
    said = _scrub(f"saveVideo: ffmpeg failed: {uri}: Connection refused", secret)
    assert said == "saveVideo: ffmpeg failed: rtsp://***@127.0.0.1:8554/stream: Connection refused"
    assert _scrub(f"raw {secret} and rtsp://u:x@h/s", secret) == "raw *** and rtsp://***@h/s"


@pytest.mark.parametrize(
    ("password", "said", "hidden"),
    [
        ("/Hunter2!", "password: file named there does not exist", "Hunter2"),
        ("${Hunter2}", "password: environment variable named there is not set", "Hunter2"),
        ("env:CAMERA_PASSWORD_UNSET_X", "environment variable CAMERA_PASSWORD_UNSET_X is not set", ""),
        ("/etc/no-such-camera-secret", "password: file /etc/no-such-camera-secret does not exist", ""),
    ],
)
def test_a_password_source_is_named_only_when_it_cannot_be_a_typed_password(
    password: str, said: str, hidden: str
) -> None:
    config = parse_config(OnvifProtocolConfig, {"url": "127.0.0.1:8000", "password": password}, "test")
    with pytest.raises(ConfigError) as err:
        config.secret()
    assert said in str(err.value)
    if hidden:
        assert hidden not in str(err.value)
