"""The DHT11/DHT22 driver: one sensor per device, read at most once per its minimum interval.

Both properties of a round (temperature, humidity) come from one transfer. A failed transfer (checksum,
timeout) is retried ``retries`` times, each after the sensor's minimum interval; the SDK keeps the last good
value and its time stamp meanwhile. After ``failuresUnhealthy`` failed reads in a row the device is
``unhealthy``; the next good read makes it ``ok`` again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mapper_framework.driver import BlockingDriver, ConfigError
from mappers.dht11.backends import Backend, SensorError, open_backend
from mappers.dht11.frame import Reading

MIN_INTERVAL_S = {"dht11": 1.0, "dht22": 2.0}
BACKENDS = ("auto", "adafruit", "iio", "simulated")


@dataclass(slots=True)
class DhtConfig:
    """``spec.protocol.configData`` of a DHT Device."""

    pin: int = 4  # BCM number
    sensor: str = "dht11"
    backend: str = "auto"
    retries: int = 3
    failuresUnhealthy: int = 3
    iioPath: str = "/sys/bus/iio/devices"
    iioDevice: str = ""  # e.g. iio:device0; empty: the first dht11 found

    def __post_init__(self) -> None:
        self.sensor = self.sensor.strip().lower()
        self.backend = self.backend.strip().lower()
        if self.sensor not in MIN_INTERVAL_S:
            raise ConfigError(f"sensor: expected dht11 or dht22, got {self.sensor!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not 0 <= self.pin <= 27:
            raise ConfigError(f"pin: {self.pin} is not a BCM GPIO number (0-27)")
        if self.retries < 0 or self.failuresUnhealthy < 1:
            raise ConfigError("retries must be >= 0 and failuresUnhealthy >= 1")


@dataclass(slots=True)
class DhtVisitor:
    """A property's ``visitors.configData``: which reading it is."""

    reading: str
    dataType: str = "float"

    def __post_init__(self) -> None:
        self.reading = self.reading.strip().lower()
        if self.reading not in ("temperature", "humidity"):
            raise ConfigError(f"reading: expected temperature or humidity, got {self.reading!r}")


BackendFactory = Callable[[DhtConfig], Backend]


def _open(config: DhtConfig) -> Backend:
    return open_backend(config.backend, config.pin, config.sensor, Path(config.iioPath), config.iioDevice)


class DhtDriver(BlockingDriver[DhtConfig, DhtVisitor]):
    protocol_config = DhtConfig
    visitor_config = DhtVisitor

    def __init__(
        self,
        device: str = "",
        overrides: Mapping[str, Any] | None = None,
        backend_factory: BackendFactory = _open,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.device = device
        self._overrides = dict(overrides or {})
        self._factory = backend_factory
        self._clock = clock
        self._sleep = sleep
        self._config = DhtConfig()
        self._backend: Backend | None = None
        self._last_attempt: float | None = None
        self._last: Reading | SensorError | None = None
        self.failures = 0  # consecutive failed reads
        self.transfers = 0  # sensor transfers attempted

    def connect(self, config: DhtConfig) -> None:
        if self._overrides:
            config = replace(config, **self._overrides)
        self._config = config
        self._backend = self._factory(config)

    @property
    def interval_s(self) -> float:
        return MIN_INTERVAL_S[self._config.sensor]

    def read(self, visitor: DhtVisitor) -> Any:
        reading = self._reading()
        return reading.temperature if visitor.reading == "temperature" else reading.humidity

    def _reading(self) -> Reading:
        if self._backend is None:
            raise RuntimeError(f"device {self.device}: not connected")
        now = self._clock()
        if self._last_attempt is not None and now - self._last_attempt < self.interval_s and self._last is not None:
            # Within the minimum interval the sensor is not asked again: the round shares the last outcome.
            if isinstance(self._last, SensorError):
                raise self._last
            return self._last
        error: SensorError | None = None
        attempt = 0
        for attempt in range(self._config.retries + 1):
            if attempt:
                wait = self._last_attempt + self.interval_s - self._clock() if self._last_attempt else 0
                if wait > 0:
                    self._sleep(wait)
            self._last_attempt = self._clock()
            self.transfers += 1
            try:
                reading = self._backend.read()
            except SensorError as exc:
                error = exc
                continue
            except Exception as exc:  # the backend itself (a vanished IIO file...): no use asking again now
                error = SensorError(str(exc))
                break
            self.failures = 0
            self._last = reading
            return reading
        self.failures += 1
        # Kept as this round's outcome: the other property of the round must fail too, not get an older reading.
        self._last = SensorError(
            f"{self._config.sensor} on GPIO{self._config.pin}: {attempt + 1} tries failed, last: {error}"
        )
        raise self._last

    def state(self) -> str:
        return "unhealthy" if self.failures >= self._config.failuresUnhealthy else "ok"

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
