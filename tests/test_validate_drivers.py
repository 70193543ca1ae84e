"""`mapper validate` beyond the schemas: what a shipped mapper would refuse at start (its own configData rules),
desired values against type, minimum and maximum, and bounds that are not numbers or not in order. Each broken
copy of a sample was once reported "ok"."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mapper_cli.main import app

SAMPLES = Path(__file__).resolve().parent.parent / "crds" / "samples"
THERMOSTAT = "Device default/modbus-tcp-thermostat"


def broken(tmp_path: Path, sample: str, old: str, new: str) -> Path:
    text = (SAMPLES / sample).read_text()
    assert old in text, f"{old!r} is not in {sample}"
    folder = tmp_path / "crs"
    folder.mkdir()
    (folder / sample).write_text(text.replace(old, new, 1))
    return folder


@pytest.mark.parametrize(
    ("sample", "old", "new", "said"),
    [
        (
            "modbus-tcp-thermostat.yaml",
            "register: HoldingRegister",
            "register: HoldingRegistr",
            "spec.properties[0].visitors.configData: device default/modbus-tcp-thermostat property temperature"
            " visitors: configData.register: unknown register type 'HoldingRegistr'",
        ),
        ("modbus-tcp-thermostat.yaml", "offset: 0", "offset: -3", "configData.offset: -3 is outside 0-65535"),
        ("modbus-tcp-thermostat.yaml", "dataType: float", "dataType: float128", "configData.dataType: unknown"),
        (
            "modbus-tcp-thermostat.yaml",
            "port: 5020",
            "port: 99999",
            "spec.protocol.configData: device default/modbus-tcp-thermostat protocol: configData.port: 99999",
        ),
        ("modbus-tcp-thermostat.yaml", "slaveID: 1", "slaveID: one", "configData.slaveID: expected an integer"),
        (
            "modbus-tcp-thermostat.yaml",
            'value: "21"',
            'value: "99"',
            "spec.properties[1].desired.value: 99 is above the model's maximum 35"
            f" ({THERMOSTAT}, property target-temperature)",
        ),
        (
            "modbus-tcp-thermostat.yaml",
            'value: "21"',
            'value: "warm"',
            "desired.value: 'warm' is not a valid float. Hint: a desired value is written as the model's type",
        ),
        (
            "modbus-tcp-thermostat.yaml",
            'minimum: "5"',
            'minimum: "abc"',
            "x.yaml[0] spec.properties[1].minimum: 'abc' is not a number (property type float)"
            " (DeviceModel default/thermostat-model, property target-temperature)",
        ),
        (
            "modbus-tcp-thermostat.yaml",
            'minimum: "5"',
            'minimum: "50"',
            "x.yaml[0] spec.properties[1]: minimum 50 is above maximum 35",
        ),
        ("dht11-sensor.yaml", "reading: temperature", "reading: pressure", "property temperature visitors"),
        ("onvif-camera.yaml", 'url: "127.0.0.1:8000"', 'url: "camera:http"', "configData.url:"),
    ],
)
def test_what_the_mapper_would_refuse_is_an_error(tmp_path: Path, sample: str, old: str, new: str, said: str) -> None:
    folder = broken(tmp_path, sample, old, new)
    (folder / sample).rename(folder / "x.yaml")
    out = CliRunner().invoke(app, ["validate", "-f", str(folder)])
    assert out.exit_code == 1, out.output
    assert said in out.output, out.output
    assert "Traceback" not in out.output


def test_the_samples_pass_the_mappers_own_rules() -> None:
    out = CliRunner().invoke(app, ["validate", "-f", str(SAMPLES)])
    assert out.exit_code == 0 and out.output.splitlines() == ["10 documents checked: ok"], out.output


def test_a_document_with_schema_errors_is_not_checked_again(tmp_path: Path) -> None:
    # A negative cycle is a schema error; the same device's register typo is then left for after that fix.
    folder = broken(tmp_path, "modbus-tcp-thermostat.yaml", "register: HoldingRegister", "register: HoldingRegistr")
    cr = folder / "modbus-tcp-thermostat.yaml"
    cr.write_text(cr.read_text().replace("reportCycle: 1000", "reportCycle: -5", 1))
    out = CliRunner().invoke(app, ["validate", "-f", str(folder)])
    assert out.exit_code == 1
    assert "reportCycle: must not be negative" in out.output and "HoldingRegistr" not in out.output, out.output


def test_no_documents_is_an_error_not_ok(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.yaml").write_text("")
    for target in (tmp_path / "empty", tmp_path / "blank.yaml"):
        out = CliRunner().invoke(app, ["validate", "-f", str(target)])
        assert out.exit_code == 1 and "no CR documents in" in out.output and "Hint:" in out.output


def test_a_database_address_without_a_port_number_is_an_error(tmp_path: Path) -> None:
    push = (
        "      reportToCloud: true\n      pushMethod:\n        dbMethod:\n          redis:\n"
        "            redisClientConfig: {addr: '127.0.0.1:xyz'}\n      visitors:"
    )
    folder = broken(tmp_path, "modbus-tcp-thermostat.yaml", "      reportToCloud: true\n      visitors:", push)
    out = CliRunner().invoke(app, ["validate", "-f", str(folder)])
    assert out.exit_code == 1, out.output
    assert (
        "spec.properties[0].pushMethod: dbMethod.redis redisClientConfig.addr: address '127.0.0.1:xyz': port 'xyz'"
        " is not a number" in out.output
    ), out.output
