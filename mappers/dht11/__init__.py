"""The DHT11/DHT22 mapper (temperature and humidity on a Raspberry Pi GPIO pin): ``mapper run dht11``.

Backends: the kernel's IIO driver, adafruit-circuitpython-dht, or a simulation; see :mod:`mappers.dht11.backends`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mapper_framework.device import DeviceSpec


def driver_factory(device: DeviceSpec, overrides: Mapping[str, Any] | None = None) -> Any:
    """One blocking :class:`~mappers.dht11.driver.DhtDriver` per device (the SDK runs it on a worker thread).

    ``overrides`` (from ``mapper run dht11 --pin/--backend``) replace the Device's configData keys.
    """
    from mappers.dht11.driver import DhtDriver

    return DhtDriver(str(device), overrides)
