"""A mapper's ``config.yaml``: the upstream mapper-framework fields plus our optional sections.

Upstream shape (kept verbatim so an existing config works)::

    grpc_server:
      socket_path: /etc/kubeedge/modbus.sock   # this mapper's own socket (sent as MapperInfo.address)
    common:
      name: modbus-mapper
      version: v1.0.0
      api_version: v1.0.0
      protocol: modbus
      address: 127.0.0.1
      edgecore_sock: /etc/kubeedge/dmi.sock
      http_port: "7777"

Ours, all optional:

- ``log_level``;
- ``rest``: ``bind``, ``enabled``;
- ``report``: ``retry_initial_s``, ``retry_max_s``, ``max_message_mb``, ``concurrency``, and store-and-forward
  on disk: ``spool_file``, ``spool_limit``, ``spool_interval_s``;
- ``state``: ``probe_ms``, ``heartbeat_s``, ``failures_offline``;
- ``push``: ``queue_limit``, ``batch_size``, ``mqtt`` (``username``, ``password_file``, ``ca_file``, ``cert_file``,
  ``key_file``), and the secrets of the database sinks (never in the CR): ``influxdb2`` (``token_env``,
  ``token_file``), ``redis`` (``username``, ``password_env``, ``password_file``), ``mysql`` (``password_env``,
  ``password_file``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_HTTP_PORT = 7777


class MapperConfigError(ValueError):
    """config.yaml that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class ReportSettings:
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    max_message_mb: int = 64
    # Reports in flight at once (one per device). Real edgecore rate-limits all DMI calls to 1/s, burst 100.
    concurrency: int = 32
    # Store-and-forward on disk: the outbox is saved here while the agent is away ("" = in memory only).
    spool_file: str = ""
    spool_limit: int = 100_000  # twins kept on disk at most (newest first)
    spool_interval_s: float = 2.0  # at most one save per interval while reports fail


@dataclass(frozen=True)
class StateSettings:
    probe_ms: int = 1000
    heartbeat_s: float = 30.0
    # Consecutive failed read rounds after which the device is reported offline.
    failures_offline: int = 3


@dataclass(frozen=True)
class MqttSettings:
    """MQTT push settings (per mapper, for every broker it pushes to)."""

    username: str = ""
    password_file: str = ""  # a mounted Secret; the password never sits in config or CR
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_id_prefix: str = "kubeedge-mapper"


@dataclass(frozen=True)
class InfluxSettings:
    """Where the InfluxDB v2 token comes from: an environment variable or a mounted Secret file, by name."""

    token_env: str = ""
    token_file: str = ""


@dataclass(frozen=True)
class RedisSettings:
    username: str = ""  # Redis 6 ACL user; "" = the default user
    password_env: str = ""
    password_file: str = ""


@dataclass(frozen=True)
class MysqlSettings:
    """The user comes from the CR (``mysqlClientConfig.userName``); only its password lives here."""

    password_env: str = ""
    password_file: str = ""


