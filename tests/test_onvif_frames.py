"""The frame hub on real ffmpeg: frames cut from its mpjpeg output, shared by consumers, a slow consumer
skipping frames without holding back a fast one, the decoder stopped when nobody watches, clear errors."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from mappers.onvif.capture import rotate, save_frames
from mappers.onvif.frames import FrameHub, StreamError


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s 640x480 25 fps H.264 clip with a moving pattern (frames differ)."""
    path = tmp_path_factory.mktemp("clip") / "pattern.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x480:rate=25",
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            str(path),
        ],
        check=True,
    )
    return path


def is_jpeg(blob: bytes) -> bool:
    return blob[:2] == b"\xff\xd8" and blob[-2:] == b"\xff\xd9"


async def test_two_consumers_share_one_decoder_and_a_slow_one_skips(clip: Path) -> None:
    hub = FrameHub(str(clip), label="test", fps=25, idle_s=0.2)
    fast: list[bytes] = []
    slow: list[bytes] = []

    async def consume(into: list[bytes], pause: float, limit: int) -> None:
        async for frame in hub.subscribe():
            into.append(frame)
            if len(into) >= limit:
                return
            await asyncio.sleep(pause)

    await asyncio.gather(consume(fast, 0.0, 60), consume(slow, 0.2, 5))
    assert len(fast) == 60 and len(slow) == 5
    assert all(is_jpeg(f) for f in fast + slow)
    assert len(set(fast)) > 50  # distinct frames, not one repeated
    assert hub.stats.restarts == 1  # one ffmpeg served both
    # The slow consumer saw frames far apart: it skipped, it did not queue.
    assert hub.stats.frames >= 60
    await asyncio.sleep(0.6)
    assert not hub.running  # idle: decoder stopped
    await hub.close()


async def test_save_frames_writes_decodable_images_and_rotates(clip: Path, tmp_path: Path) -> None:
    hub = FrameHub(str(clip), label="test", idle_s=0.1)
    out = tmp_path / "frames"
    jpgs = await save_frames(hub, out, "default_cam-saveFrame-", "jpg", 4, 0, keep=100)
    pngs = await save_frames(hub, out, "default_cam-saveFrame-", "png", 3, 40_000_000, keep=100)
    assert [p.suffix for p in jpgs] == [".jpg"] * 4 and [p.suffix for p in pngs] == [".png"] * 3
    for path in jpgs + pngs:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert probe == ("mjpeg,640,480" if path.suffix == ".jpg" else "png,640,480")
    assert not list(out.glob(".*"))  # no temporary leftovers
    assert rotate(out, "default_cam-saveFrame-", 5) == 2
    assert len(list(out.iterdir())) == 5
    await hub.close()


async def test_a_stream_that_cannot_open_says_why(tmp_path: Path) -> None:
    hub = FrameHub("rtsp://127.0.0.1:9/nothing", label="device default/cam", open_timeout_s=10)
    with pytest.raises(StreamError, match=r"device default/cam: stream rtsp://127\.0\.0\.1:9/nothing failed: .*"):
        async for _ in hub.subscribe():
            pass
    await hub.close()


async def test_credentials_never_show_in_errors() -> None:
    hub = FrameHub("rtsp://admin:topsecret@127.0.0.1:9/x", label="cam", open_timeout_s=10)
    with pytest.raises(StreamError) as caught:
        async for _ in hub.subscribe():
            pass
    assert "topsecret" not in str(caught.value) and "***@127.0.0.1:9" in str(caught.value)
    await hub.close()


async def test_a_frame_from_an_earlier_decoder_run_is_never_served(clip: Path, tmp_path: Path) -> None:
    """Once the decoder stopped (nobody watching, or the camera gone), a new consumer waits for a new frame: it got
    the old one at once, even with the source gone (a 200 for a camera that is down; saveFrame's first frame old)."""
    moved = tmp_path / "cam.mp4"
    moved.write_bytes(clip.read_bytes())
    hub = FrameHub(str(moved), label="device default/cam", idle_s=0.1, open_timeout_s=5)
    [first] = await hub.take(1)
    assert is_jpeg(first)
    await asyncio.sleep(0.5)
    assert not hub.running  # idle: stopped, its last frame still held
    moved.unlink()  # the camera is gone
    with pytest.raises(StreamError, match=r"device default/cam: stream .* failed"):
        await hub.take(1)
    await hub.close()
