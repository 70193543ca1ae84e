"""The ONVIF camera mapper: stream URI, device information, snapshots, PTZ, saved frames and clips, and a live
frame stream for local consumers: ``mapper run onvif``. Simulator: ``mapper simulate onvif``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mapper_framework.device import DeviceSpec


def driver_factory(device: DeviceSpec, overrides: Mapping[str, Any] | None = None) -> Any:
    """One :class:`~mappers.onvif.driver.OnvifDriver` per camera."""
    from mappers.onvif.driver import OnvifDriver

    return OnvifDriver(str(device))
