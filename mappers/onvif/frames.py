"""Live frames of one RTSP stream, decoded by an ffmpeg child process and shared by every local consumer.

Why the ffmpeg binary rather than PyAV: decoding runs in another process, so a broken stream or a codec crash
cannot take the mapper down, the mapper's own memory stays small (PyAV maps ~60 MB of FFmpeg libraries into the
process), and the event loop only copies finished JPEGs. ffmpeg re-encodes each decoded frame as JPEG and writes
them as ``mpjpeg`` (multipart with a Content-length per part), so frames are cut without scanning the bytes.

The hub runs ffmpeg only while somebody wants frames (a consumer of the REST stream, a saveFrame capture) and
stops it ``idle_s`` after the last one leaves. Consumers always get the newest frame: a slow one skips frames
and slows neither the source nor the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024 * 1024


class StreamError(Exception):
    """The stream could not be opened or stopped delivering frames."""


@dataclass(slots=True)
class FrameStats:
    frames: int = 0
    restarts: int = 0
    started_at: float = 0.0
    last_frame_at: float = 0.0
    consumers: int = 0
    error: str = ""


class FrameHub:
    """The newest JPEG of ``uri``; ``subscribe()`` yields frames as they arrive."""

    def __init__(
        self,
        uri: str,
        *,
        label: str,
        fps: float | None = None,
        quality: int = 5,
        idle_s: float = 5.0,
        open_timeout_s: float = 10.0,
        ffmpeg: str = "ffmpeg",
    ) -> None:
        self.uri = uri
        self.label = label
        self.fps = fps
        self.quality = quality
        self.idle_s = idle_s
        self.open_timeout_s = open_timeout_s
        self.ffmpeg = ffmpeg
        self.stats = FrameStats()
        self._latest: bytes | None = None
        self._seq = 0
        self._changed = asyncio.Condition()
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def subscribe(self) -> AsyncGenerator[bytes, None]:
        """Yield each new frame (the newest one when the consumer was busy). Raises StreamError on failure."""
        self._acquire()
        self.stats.consumers += 1
        try:
            # The newest frame at once when this decoder run has one, else the next frame to come.
            seen = self._seq if self._latest is None else self._seq - 1
            while True:
                async with self._changed:
                    deadline = self.open_timeout_s if self._seq == seen else 0

                    def ready(seen: int = seen) -> bool:
                        return self._seq != seen or self._dead()

                    try:
                        await asyncio.wait_for(self._changed.wait_for(ready), deadline or None)
                    except TimeoutError:
                        raise StreamError(
                            f"{self.label}: no frame from {self.uri} within {self.open_timeout_s:.0f} s"
                        ) from None
                    if self._seq == seen:
                        raise StreamError(f"{self.label}: {self.stats.error or 'stream ended'}")
                    seen = self._seq
                    frame = self._latest
                assert frame is not None
                yield frame
        finally:
            self.stats.consumers -= 1
            self._release()

    async def take(self, count: int, interval_s: float = 0.0) -> list[bytes]:
        """``count`` distinct frames, at least ``interval_s`` apart."""
        out: list[bytes] = []
        last = 0.0
        stream = self.subscribe()
        try:
            async for frame in stream:
                now = time.monotonic()
                if out and now - last < interval_s:
                    continue
                out.append(frame)
                last = now
                if len(out) >= count:
                    break
        finally:
            await stream.aclose()
        return out

    async def close(self) -> None:
        self._closed = True
        for task in (self._idle_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._kill()

    # ------------------------------------------------------------------ internals
    def _dead(self) -> bool:
        return not self.running

    def _acquire(self) -> None:
        if self._closed:
            raise StreamError(f"{self.label}: the device is closing")
        self._users += 1
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        if not self.running:
            self.stats.error = ""
            # A frame from an earlier decoder run is old (the camera may even be gone): nobody gets it now.
            self._latest = None
            self._task = asyncio.create_task(self._run(), name=f"frames-{self.label}")

    def _release(self) -> None:
        self._users -= 1
        if self._users == 0 and not self._closed:
            self._idle_task = asyncio.create_task(self._stop_when_idle())

    async def _stop_when_idle(self) -> None:
        await asyncio.sleep(self.idle_s)
        if self._users == 0 and self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
            log.debug("%s: stream idle, decoder stopped", self.label)

    def _command(self) -> list[str]:
        cmd = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"]
        if self.uri.startswith("rtsp://"):
            cmd += ["-rtsp_transport", "tcp"]
        elif "://" not in self.uri:
            cmd += ["-re"]  # a recorded file plays at its own rate, as a camera would
        cmd += ["-fflags", "nobuffer", "-i", self.uri, "-an"]
        if self.fps:
            cmd += ["-vf", f"fps={self.fps:g}"]
        return [*cmd, "-c:v", "mjpeg", "-q:v", str(self.quality), "-f", "mpjpeg", "pipe:1"]

    async def _run(self) -> None:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=MAX_FRAME,
            )
        except FileNotFoundError:
            self.stats.error = f"{self.ffmpeg} not found; install ffmpeg (Debian: apt install ffmpeg)"
            await self._wake()
            return
        self.stats.started_at = time.monotonic()
        self.stats.restarts += 1
        proc = self._proc
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.create_task(_tail(proc.stderr, 64 * 1024))
        try:
            while True:
                frame = await _read_part(proc.stdout)
                if frame is None:
                    break
                self._latest = frame
                self._seq += 1
                self.stats.frames += 1
                self.stats.last_frame_at = time.monotonic()
                await self._wake()
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.stats.error = f"unreadable output from ffmpeg: {exc}"
        finally:
            await self._kill()
            with contextlib.suppress(Exception):
                err = (await asyncio.wait_for(stderr_task, 2)).decode(errors="replace").strip()
                if err and not self.stats.error:
                    # ffmpeg's last line names the cause: "Connection refused", "401 Unauthorized"...
                    lines = [x for x in err.splitlines() if x.strip() and "Last message repeated" not in x]
                    reason = _scrub(lines[-1]) if lines else "ffmpeg exited"
                    self.stats.error = f"stream {_safe(self.uri)} failed: {reason}"
            if not stderr_task.done():
                stderr_task.cancel()
            if not self.stats.error:
                self.stats.error = f"stream {_safe(self.uri)} ended"
            await self._wake()

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    """Everything until EOF, keeping the last ``keep`` bytes (ffmpeg's reason comes last)."""
    out = b""
    while chunk := await stream.read(65536):
        out = (out + chunk)[-keep:]
    return out


async def _read_part(stream: asyncio.StreamReader) -> bytes | None:
    """One part of ffmpeg's mpjpeg output, or None at its end."""
    length = -1
    while True:
        line = await stream.readline()
        if not line:
            return None
        text = line.strip()
        if not text:
            if length >= 0:
                break
            continue  # the CRLF after the previous part, or before the first boundary
        if text.lower().startswith(b"content-length:"):
            length = int(text.split(b":", 1)[1])
            if not 0 < length <= MAX_FRAME:
                raise ValueError(f"frame of {length} bytes")
    return await stream.readexactly(length)


_CREDENTIALS = re.compile(r"//[^/@\s]+@")


def _scrub(text: str) -> str:
    """ffmpeg names the input in its errors, credentials included: mask any ``//user:password@``."""
    return _CREDENTIALS.sub("//***@", text)


def _safe(uri: str) -> str:
    """The URI without credentials (an RTSP URI may carry user:password@)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{slash}{path}"
