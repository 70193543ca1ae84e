"""Real MQTT and HTTP peers for push tests: a mosquitto broker (plain and TLS+password listeners) and an
aiohttp endpoint that records what it is sent."""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

USER, PASSWORD = "mapper", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(f"{name} not found: run `make test`, which installs the mosquitto Debian package")
    return found


def make_certs(folder: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=kubeedge-mapper test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )
    return {"ca": folder / "ca.crt", "cert": folder / "server.crt", "key": folder / "server.key"}


@dataclass
class Broker:
    plain_port: int
    tls_port: int
    certs: dict[str, Path]
    password_file: Path
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def mosquitto(folder: Path) -> Iterator[Broker]:
    certs = make_certs(folder)
    passwd = folder / "passwd"
    subprocess.run([_binary("mosquitto_passwd"), "-b", "-c", str(passwd), USER, PASSWORD], check=True)
    passwd.chmod(0o600)
    secret = folder / "mqtt-password"
    secret.write_text(PASSWORD + "\n")
    plain, tls = free_port(), free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        # Started as root, mosquitto would switch to the "mosquitto" user, who cannot read the test's private folder.
        f"user {getpass.getuser()}\n"
        "per_listener_settings true\n"
        f"listener {plain} 127.0.0.1\nallow_anonymous true\n"
        f"listener {tls} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        f"cafile {certs['ca']}\ncertfile {certs['cert']}\nkeyfile {certs['key']}\n"
    )
    log = (folder / "mosquitto.log").open("wb")
    proc = subprocess.Popen([_binary("mosquitto"), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", plain), 0.2), socket.create_connection(("127.0.0.1", tls), 0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start:\n{(folder / 'mosquitto.log').read_text()}") from None
            time.sleep(0.05)
    try:
        yield Broker(plain, tls, certs, secret, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


class Subscriber:
    """A real MQTT client collecting messages of one topic."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.retained: list[bool] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{id(self):x}")
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, m, r, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError("test subscriber could not subscribe")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append(json.loads(message.payload))
            self.retained.append(bool(message.retain))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class HttpSink:
    """An HTTP endpoint recording JSON POSTs."""

    received: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None
    fail_every: int = 0  # answer every Nth POST with 503 (and do not record it)
    posts: int = 0

    async def start(self, port: int = 0) -> None:
        async def ingest(request: web.Request) -> web.Response:
            self.posts += 1
            if self.fail_every and self.posts % self.fail_every == 0:
                return web.Response(status=503)
            self.received.append(await request.json())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/ingest", ingest)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = port or free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
