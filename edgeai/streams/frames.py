"""Video frames for AI workers: an ffmpeg child process decodes an RTSP stream or a video file to raw RGB.

Why an ffmpeg process (as Sedna's examples use through OpenCV, but without OpenCV): decoding happens outside the
worker, so a broken stream or a codec crash costs a restart, not the worker; no native video library is loaded
into the worker; and ffmpeg scales each frame before it crosses the pipe, so a 1080p camera costs the worker
160x120x3 bytes a frame. With a size, ffmpeg writes ``-f rawvideo -pix_fmt rgb24`` (fixed-size frames, cut by
count); without one (the stream's own size, unknown in advance and free to change), it writes PPM images, whose
small header carries each frame's size.

Like Sedna's workers, every Nth decoded frame is handed on (the first one included), so a model slower than the
camera sees recent frames instead of a growing backlog. When the stream ends or fails, ffmpeg is started again
with backoff; a file therefore plays again from the start (at its own frame rate unless ``realtime=False``,
so a recorded video stands in for a camera).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from edgeai.streams._backoff import Backoff, Stopper
from edgeai.streams.records import Frame, PropertyRef, StreamRecord, StreamStats, scrub

DEBIAN_PACKAGE = "ffmpeg"
MAX_SIDE = 16384  # a PPM header claiming more is not a frame: the output is out of step


def ffmpeg_input(url: str) -> tuple[str, bool]:
    """What to give ffmpeg's ``-i`` for ``url``, and whether it is a file.

    ``file:///abs/path`` and ``file://relative/path`` (the form Sedna's samples use) become file paths; a plain
    path is a file. The ``file:`` prefix stops ffmpeg from taking a path with a colon for a protocol.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "file:" + url, True
    if scheme.lower() == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        return "file:" + rest, True
    return url, False


