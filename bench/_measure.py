"""Process measurement helpers for the benchmarks (CPU time, peak RSS, latency percentiles)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {path} was up")
        if path.is_socket():
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(path))
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    raise RuntimeError(f"{path} not up after {timeout}s")


@dataclass
class CpuWindow:
    """CPU seconds a process used between ``start()`` and ``stop()``."""

    pid: int
    _t0: float = 0.0
    _c0: float = 0.0
    cpu_percent: float = 0.0

    def start(self) -> None:
        self._t0, self._c0 = time.monotonic(), self._cpu()

    def stop(self) -> float:
        wall = time.monotonic() - self._t0
        self.cpu_percent = 100.0 * (self._cpu() - self._c0) / wall if wall > 0 else 0.0
        return self.cpu_percent

    def _cpu(self) -> float:
        t = psutil.Process(self.pid).cpu_times()
        return float(t.user + t.system)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the kernel's own high-water mark of resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return psutil.Process(pid).memory_info().rss / 2**20


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def cpu_count() -> int:
    return os.cpu_count() or 1
