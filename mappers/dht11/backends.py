"""Where a DHT reading comes from: the kernel's IIO driver, the Adafruit library, or a simulation.

All of them block (GPIO timing, sysfs reads); the driver runs them on its worker thread.
"""

from __future__ import annotations

import errno
import math
import platform
import random
import time
from pathlib import Path
from typing import Protocol

from mappers.dht11.frame import Reading

IIO_ROOT = Path("/sys/bus/iio/devices")
PI_MODEL = Path("/proc/device-tree/model")


class SensorError(Exception):
    """One failed read (timeout, checksum): worth another try after the sensor's minimum interval."""


class BackendUnavailable(Exception):
    """The backend cannot work on this machine; the message says why and what to do."""


class Backend(Protocol):
    name: str

    def read(self) -> Reading: ...

    def close(self) -> None: ...


def is_raspberry_pi() -> bool:
    try:
        return "raspberry pi" in PI_MODEL.read_text(errors="replace").lower()
    except OSError:
        return False


class IioBackend:
    """The kernel dht11 driver (``dtoverlay=dht11,gpiopin=N``): milli-degrees and milli-percent in sysfs.

    The kernel does the timing; a bad read returns EIO (checksum) or ETIMEDOUT (no answer) from ``read()``.
    """

    name = "iio"

    def __init__(self, root: Path = IIO_ROOT, device: str = "") -> None:
        self.root = root
        self.path = self._find(device)

    def _find(self, device: str) -> Path:
        if device:
            path = self.root / device
            if not (path / "in_temp_input").exists():
                raise BackendUnavailable(f"iio device {path} has no in_temp_input. Hint: check iioDevice")
            return path
        for candidate in sorted(self.root.glob("iio:device*")):
            try:
                if (candidate / "name").read_text().strip() in ("dht11", "dht22"):
                    return candidate
            except OSError:
                continue
        raise BackendUnavailable(
            f"no dht11 device under {self.root}. Hint: add 'dtoverlay=dht11,gpiopin=4' to /boot/firmware/config.txt"
            " and reboot, or use backend: adafruit"
        )

    def _read_file(self, path: Path) -> str:
        with open(path) as f:
            return f.read()

    def _read_value(self, name: str) -> int:
        try:
            return int(self._read_file(self.path / name).strip())
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ETIMEDOUT, errno.EAGAIN):
                reason = {errno.EIO: "checksum or framing error", errno.ETIMEDOUT: "no answer"}.get(exc.errno, "busy")
                raise SensorError(f"{self.path / name}: {reason} ({errno.errorcode[exc.errno]})") from None
            raise BackendUnavailable(f"cannot read {self.path / name}: {exc}") from None
        except ValueError as exc:
            raise SensorError(f"{self.path / name}: unexpected content ({exc})") from None

    def read(self) -> Reading:
        # One sensor transfer serves both files (the kernel caches a reading for 2 s).
        temperature = self._read_value("in_temp_input") / 1000
        humidity = self._read_value("in_humidityrelative_input") / 1000
        return Reading(round(temperature, 1), round(humidity, 1))

    def close(self) -> None:
        return None


class AdafruitBackend:
    """adafruit-circuitpython-dht with Blinka: bit-banging the pin from Python (the library retries internally)."""

    name = "adafruit"

    def __init__(self, pin: int, sensor: str) -> None:
        check_adafruit()
        import adafruit_dht  # type: ignore[import-not-found]
        import board  # type: ignore[import-not-found]

        pin_obj = getattr(board, f"D{pin}", None)
        if pin_obj is None:
            raise BackendUnavailable(f"board has no pin D{pin}. Hint: pin is the BCM number, e.g. 4 for GPIO4")
        kind = adafruit_dht.DHT22 if sensor == "dht22" else adafruit_dht.DHT11
        self._device = kind(pin_obj, use_pulseio=False)

    def read(self) -> Reading:
        try:
            temperature, humidity = self._device.temperature, self._device.humidity
        except RuntimeError as exc:  # the library's word for checksum errors and missed pulses
            raise SensorError(str(exc)) from None
        if temperature is None or humidity is None:
            raise SensorError("no reading")
        return Reading(float(temperature), float(humidity))

    def close(self) -> None:
        self._device.exit()


def check_adafruit() -> None:
    """Fail fast, with the reason and the fix, where the Adafruit backend cannot work."""
    machine = platform.machine()
    if platform.system() != "Linux" or not machine.startswith(("arm", "aarch64")):
        raise BackendUnavailable(
            f"backend adafruit needs a Raspberry Pi (Linux on ARM); this is {platform.system()} on {machine}."
            " Hint: use backend: simulated here, or run this mapper on the Pi"
        )
    try:
        import adafruit_dht  # noqa: F401
        import board  # noqa: F401
    except ImportError:
        raise BackendUnavailable(
            "backend adafruit needs adafruit-circuitpython-dht and Blinka. Hint: pip install 'kubeedge-mapper[pi]'"
            " (on a Pi 5 it uses rpi-lgpio), or use backend: iio with dtoverlay=dht11"
        ) from None


class SimulatedBackend:
    """Plausible moving values: a slow daily-like swing plus a little noise, different per pin."""

    name = "simulated"

    def __init__(self, pin: int, clock: object = time.time) -> None:
        self._rng = random.Random(pin)
        self._clock = clock
        self._phase = self._rng.uniform(0, 2 * math.pi)

    def read(self) -> Reading:
        now = self._clock()  # type: ignore[operator]
        swing = math.sin(2 * math.pi * now / 600 + self._phase)
        temperature = 21.0 + 3.0 * swing + self._rng.uniform(-0.2, 0.2)
        humidity = 45.0 - 8.0 * swing + self._rng.uniform(-0.5, 0.5)
        return Reading(round(temperature, 1), round(humidity, 1))

    def close(self) -> None:
        return None


def open_backend(kind: str, pin: int, sensor: str, iio_root: Path = IIO_ROOT, iio_device: str = "") -> Backend:
    """The backend ``kind`` names; ``auto`` prefers the kernel driver, then Adafruit on a Pi, else says why."""
    if kind == "simulated":
        return SimulatedBackend(pin)
    if kind == "iio":
        return IioBackend(iio_root, iio_device)
    if kind == "adafruit":
        return AdafruitBackend(pin, sensor)
    try:
        return IioBackend(iio_root, iio_device)
    except BackendUnavailable as iio_problem:
        if is_raspberry_pi():
            return AdafruitBackend(pin, sensor)
        raise BackendUnavailable(
            f"backend auto found no sensor: {iio_problem}; and this is not a Raspberry Pi, so adafruit cannot work."
            " Hint: backend: simulated for a demo"
        ) from None
