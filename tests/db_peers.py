"""Real database peers for sink tests: redis-server, MariaDB (private datadir, socket and port), VictoriaMetrics
(the InfluxDB v2 line-protocol write endpoint, read back through its export API), an OTLP/HTTP receiver that
decodes real OTLP protobuf (``opentelemetry-proto``), and a driver whose values count up per property."""

from __future__ import annotations

import contextlib
import getpass
import gzip
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from mapper_framework.config import config_from_dict
from mapper_framework.device import DeviceSpec
from mapper_framework.driver import Driver
from mapper_framework.mapper import Mapper
from tests import crs
from tests.brokers import free_port

PASSWORD = "db-s3cret"
USER = "mapper"


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(f"{name} not found: run `make test`, which installs the {package} Debian package")
    return found


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Server:
    """A server process that a test can stop and start again on the same port and data."""

    argv: list[str]
    port: int
    folder: Path
    what: str
    proc: subprocess.Popen[bytes] | None = None
    ready: Any = None  # extra readiness check after the port answers

    def start(self) -> None:
        log = self.folder / f"{self.what}.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, log, self.what)
        if self.ready is not None:
            self.ready()

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[Server]:
    """redis-server with a password; it saves its data at shutdown and loads it at start (outage tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        _binary("redis-server", "redis-server"),
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "3600 1",
        "--appendonly", "no", "--requirepass", PASSWORD, "--daemonize", "no", "--protected-mode", "yes",
    ]  # fmt: skip
    server = Server(argv, port, folder, "redis")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def mariadb(folder: Path) -> Iterator[Server]:
    """MariaDB on a private datadir, socket and port, with user ``mapper`` (PASSWORD) owning database ``plant``."""
    folder.mkdir(parents=True, exist_ok=True)
    data, sock = folder / "data", folder / "mysqld.sock"
    user = getpass.getuser()
    subprocess.run(
        [
            _binary("mariadb-install-db", "mariadb-server"), "--no-defaults", f"--datadir={data}", f"--user={user}",
            "--auth-root-authentication-method=socket", "--skip-test-db",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    argv = [
        _binary("mariadbd", "mariadb-server"), "--no-defaults", f"--datadir={data}", f"--socket={sock}",
        f"--port={port}", "--bind-address=127.0.0.1", f"--user={user}", f"--pid-file={folder / 'mysqld.pid'}",
        "--skip-log-bin", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
        "--performance-schema=OFF", "--skip-name-resolve",
    ]  # fmt: skip
    server = Server(argv, port, folder, "mariadb")
    try:
        server.start()
        sql(
            server,
            f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'",
            "CREATE DATABASE plant",
            f"GRANT ALL ON plant.* TO '{USER}'@'127.0.0.1'",
        )
        yield server
    finally:
        server.stop()


def sql(server: Server, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements as root over the private socket; the rows of the last one."""
    import pymysql

    conn = pymysql.connect(unix_socket=str(server.folder / "mysqld.sock"), user="root", autocommit=True)
    try:
        rows: list[tuple[Any, ...]] = []
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall())
        return rows
    finally:
        conn.close()


