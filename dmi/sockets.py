"""Unix socket paths for DMI servers (agent and mappers): resolution, stale files, permissions."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

DEFAULT_DMI_SOCKET = Path("/etc/kubeedge/dmi.sock")
SOCKET_MODE = 0o660


class SocketInUseError(RuntimeError):
    pass


def resolve_socket(path: Path, filename: str = "dmi.sock") -> Path:
    """KubeEdge >= 1.23 takes a folder (socket ``<dir>/dmi.sock``); older versions the file itself."""
    if path.is_dir() or str(path).endswith("/"):
        return path / filename
    return path


def claim_socket(path: Path) -> None:
    """Prepare ``path`` for a new server: create its folder, remove a stale socket, refuse a live one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUseError(
            f"{path} exists and is not a socket; refusing to replace it (remove it or pick another path)"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # stale: its server is gone
        return
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise SocketInUseError(f"another server is listening on {path}; stop it first or choose another --socket")


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Create sockets with no world access from the first instant (chmod afterwards would race)."""
    old = os.umask(0o117)
    try:
        yield
    finally:
        os.umask(old)


def restrict(path: Path) -> None:
    os.chmod(path, SOCKET_MODE)
