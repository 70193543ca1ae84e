"""Push-method configuration at the edges: TDengine (no server can run here, so no sink) fails `mapper validate`
and device registration with a clear message; database sinks missing required fields fail validation; the
mapper config takes the sinks' secrets by name only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from dmi.convert import push_method_to_proto
from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc
from dmi.validate import validate_paths
from mapper_framework.config import MapperConfigError, config_from_dict
from tests.db_peers import seq_device, seq_mapper, seq_model
from tests.sdk_driver import until

TDENGINE = {"dbMethod": {"TDEngine": {"TDEngineClientConfig": {"addr": "127.0.0.1:6041", "dbName": "plant"}}}}


def write(tmp_path: Path, device: dict[str, Any]) -> Path:
    path = tmp_path / "crs.yaml"
    path.write_text(yaml.safe_dump_all([seq_model(["INT"]), device]))
    return path


def test_mapper_validate_refuses_tdengine(tmp_path: Path) -> None:
    report = validate_paths([write(tmp_path, seq_device("dev-td", ["INT"], TDENGINE))])
    (issue,) = report.errors
    assert issue.path == "spec.properties[0].pushMethod.dbMethod.TDEngine"
    assert "TDengine is not supported" in issue.message and "use influxdb2, redis or mysql" in issue.message


@pytest.mark.parametrize(
    ("push", "where", "field"),
    [
        ({"dbMethod": {"redis": {"redisClientConfig": {"db": 1}}}}, "redis.redisClientConfig", "addr"),
        (
            {"dbMethod": {"mysql": {"mysqlClientConfig": {"addr": "127.0.0.1:3306", "database": "plant"}}}},
            "mysql.mysqlClientConfig",
            "userName",
        ),
        (
            {"dbMethod": {"influxdb2": {"influxdb2ClientConfig": {"url": "http://x"}}}},
            "influxdb2.influxdb2ClientConfig",
            "bucket",
        ),
    ],
)
def test_mapper_validate_wants_the_addresses(tmp_path: Path, push: dict[str, Any], where: str, field: str) -> None:
    report = validate_paths([write(tmp_path, seq_device("dev-x", ["INT"], push))])
    (issue,) = report.errors
    assert issue.path == f"spec.properties[0].pushMethod.dbMethod.{where}" and field in issue.message


async def test_registration_refuses_tdengine_with_a_clear_message(
    make_agent: Any, sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    devices = [seq_device("dev-td", ["INT"], TDENGINE), seq_device("dev-ok", ["INT"], {"mqtt": {}})]
    async with seq_mapper(make_agent, sockdir, devices, ["INT"]) as (mapper, fleet):
        await until(lambda: fleet.counts.get("dev-ok", {}).get(0, 0) > 3, what="the other device runs")
        # Our agent already refuses the CR (it validates as `mapper validate` does)...
        assert any("TDengine is not supported" in r.getMessage() for r in caplog.records)
        assert ("default", "dev-td") not in mapper.registry.runtimes
        # ...and edgecore does not: the mapper refuses the device it is sent over its own DMI socket.
        device = pb.Device(name="dev-td", namespace="default")
        device.spec.deviceModelReference = "seq"
        device.spec.protocol.protocolName = "testproto"
        prop = device.spec.properties.add(name="p0")
        prop.pushMethod.CopyFrom(push_method_to_proto(TDENGINE))
        async with grpc.aio.insecure_channel(f"unix:{mapper.config.socket_path}") as channel:
            stub = api_pb2_grpc.DeviceMapperServiceStub(channel)
            await stub.RegisterDevice(pb.RegisterDeviceRequest(device=device))
        assert ("default", "dev-td") not in mapper.registry.runtimes
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device default/dev-td")]
        assert "property p0: pushMethod.dbMethod.TDEngine is not supported" in line and "hint:" in line


def test_sink_secrets_are_named_in_the_mapper_config() -> None:
    base = {"common": {"name": "m", "protocol": "p"}}
    config = config_from_dict(
        {
            **base,
            "push": {
                "batch_size": 500,
                "influxdb2": {"token_env": "INFLUX_TOKEN"},
                "redis": {"password_file": "/run/secrets/redis"},
                "mysql": {"password_env": "MYSQL_PASSWORD"},
            },
        }
    )
    assert config.push.batch_size == 500 and config.push.influxdb2.token_env == "INFLUX_TOKEN"
    with pytest.raises(MapperConfigError, match=r"push.redis.password: unknown setting"):
        config_from_dict({**base, "push": {"redis": {"password": "inline-secret"}}})