@contextlib.contextmanager
def victoria_metrics(folder: Path) -> Iterator[Server]:
    """VictoriaMetrics: ``/api/v2/write`` takes InfluxDB line protocol; ``/api/v1/export`` gives it back."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        _binary("victoria-metrics", "victoria-metrics"), f"-storageDataPath={folder / 'data'}",
        f"-httpListenAddr=127.0.0.1:{port}", "-retentionPeriod=100y", "-loggerLevel=ERROR",
    ]  # fmt: skip
    server = Server(argv, port, folder, "victoria-metrics")

    def ready() -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    if resp.read().strip() == b"OK":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("victoria-metrics is not healthy")
            time.sleep(0.05)

    server.ready = ready
    try:
        server.start()
        yield server
    finally:
        server.stop()


def vm_series(server: Server, match: str) -> list[dict[str, Any]]:
    """Every sample of the series matching ``match`` (PromQL selector), flushed first so new samples show."""
    base = f"http://127.0.0.1:{server.port}"
    with urllib.request.urlopen(f"{base}/internal/force_flush", timeout=10):
        pass
    query = urllib.parse.urlencode({"match[]": match, "reduce_mem_usage": "1"})
    with urllib.request.urlopen(f"{base}/api/v1/export?{query}", timeout=10) as resp:
        return [json.loads(line) for line in resp.read().splitlines() if line.strip()]


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP metrics endpoint: decodes ExportMetricsServiceRequest with opentelemetry-proto."""

    points: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> None:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

        async def export(request: web.Request) -> web.Response:
            body = await request.read()
            if request.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            message = metrics_service_pb2.ExportMetricsServiceRequest()
            message.ParseFromString(body)
            self.requests += 1
            for rm in message.resource_metrics:
                resource = {a.key: a.value.string_value for a in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        for dp in getattr(metric, kind).data_points:
                            value = dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double
                            self.points.append(
                                {
                                    "name": metric.name,
                                    "kind": kind,
                                    "value": value,
                                    "time_ms": dp.time_unix_nano // 1_000_000,
                                    "attributes": {a.key: a.value.string_value for a in dp.attributes},
                                    "resource": resource,
                                }
                            )
            reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            return web.Response(body=reply, content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/metrics", export)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = port or free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


# ---------------------------------------------------------------------------------------------- a counting device


@dataclass
class Seq:
    slaveID: int = 0


@dataclass
class SeqVisitor:
    offset: int = 0
    kind: str = "int"  # int, float, bool, str


class SeqDriver(Driver[Seq, SeqVisitor]):
    """Every read of a property gives its next number (1, 2, 3...): a sink must hold 1..N, once each, in order."""

    protocol_config = Seq
    visitor_config = SeqVisitor

    def __init__(self, counts: dict[int, int]) -> None:
        self.counts = counts

    async def connect(self, config: Seq) -> None:
        pass

    async def read(self, visitor: SeqVisitor) -> Any:
        n = self.counts.get(visitor.offset, 0) + 1
        self.counts[visitor.offset] = n
        if visitor.kind == "float":
            return n + 0.25
        if visitor.kind == "bool":
            return n % 2 == 0
        if visitor.kind == "str":
            return f"s{n}"
        return n

    async def write(self, visitor: SeqVisitor, value: Any) -> None:
        raise PermissionError("read-only")

    async def close(self) -> None:
        pass


class SeqFleet:
    """Driver factory: per device, the number of reads made of each property offset."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[int, int]] = {}

    def __call__(self, spec: DeviceSpec) -> SeqDriver:
        return SeqDriver(self.counts.setdefault(spec.name, {}))


KINDS = {"INT": "int", "FLOAT": "float", "BOOLEAN": "bool", "STRING": "str"}


def seq_model(types: list[str]) -> dict[str, Any]:
    """A model with properties p0, p1... of the given CR types."""
    props = [{"name": f"p{i}", "type": t, "accessMode": "ReadOnly"} for i, t in enumerate(types)]
    return crs.model("seq", protocol="testproto", properties=props)


def seq_device(name: str, types: list[str], push: dict[str, Any], cycle_ms: int = 100) -> dict[str, Any]:
    props = [
        {
            "name": f"p{i}",
            "collectCycle": cycle_ms,
            "reportCycle": cycle_ms,
            "reportToCloud": True,
            "visitors": {"protocolName": "testproto", "configData": {"offset": i, "kind": KINDS[t]}},
            "pushMethod": push,
        }
        for i, t in enumerate(types)
    ]
    return crs.device(name, "seq", properties=props)


@contextlib.asynccontextmanager
async def seq_mapper(
    make_agent: Any, sockdir: Path, devices: list[dict[str, Any]], types: list[str], push: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Mapper, SeqFleet]]:
    """The in-process agent with ``devices`` of model ``seq_model(types)``, and a mapper on SeqFleet serving them."""
    h = await make_agent()
    crs.write(h.crs, "d.yaml", seq_model(types), *devices)
    await h.agent.reload()
    fleet = SeqFleet()
    config = config_from_dict(
        {
            "grpc_server": {"socket_path": str(sockdir / "seq.sock")},
            "common": {
                "name": "sink-mapper",
                "protocol": "testproto",
                "edgecore_sock": str(h.agent.socket_path),
                "http_port": "0",
            },
            "push": push or {},
        }
    )
    mapper = Mapper(config, fleet)
    await mapper.start()
    try:
        yield mapper, fleet
    finally:
        await mapper.stop()


async def rest_get(mapper: Mapper, path: str) -> tuple[int, Any]:
    assert mapper.rest is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{mapper.rest.port}{path}") as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if resp.content_type == "application/json" else text


def assert_counted(values: list[int], reads: int, where: str) -> None:
    """``values`` (in storage or arrival order) are 1..M, each once, in order, and M is every read made
    (one read may be cut off by the stop between the device answering and the SDK taking the value)."""
    assert values == list(range(1, len(values) + 1)), f"{where}: not 1..M once each in order: {values[:50]}..."
    assert reads - 1 <= len(values) <= reads, f"{where}: {len(values)} stored of {reads} reads"
