"""Worker processes of a local job: the pod template's command, run with the environment Sedna would inject.

Output goes to a log file per worker; the last lines of standard error are kept so that a worker that dies can be
reported with its own words (a missing model file, a traceback's last line) in the job's status.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from edgeai.crs import Container, CRError, PodTemplate

log = logging.getLogger(__name__)

PYTHON_NAMES = {"python", "python3", "python3.11", "python3.12", "python3.13"}


def worker_name(prefix: str) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return f"{prefix}-" + "".join(secrets.choice(alphabet) for _ in range(5))


@dataclass
class WorkerCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def container_of(template: PodTemplate, where: str) -> Container:
    return template.spec.containers[0] if template.spec.containers else _missing(where)


def _missing(where: str) -> Container:
    raise CRError(f"{where}.spec.containers: no container")


def build_command(template: PodTemplate, where: str, injected: Mapping[str, str], base_dir: Path) -> WorkerCommand:
    """The first container's command and args with its env, then Sedna's injected variables on top."""
    c = container_of(template, where)
    argv = [*c.command, *c.args]
    if not c.command:
        raise CRError(
            f"{where}.spec.containers[0].command: empty; a local run cannot use the image's entrypoint "
            f"({c.image or 'no image'}), so give the command, e.g. [python, -m, edgeai.workers.ji_edge]"
        )
    if argv[0] in PYTHON_NAMES:
        argv[0] = sys.executable
    elif os.sep not in argv[0] and shutil.which(argv[0]) is None:
        raise CRError(f"{where}.spec.containers[0].command[0]: {argv[0]!r} is not on PATH")
    env = dict(os.environ)
    for var in c.env:
        if var.value is not None:
            env[var.name] = var.value
    env.update(injected)
    cwd = base_dir
    if c.workingDir and Path(c.workingDir).is_dir():
        cwd = Path(c.workingDir)
    return WorkerCommand(argv, env, cwd)


@dataclass
class WorkerProcess:
    """One running worker; ``wait()`` returns its exit code."""

    name: str
    command: WorkerCommand
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    returncode: int | None = None
    stderr_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    _pumps: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            *self.command.argv,
            env=self.command.env,
            cwd=self.command.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        # A waiter of the previous process may have set its exit code while this one was being created.
        self.returncode = None
        self.started_at = time.monotonic()
        logf = self.log_path.open("ab")
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(self.proc.stdout, logf, False)),
            asyncio.create_task(self._pump(self.proc.stderr, logf, True)),
        ]

    async def _pump(self, stream: asyncio.StreamReader, logf: BinaryIO, keep: bool) -> None:
        async for line in stream:
            logf.write(line)
            logf.flush()
            if keep:
                text = line.decode(errors="replace").rstrip()
                if text:
                    self.stderr_tail.append(text)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.returncode is None

    async def wait(self) -> int:
        proc, pumps = self.proc, list(self._pumps)
        assert proc is not None
        code = await proc.wait()
        for t in pumps:
            with contextlib.suppress(Exception):
                await t
        if self.proc is proc:  # not restarted meanwhile by another waiter
            self.returncode = code
        return code

    def reason(self) -> str:
        """Why the worker ended, in its own words when it left any."""
        code = self.returncode
        lines = [ln for ln in self.stderr_tail if not ln.startswith((" ", "Traceback"))]
        said = lines[-1] if lines else ""
        how = f"exit code {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
        return f"{self.name} ended ({how}){': ' + said if said else ''}; log: {self.log_path}"

    async def stop(self, grace_s: float = 5.0) -> None:
        # The process's own exit status, not ours: ours may lag behind a restart.
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.wait()