class FrameSource:
    """Every ``every_nth`` decoded frame of ``url`` as records of ``ref``: RGB uint8 arrays (height, width, 3).

    ``size`` (width, height) scales every frame (the aspect ratio is not kept); None keeps the stream's own.
    ``read_timeout_s`` restarts a decoder that delivers nothing that long (a stream that froze without closing).
    Failures go to ``stats`` (ffmpeg's last error line, passwords in URLs masked), never raised.
    """

    def __init__(
        self,
        url: str,
        ref: PropertyRef,
        every_nth: int = 10,
        size: tuple[int, int] | None = (160, 120),
        ffmpeg: str = "ffmpeg",
        *,
        realtime: bool | None = None,
        read_timeout_s: float = 10.0,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        if every_nth < 1:
            raise ValueError(f"every_nth must be >= 1, not {every_nth}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (width, height) with both >= 1, not {size!r}")
        self.url = url
        self.ref = ref
        self.every_nth = every_nth
        self.size = size
        self.ffmpeg = ffmpeg
        self.input, self.is_file = ffmpeg_input(url)
        self.realtime = self.is_file if realtime is None else realtime
        self.read_timeout_s = read_timeout_s
        self.stats = StreamStats()
        self._backoff = Backoff(first_backoff_s, max_backoff_s)
        self._stopper = Stopper()
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def safe_url(self) -> str:
        """The URL with any user:password masked."""
        return scrub(self.url)

    def command(self) -> list[str]:
        """The ffmpeg command line."""
        cmd = [self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error"]
        if self.url.lower().startswith(("rtsp://", "rtsps://")):
            # TCP: no lost packets (smeared frames) on a busy network, and it passes NAT and firewalls.
            cmd += ["-rtsp_transport", "tcp", "-fflags", "nobuffer"]
        if self.realtime:
            cmd += ["-re"]
        cmd += ["-i", self.input, "-an", "-sn", "-dn", "-map", "0:v:0"]
        if self.size is not None:
            width, height = self.size
            return [*cmd, "-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        return [*cmd, "-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "pipe:1"]

    async def records(self) -> AsyncIterator[StreamRecord]:
        """Decode until :meth:`close`, restarting ffmpeg with backoff whenever it stops."""
        while not self._stopper.stopped:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.command(),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            except FileNotFoundError:
                self.stats.failed(
                    f"{self.ffmpeg} not found: install the Debian package {DEBIAN_PACKAGE}"
                    f" (apt install {DEBIAN_PACKAGE})"
                )
                await self._stopper.pause(self._backoff.next())
                continue
            except OSError as exc:
                self.stats.failed(f"cannot run {self.ffmpeg}: {exc}")
                await self._stopper.pause(self._backoff.next())
                continue
            self._proc = proc
            self.stats.restarts += 1
            assert proc.stdout is not None and proc.stderr is not None
            stderr_lines: deque[str] = deque(maxlen=20)
            stderr_task = asyncio.create_task(_collect_lines(proc.stderr, stderr_lines))
            problem: str | None = None
            decoded = 0
            ended = False
            try:
                while True:
                    try:
                        frame = await asyncio.wait_for(self._read_frame(proc.stdout), self.read_timeout_s)
                    except TimeoutError:
                        problem = f"no frame within {self.read_timeout_s:g} s"
                        break
                    except (ValueError, asyncio.LimitOverrunError) as exc:
                        problem = f"unreadable output from ffmpeg: {exc}"
                        break
                    if frame is None:
                        ended = True
                        break
                    self.stats.received += 1
                    self.stats.connected = True
                    self._backoff.reset()
                    decoded += 1
                    if (decoded - 1) % self.every_nth:
                        continue
                    stamp = time.time_ns() // 1_000_000
                    self.stats.last_record_ms = stamp
                    yield StreamRecord(self.ref.namespace, self.ref.device, self.ref.property, frame, stamp)
            finally:
                self.stats.connected = False
                # Read ffmpeg's output to its end meanwhile: it may be blocked writing to a full pipe (so not
                # exiting on SIGTERM), and asyncio closes the process's transport only at end of file on both
                # pipes (a transport left open complains when collected after its loop is gone).
                drain = asyncio.create_task(_drain(proc.stdout))
                await _end(proc, grace_s=2.0 if ended else 0.0)
                self._proc = None
                for task in (drain, stderr_task):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(task, 2.0)
            if self._stopper.stopped:
                return
            self.stats.failed(self._reason(problem, stderr_lines, proc.returncode, decoded))
            await self._stopper.pause(self._backoff.next())

    async def close(self) -> None:
        """Stop decoding: kill ffmpeg and end ``records()``."""
        self._stopper.stop()
        proc = self._proc
        if proc is not None:
            await _end(proc)  # records() sees the end of its output and cleans up

    def _reason(self, problem: str | None, stderr: deque[str], code: int | None, decoded: int) -> str:
        lines = [line for line in stderr if "Last message repeated" not in line]
        said = scrub(lines[-1]) if lines else None
        if problem is not None:
            reason = problem + (f" (ffmpeg: {said})" if said else "")
        elif said:
            reason = said  # ffmpeg's last line names the cause: "Connection refused", "401 Unauthorized", ...
        else:
            reason = f"the stream ended after {decoded} frame(s) (ffmpeg exit code {code})"
        return f"stream {self.safe_url}: {reason}; restarting ffmpeg"

    async def _read_frame(self, stdout: asyncio.StreamReader) -> Frame | None:
        if self.size is not None:
            width, height = self.size
        else:
            header = await _ppm_header(stdout)
            if header is None:
                return None
            width, height = header
        try:
            data = await stdout.readexactly(width * height * 3)
        except asyncio.IncompleteReadError:
            return None  # ffmpeg stopped in the middle of a frame: the stream ended
        # A writable array of its own (frombuffer over bytes is read-only): workers draw on their frames.
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3).copy()


async def _ppm_header(stdout: asyncio.StreamReader) -> tuple[int, int] | None:
    """(width, height) from a binary PPM header (``P6``, width, height, maxval), or None at end of output."""
    tokens: list[bytes] = []
    while len(tokens) < 4:
        line = await stdout.readline()
        if not line:
            return None
        tokens += line.split(b"#", 1)[0].split()
    if tokens[0] != b"P6" or len(tokens) != 4 or not all(t.isdigit() for t in tokens[1:]):
        raise ValueError(f"not a PPM frame header: {b' '.join(tokens)[:40]!r}")
    width, height, maxval = (int(t) for t in tokens[1:])
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or maxval != 255:
        raise ValueError(f"PPM frame of {width}x{height}, maxval {maxval}")
    return width, height


async def _collect_lines(stream: asyncio.StreamReader, into: deque[str]) -> None:
    """ffmpeg's standard error, line by line, keeping the last few (its reason for stopping comes last)."""
    while line := await stream.readline():
        text = line.decode(errors="replace").strip()
        if text:
            into.append(text)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(1 << 20):
        pass


async def _end(proc: asyncio.subprocess.Process, grace_s: float = 0.0) -> None:
    """Make sure ``proc`` is gone: ``grace_s`` to exit by itself, then SIGTERM, then SIGKILL.

    It watches ``returncode`` rather than awaiting ``proc.wait()``: on Python 3.11 that also waits for both
    pipes to reach end of file, which a caller that is not reading them would wait for in vain.
    """
    # A process that closed its output is exiting: signalling it would race with its exit, and Popen's
    # signalling reaps an exited child behind asyncio's back (which then reports exit code 255).
    if grace_s > 0 and await _exited(proc, grace_s):
        return
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    if await _exited(proc, 3.0):
        return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await _exited(proc, 5.0)


async def _exited(proc: asyncio.subprocess.Process, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while proc.returncode is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True
