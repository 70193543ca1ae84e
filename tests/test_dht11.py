"""The DHT11/DHT22 mapper: frame decoding, the kernel IIO backend on a sysfs tree, the driver's sensor rules,
the Adafruit backend's fail-fast off a Pi, and the simulated backend end to end through the agent."""

from __future__ import annotations

import errno
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapper_framework.driver import ConfigError, parse_config
from mappers.dht11.backends import BackendUnavailable, IioBackend, SensorError, check_adafruit, open_backend
from mappers.dht11.driver import DhtConfig, DhtDriver, DhtVisitor
from mappers.dht11.frame import FrameError, Reading, decode_frame, frame_bytes

ROOT = Path(__file__).resolve().parent.parent
ON_PI = platform.system() == "Linux" and platform.machine().startswith(("arm", "aarch64"))


# --------------------------------------------------------------------------- frames


def bits(data: bytes) -> list[int]:
    return [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]


def test_dht11_frames() -> None:
    # 45.0 % and 23.4 C: checksum 45 + 0 + 23 + 4 = 72.
    assert decode_frame(bytes([45, 0, 23, 4, 72])) == Reading(23.4, 45.0)
    assert decode_frame(bits(bytes([45, 0, 23, 4, 72]))) == Reading(23.4, 45.0)
    # Newer DHT11 parts flag sub-zero temperatures with bit 7 of the decimal byte: -1.5 C.
    assert decode_frame(bytes([80, 0, 1, 0x85, (80 + 1 + 0x85) & 0xFF])) == Reading(-1.5, 80.0)


def test_dht22_frames_with_the_sign_bit() -> None:
    # 65.2 % = 0x028C, 35.1 C = 0x015F.
    frame = bytes([0x02, 0x8C, 0x01, 0x5F, (0x02 + 0x8C + 0x01 + 0x5F) & 0xFF])
    assert decode_frame(frame, "dht22") == Reading(35.1, 65.2)
    # -10.1 C: 0x8065.
    negative = bytes([0x02, 0x8C, 0x80, 0x65, (0x02 + 0x8C + 0x80 + 0x65) & 0xFF])
    assert decode_frame(negative, "dht22") == Reading(-10.1, 65.2)


def test_bad_frames() -> None:
    with pytest.raises(FrameError, match="checksum mismatch: 45\\+0\\+23\\+4 = 72, frame says 73"):
        decode_frame(bytes([45, 0, 23, 4, 73]))
    with pytest.raises(FrameError, match="a DHT frame has 40 bits, got 39"):
        frame_bytes([0] * 39)
    with pytest.raises(FrameError, match=r"humidity 200\.0 % is impossible"):
        decode_frame(bytes([200, 0, 20, 0, 220]))


# --------------------------------------------------------------------------- kernel IIO backend


def iio_tree(root: Path, temp: str = "23400", humidity: str = "45000", name: str = "dht11") -> Path:
    """The kernel's layout: /sys/bus/iio/devices/iio:device0/{name,in_temp_input,in_humidityrelative_input}."""
    device = root / "iio:device0"
    device.mkdir(parents=True)
    (device / "name").write_text(name + "\n")
    (device / "in_temp_input").write_text(temp + "\n")
    (device / "in_humidityrelative_input").write_text(humidity + "\n")
    (root / "iio:device1").mkdir()
    (root / "iio:device1" / "name").write_text("rpi-adc\n")
    return device


class FaultyIio(IioBackend):
    """The same tree, with the errno the kernel's dht11 driver returns from read() on a bad transfer."""

    def __init__(self, root: Path, fault: int) -> None:
        super().__init__(root)
        self.fault = fault

    def _read_file(self, path: Path) -> str:
        raise OSError(self.fault, errno.errorcode[self.fault], str(path))


def test_iio_reads_milli_units(tmp_path: Path) -> None:
    iio_tree(tmp_path, temp="-1500", humidity="81250")
    backend = IioBackend(tmp_path)
    assert backend.path.name == "iio:device0"
    assert backend.read() == Reading(-1.5, 81.2)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [(errno.EIO, r"in_temp_input: checksum or framing error \(EIO\)"), (errno.ETIMEDOUT, r"no answer \(ETIMEDOUT\)")],
)
def test_iio_kernel_errors_are_retryable(tmp_path: Path, fault: int, reason: str) -> None:
    iio_tree(tmp_path)
    with pytest.raises(SensorError, match=reason):
        FaultyIio(tmp_path, fault).read()