@dataclass(frozen=True)
class PushSettings:
    queue_limit: int = 10_000
    # Database and OTEL sinks write a batch when this many points are queued, or once per report cycle.
    batch_size: int = 1000
    flush_on_stop_s: float = 5.0  # at stop, queued points get this long to be delivered
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    influxdb2: InfluxSettings = field(default_factory=InfluxSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    mysql: MysqlSettings = field(default_factory=MysqlSettings)


@dataclass(frozen=True)
class RestSettings:
    # Loopback by default: the API can write to devices. Set 0.0.0.0 deliberately to expose it.
    bind: str = "127.0.0.1"
    enabled: bool = True


@dataclass(frozen=True)
class MapperConfig:
    name: str
    protocol: str
    socket_path: Path
    version: str = "v1.0.0"
    api_version: str = "v1.0.0"
    address: str = "127.0.0.1"
    edgecore_sock: Path = Path("/etc/kubeedge/dmi.sock")
    http_port: int = DEFAULT_HTTP_PORT
    log_level: str = "info"
    report: ReportSettings = field(default_factory=ReportSettings)
    state: StateSettings = field(default_factory=StateSettings)
    rest: RestSettings = field(default_factory=RestSettings)
    push: PushSettings = field(default_factory=PushSettings)

    def with_overrides(self, **overrides: Any) -> MapperConfig:
        """CLI flags win over the file; ``None`` means "not given"."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _section(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise MapperConfigError(f"{where}: {key}: expected a mapping, got {type(value).__name__}")
    return value


def _typed(cls: type[Any], raw: dict[str, Any], where: str) -> Any:
    kwargs: dict[str, Any] = {}
    names = {f.name: f for f in fields(cls)}
    for key, value in raw.items():
        if key not in names:
            raise MapperConfigError(f"{where}.{key}: unknown setting (known: {', '.join(names)})")
        expected = type(getattr(cls(), key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise MapperConfigError(f"{where}.{key}: expected {expected.__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


_PUSH_SECTIONS: dict[str, type[Any]] = {
    "mqtt": MqttSettings,
    "influxdb2": InfluxSettings,
    "redis": RedisSettings,
    "mysql": MysqlSettings,
}


def _push(raw: dict[str, Any], where: str) -> PushSettings:
    sections = {
        key: _typed(cls, _section(raw, key, f"{where}: push"), f"{where}: push.{key}")
        for key, cls in _PUSH_SECTIONS.items()
    }
    flat: PushSettings = _typed(
        PushSettings, {k: v for k, v in raw.items() if k not in _PUSH_SECTIONS}, f"{where}: push"
    )
    if flat.batch_size < 1 or flat.queue_limit < 1:
        raise MapperConfigError(f"{where}: push.batch_size and push.queue_limit must be at least 1")
    return replace(flat, **sections)


def load_config(path: Path) -> MapperConfig:
    """Read and check ``config.yaml``; every problem names the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise MapperConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise MapperConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise MapperConfigError(f"{path}: expected a mapping at the top")
    return config_from_dict(raw, str(path))


def config_from_dict(raw: dict[str, Any], where: str = "config") -> MapperConfig:
    common = _section(raw, "common", where)
    grpc = _section(raw, "grpc_server", where)
    for key in ("name", "protocol"):
        if not isinstance(common.get(key), str) or not common.get(key):
            raise MapperConfigError(f"{where}: common.{key} is required (a non-empty string)")
    socket = grpc.get("socket_path") or f"/etc/kubeedge/{common['name']}.sock"
    port_raw = common.get("http_port", "")
    try:
        port = int(port_raw) if str(port_raw).strip() else DEFAULT_HTTP_PORT
    except ValueError:
        raise MapperConfigError(f"{where}: common.http_port: expected a port number, got {port_raw!r}") from None
    if not 0 <= port <= 65535:
        raise MapperConfigError(f"{where}: common.http_port: {port} is not a TCP port")
    known_common = {"name", "version", "api_version", "protocol", "address", "edgecore_sock", "http_port"}
    for key in common:
        if key not in known_common:
            raise MapperConfigError(
                f"{where}: common.{key}: unknown setting (known: {', '.join(sorted(known_common))})"
            )
    for key in raw:
        if key not in ("common", "grpc_server", "log_level", "report", "state", "rest", "push"):
            raise MapperConfigError(f"{where}: {key}: unknown section")
    level = str(raw.get("log_level", "info")).lower()
    if level not in ("debug", "info", "warning", "error"):
        raise MapperConfigError(f"{where}: log_level: expected debug, info, warning or error, got {level!r}")
    return MapperConfig(
        name=common["name"],
        protocol=common["protocol"],
        socket_path=Path(str(socket)),
        version=str(common.get("version", "v1.0.0")),
        api_version=str(common.get("api_version", "v1.0.0")),
        address=str(common.get("address", "127.0.0.1")),
        edgecore_sock=Path(str(common.get("edgecore_sock") or "/etc/kubeedge/dmi.sock")),
        http_port=port,
        log_level=level,
        report=_typed(ReportSettings, _section(raw, "report", where), f"{where}: report"),
        state=_typed(StateSettings, _section(raw, "state", where), f"{where}: state"),
        rest=_typed(RestSettings, _section(raw, "rest", where), f"{where}: rest"),
        push=_push(_section(raw, "push", where), where),
    )
