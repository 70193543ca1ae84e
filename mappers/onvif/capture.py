"""saveFrame and saveVideo: frames and clips from a camera's stream into ``outputDir``, with bounded disk use.

Files are named ``<namespace>_<device>-<property>-<UTC time>-<n>.<format>``, written under a temporary name and
renamed when complete (a consumer never sees half a file), and only the newest ``maxFiles`` files of that
device and property are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from mappers.onvif.frames import FrameHub, StreamError

log = logging.getLogger(__name__)


def _stamp() -> str:
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def file_prefix(device: str, prop: str) -> str:
    return f"{device.replace('/', '_')}-{prop}-"


def rotate(folder: Path, prefix: str, keep: int) -> int:
    """Delete the oldest files of ``prefix`` beyond ``keep``; return how many went."""
    files = sorted(
        (p for p in folder.glob(prefix + "*") if not p.name.startswith(".")),
        key=lambda p: (p.stat().st_mtime_ns, p.name),
    )
    gone = 0
    for old in files[: max(0, len(files) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
            gone += 1
    return gone


def _write_all(folder: Path, names: list[str], blobs: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, blob in zip(names, blobs, strict=True):
        final = folder / name
        tmp = folder / f".{name}.part"
        tmp.write_bytes(blob)
        os.replace(tmp, final)
        out.append(final)
    return out


async def _run_ffmpeg(args: list[str], stdin: bytes | None, timeout: float, what: str) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise StreamError(f"{what}: ffmpeg not found. Hint: apt install ffmpeg") from None
    try:
        _out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise StreamError(f"{what}: ffmpeg took longer than {timeout:.0f} s") from None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        last = (err or b"").decode(errors="replace").strip().splitlines()
        raise StreamError(f"{what}: ffmpeg failed: {last[-1] if last else f'exit {proc.returncode}'}")


async def save_frames(
    hub: FrameHub,
    folder: Path,
    prefix: str,
    fmt: str,
    count: int,
    interval_ns: int,
    keep: int,
) -> list[Path]:
    """Take ``count`` frames at least ``interval_ns`` apart and save them as ``fmt`` images."""
    frames = await hub.take(max(1, count), interval_ns / 1e9)
    stamp = _stamp()
    names = [f"{prefix}{stamp}-{i:04d}.{fmt}" for i in range(len(frames))]
    if fmt == "jpg":
        paths = await asyncio.to_thread(_write_all, folder, names, frames)
    else:
        # The hub's frames are JPEGs; one ffmpeg converts the lot (decode + encode, a few ms a frame).
        folder.mkdir(parents=True, exist_ok=True)
        work = folder / f".{prefix}{stamp}.part"
        work.mkdir()
        try:
            await _run_ffmpeg(
                ["-f", "mjpeg", "-i", "pipe:0", "-start_number", "0", str(work / f"%04d.{fmt}")],
                b"".join(frames),
                30 + len(frames),
                f"saveFrame to {fmt}",
            )
            paths = []
            for i, name in enumerate(names):
                src = work / f"{i:04d}.{fmt}"
                if src.exists():
                    os.replace(src, folder / name)
                    paths.append(folder / name)
        finally:
            for leftover in work.glob("*"):
                leftover.unlink()
            work.rmdir()
    rotate(folder, prefix, keep)
    return paths


async def save_videos(
    uri: str,
    folder: Path,
    prefix: str,
    fmt: str,
    frame_count: int,
    videos: int,
    keep: int,
    fps_hint: float = 25.0,
) -> list[Path]:
    """Record ``videos`` clips of ``frame_count`` frames each, stream-copied (no re-encoding) into ``fmt``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    frames = max(1, frame_count)
    for n in range(max(1, videos)):
        name = f"{prefix}{_stamp()}-{n:04d}.{fmt}"
        tmp = folder / f".{name}.part.{fmt}"
        args = ["-rtsp_transport", "tcp"] if uri.startswith("rtsp://") else []
        args += ["-i", uri, "-an", "-frames:v", str(frames), "-c:v", "copy"]
        if fmt in ("mp4", "mov"):
            args += ["-movflags", "+faststart"]
        await _run_ffmpeg([*args, str(tmp)], None, 20 + 2 * frames / fps_hint, "saveVideo")
        os.replace(tmp, folder / name)
        out.append(folder / name)
        rotate(folder, prefix, keep)
    return out
