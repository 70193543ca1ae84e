"""The Modbus mapper (TCP and RTU): ``mapper run modbus`` and ``mapper simulate modbus``.

The driver lives in :mod:`mappers.modbus.driver`; the decoding rules in :mod:`mappers.modbus.codec`.
"""

from __future__ import annotations

from typing import Any

from mapper_framework.device import DeviceSpec


def driver_factory(device: DeviceSpec) -> Any:
    """One :class:`~mappers.modbus.driver.ModbusDriver` per device (imported here so ``--help`` stays light)."""
    from mappers.modbus.driver import ModbusDriver

    return ModbusDriver(str(device))
