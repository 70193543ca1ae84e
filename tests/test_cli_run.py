"""`mapper run` refuses bad input at once, with the reason and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mapper_cli.cmd_run import resolve_driver
from mapper_cli.main import app
from mapper_framework.config import MapperConfigError, config_from_dict, load_config
from mapper_framework.driver import ThreadedDriver

runner = CliRunner()


def test_unknown_protocol_without_driver() -> None:
    out = runner.invoke(app, ["run", "opcua"])
    assert out.exit_code == 1
    assert "no shipped mapper for protocol 'opcua'" in out.output and "--driver module:attribute" in out.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", "expected module:attribute"),
        ("no_such_module_x:Driver", "cannot import no_such_module_x"),
        ("tests.file_driver:Missing", "has no attribute Missing"),
        ("tests.file_driver:FileProtocol", "neither a driver class nor a factory"),
    ],
)
def test_bad_driver_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_driver(spec)
    out = runner.invoke(app, ["run", "filedev", "--driver", spec])
    assert out.exit_code == 1 and message in out.output


def test_a_driver_module_that_does_not_import_is_named_with_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_syntax_drv.py").write_text("def f(:\n    pass\n")
    (tmp_path / "broken_init_drv.py").write_text("raise RuntimeError('no backend configured')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"broken_syntax_drv.py:1: invalid syntax. Hint: fix the module"):
        resolve_driver("broken_syntax_drv:f")
    with pytest.raises(ValueError, match="importing broken_init_drv failed: RuntimeError: no backend configured"):
        resolve_driver("broken_init_drv:f")


def test_a_protocol_name_is_a_shipped_mapper_or_nothing(tmp_path: Path) -> None:
    """A dotted protocolName once made `mapper up` crash (an import of mappers.<name>) and `mapper run modbus.codec`
    load a module that is not a mapper."""
    from mapper_cli.cmd_agent import stack_plan

    for protocol in ("modbus.codec", "acme.v2"):
        out = runner.invoke(app, ["run", protocol])
        assert out.exit_code == 1 and f"no shipped mapper for protocol '{protocol}'" in out.output
    crs = tmp_path / "crs"
    crs.mkdir()
    (crs / "acme.yaml").write_text(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\nmetadata: {name: m, namespace: default}\n"
        "spec: {protocol: acme.v2, properties: []}\n---\n"
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: d, namespace: default}\n"
        "spec: {deviceModelRef: {name: m}, nodeName: edge, protocol: {protocolName: acme.v2}}\n"
    )
    assert stack_plan(crs, tmp_path / "run", 7777, "warning") == []


def test_driver_spec_kinds() -> None:
    from tests.file_driver import FileDriver

    assert isinstance(resolve_driver("tests.file_driver:FileDriver")(None), FileDriver)  # type: ignore[arg-type]

    assert isinstance(resolve_driver("tests.test_sdk_foundations:SlowSensor")(None), ThreadedDriver)  # type: ignore[arg-type]


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("common:\n  name: m\n  protocol: modbus\n  http_port: seven\n")
    with pytest.raises(MapperConfigError, match=r"common\.http_port: expected a port number, got 'seven'"):
        load_config(bad)
    out = runner.invoke(app, ["run", "-c", str(bad)])
    assert out.exit_code == 1 and f"error: {bad}: common.http_port" in out.output
    with pytest.raises(MapperConfigError, match=r"common\.protocol is required"):
        config_from_dict({"common": {"name": "m"}})
    with pytest.raises(MapperConfigError, match=r"report\.retry_max: unknown setting"):
        config_from_dict({"common": {"name": "m", "protocol": "p"}, "report": {"retry_max": 3}})
    with pytest.raises(MapperConfigError, match=r"state\.probe_ms: expected int, got 'fast'"):
        config_from_dict({"common": {"name": "m", "protocol": "p"}, "state": {"probe_ms": "fast"}})
    with pytest.raises(MapperConfigError, match=r"push\.mqtt\.username: expected str"):
        config_from_dict({"common": {"name": "m", "protocol": "p"}, "push": {"mqtt": {"username": 5}}})
    cfg = config_from_dict({"common": {"name": "m", "protocol": "p", "http_port": ""}})
    assert cfg.http_port == 7777 and str(cfg.socket_path) == "/etc/kubeedge/m.sock"
    assert str(cfg.edgecore_sock) == "/etc/kubeedge/dmi.sock" and cfg.rest.bind == "127.0.0.1"


def test_a_dht11_pin_out_of_range_fails_at_once() -> None:
    out = runner.invoke(app, ["run", "dht11", "--pin", "99"])
    assert out.exit_code == 1 and "pin: 99 is not a BCM GPIO number (0-27)" in out.output