def test_iio_missing_overlay_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "iio:device0").mkdir()
    (tmp_path / "iio:device0" / "name").write_text("mcp3008\n")
    with pytest.raises(BackendUnavailable, match="dtoverlay=dht11,gpiopin=4"):
        IioBackend(tmp_path)
    if not ON_PI:  # on a Pi, auto falls back to the adafruit backend instead
        with pytest.raises(BackendUnavailable, match="backend auto found no sensor"):
            open_backend("auto", 4, "dht11", tmp_path)


# --------------------------------------------------------------------------- driver rules


class Scripted:
    """A backend that plays a script of readings and failures, counting transfers."""

    name = "scripted"

    def __init__(self, script: list[Reading | SensorError]) -> None:
        self.script = script
        self.reads = 0

    def read(self) -> Reading:
        item = self.script[min(self.reads, len(self.script) - 1)]
        self.reads += 1
        if isinstance(item, SensorError):
            raise item
        return item

    def close(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def driver_with(script: list[Reading | SensorError], **config: Any) -> tuple[DhtDriver, Scripted, Clock]:
    backend, clock = Scripted(script), Clock()
    driver = DhtDriver("default/dht", backend_factory=lambda _c: backend, clock=clock, sleep=clock.sleep)
    driver.connect(parse_config(DhtConfig, {"backend": "simulated", **config}, "p"))
    return driver, backend, clock


T, H = DhtVisitor("temperature"), DhtVisitor("humidity")


def test_never_faster_than_the_minimum_interval() -> None:
    driver, backend, clock = driver_with([Reading(20.0, 40.0), Reading(21.0, 41.0)])
    assert (driver.read(T), driver.read(H)) == (20.0, 40.0)  # one transfer serves the round
    clock.now += 0.4  # a collectCycle of 400 ms asks again: the DHT11 is not asked within 1 s
    assert driver.read(T) == 20.0 and backend.reads == 1
    clock.now += 0.6
    assert driver.read(T) == 21.0 and backend.reads == 2

    dht22, backend22, clock22 = driver_with([Reading(20.0, 40.0), Reading(22.0, 42.0)], sensor="dht22")
    dht22.read(T)
    clock22.now += 1.5
    assert dht22.read(T) == 20.0 and backend22.reads == 1  # DHT22: 2 s
    clock22.now += 0.5
    assert dht22.read(T) == 22.0


def test_retries_then_unhealthy_then_recovery() -> None:
    bad = SensorError("checksum mismatch")
    driver, backend, clock = driver_with([bad, bad, Reading(19.5, 50.0)], retries=2, failuresUnhealthy=2)
    assert driver.read(T) == 19.5  # two failures retried within one read, each after the 1 s interval
    assert backend.reads == 3 and clock.slept == [1.0, 1.0]
    assert driver.state() == "ok"

    driver, backend, clock = driver_with([bad], retries=1, failuresUnhealthy=2)
    with pytest.raises(SensorError, match="dht11 on GPIO4: 2 tries failed, last: checksum mismatch"):
        driver.read(T)
    with pytest.raises(SensorError):  # humidity in the same round shares the failure, no extra transfer
        driver.read(H)
    assert backend.reads == 2 and driver.state() == "ok"
    clock.now += 1.0
    with pytest.raises(SensorError):
        driver.read(T)
    assert driver.state() == "unhealthy"
    backend.script = [Reading(18.0, 55.0)]
    backend.reads = 0
    clock.now += 1.0
    assert driver.read(H) == 55.0 and driver.state() == "ok"


def test_a_backend_that_stops_answering_fails_the_whole_round(tmp_path: Path) -> None:
    """An IIO file gone after a good reading: both properties of the round fail (humidity got the older reading,
    as fresh, while temperature failed), and failures count toward unhealthy."""
    iio_tree(tmp_path, temp="23500", humidity="41000")
    clock = Clock()
    driver = DhtDriver("default/dht", backend_factory=lambda _c: IioBackend(tmp_path), clock=clock, sleep=clock.sleep)
    driver.connect(parse_config(DhtConfig, {"backend": "simulated", "failuresUnhealthy": 1}, "p"))
    assert (driver.read(T), driver.read(H)) == (23.5, 41.0)
    next(tmp_path.glob("iio:device*/in_temp_input")).unlink()
    clock.now += 1.0
    for visitor in (T, H):
        with pytest.raises(SensorError, match="in_temp_input"):
            driver.read(visitor)
    assert driver.state() == "unhealthy"


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="sensor: expected dht11 or dht22, got 'am2302'"):
        parse_config(DhtConfig, {"sensor": "am2302"}, "device default/dht protocol")
    with pytest.raises(ConfigError, match="backend: expected one of auto, adafruit, iio, simulated"):
        parse_config(DhtConfig, {"backend": "gpio"}, "device default/dht protocol")
    with pytest.raises(ConfigError, match="reading: expected temperature or humidity, got 'pressure'"):
        parse_config(DhtVisitor, {"reading": "pressure"}, "device default/dht property p visitors")
    # edgecore sends the pin as a float32.
    assert parse_config(DhtConfig, {"pin": 17.0}, "p").pin == 17


