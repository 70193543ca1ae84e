"""Run the agent as a real subprocess (``mapper agent``), for crash and robustness tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class AgentProcess:
    def __init__(self, socket: Path, state_dir: Path, devices: Path, log: Path) -> None:
        self.socket = socket
        self.state_dir = state_dir
        self.devices = devices
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        args = [
            sys.executable,
            "-m",
            "mapper_cli.main",
            "agent",
            "--socket",
            str(self.socket),
            "--state-dir",
            str(self.state_dir),
            "--devices",
            str(self.devices),
            "--poll-interval",
            "0.2",
            "--log-level",
            "warning",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if self.socket.is_socket() and _connectable(self.socket):
                return
            time.sleep(0.05)
        raise RuntimeError(f"agent socket {self.socket} not up after {timeout}s:\n{self.log.read_text()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _connectable(path: Path) -> bool:
    import socket

    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()