# --------------------------------------------------------------------------- Adafruit backend off a Pi


def test_adafruit_fails_fast_off_a_pi(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process, on any machine: an x86 Linux box is refused with the reason and the fix.
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    with pytest.raises(BackendUnavailable, match="backend adafruit needs a Raspberry Pi"):
        check_adafruit()
    monkeypatch.undo()
    # The real command on this machine: one line, exit 1, before anything starts. (On a Linux ARM board without the
    # Adafruit libraries the line names the missing package instead of the platform.)
    result = subprocess.run(
        [sys.executable, "-m", "mapper_cli.main", "run", "dht11", "--backend", "adafruit"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: backend adafruit needs ")
    expected = "Hint: pip install 'kubeedge-mapper[pi]'" if ON_PI else "Hint: use backend: simulated here"
    assert expected in lines[0]


@pytest.mark.skipif(not ON_PI, reason="needs a Raspberry Pi with a DHT11 wired to GPIO4 (not this machine)")
def test_real_sensor_on_a_pi() -> None:
    backend = open_backend("auto", 4, "dht11")
    reading = backend.read()
    assert -40 < reading.temperature < 80 and 0 <= reading.humidity <= 100


# --------------------------------------------------------------------------- end to end (simulated backend)


@pytest.fixture
def dht_stack(sockdir: Path, tmp_path: Path) -> Iterator[Path]:
    from tests.agent_process import AgentProcess

    folder = tmp_path / "crs"
    folder.mkdir()
    (folder / "dht11-sensor.yaml").write_text((ROOT / "crds/samples/dht11-sensor.yaml").read_text())
    agent = AgentProcess(sockdir / "dmi.sock", tmp_path / "state", folder, tmp_path / "agent.log")
    agent.start()
    log = (tmp_path / "mapper.log").open("wb")
    mapper = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mapper_cli.main",
            "run",
            "dht11",
            "--socket",
            str(sockdir / "dht11.sock"),
            "--edgecore-sock",
            str(agent.socket),
            "--http-port",
            "0",
            "--pin",
            "17",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield tmp_path / "state"
    finally:
        mapper.terminate()
        code = mapper.wait(timeout=15)
        log.close()
        agent.stop()
        assert code == 0, (tmp_path / "mapper.log").read_text()[-2000:]


def test_simulated_sensor_end_to_end(dht_stack: Path) -> None:
    import time

    import yaml

    def status() -> dict[str, Any]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "mapper_cli.main",
                "get",
                "devicestatus",
                "dht11-sensor",
                "-o",
                "yaml",
                "--state-dir",
                str(dht_stack),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        return dict(yaml.safe_load(out.stdout) or {})

    deadline = time.monotonic() + 30
    twins: dict[str, str] = {}
    while time.monotonic() < deadline:
        doc = status()
        twins = {
            t["propertyName"]: (t.get("reported") or {}).get("value") for t in doc.get("status", {}).get("twins", [])
        }
        if twins.get("temperature") and twins.get("humidity") and doc["status"].get("state") == "ok":
            break
        time.sleep(0.5)
    assert 10 < float(twins["temperature"]) < 35, twins
    assert 20 < float(twins["humidity"]) < 70, twins
