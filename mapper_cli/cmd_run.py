"""``mapper run``: run a mapper (a shipped one by protocol, or any driver by ``--driver module:attr``)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from mapper_cli.common import LogLevel, fail, setup_logging
from mapper_framework.config import MapperConfig, MapperConfigError, config_from_dict, load_config
from mapper_framework.driver import BlockingDriver, Driver, ThreadedDriver
from mapper_framework.mapper import Mapper
from mapper_framework.registry import DriverFactory


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def resolve_driver(spec: str) -> DriverFactory:
    """``package.module:Name`` -> a factory making one driver per device.

    ``Name`` may be a :class:`Driver` subclass, a :class:`BlockingDriver` subclass (run on a worker thread),
    or a callable taking the :class:`DeviceSpec` and returning a driver.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--driver {spec!r}: expected module:attribute, e.g. mypkg.driver:MyDriver")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--driver {spec!r}: cannot import {module_name}: {exc}") from None
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else module_name
        raise ValueError(f"--driver {spec!r}: {where}: {exc.msg}. Hint: fix the module, then run again") from None
    except Exception as exc:  # the module's own top-level code failed
        raise ValueError(f"--driver {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    target = getattr(module, attr, None)
    if target is None:
        raise ValueError(f"--driver {spec!r}: {module_name} has no attribute {attr}")
    if inspect.isclass(target) and issubclass(target, Driver):
        return lambda _spec: target()
    if inspect.isclass(target) and issubclass(target, BlockingDriver):
        return lambda _spec: ThreadedDriver(target())
    if inspect.isclass(target):
        raise ValueError(f"--driver {spec!r}: {attr} is neither a driver class nor a factory (not a Driver subclass)")
    if callable(target):
        return lambda device: _checked(target(device), spec)
    raise ValueError(f"--driver {spec!r}: {attr} is neither a driver class nor a factory")


def _checked(driver: Any, spec: str) -> Driver[Any, Any]:
    if isinstance(driver, BlockingDriver):
        return ThreadedDriver(driver)
    if not isinstance(driver, Driver):
        raise TypeError(f"--driver {spec}: the factory returned {type(driver).__name__}, not a Driver")
    return driver


SHIPPED_PROTOCOLS = ("dht11", "modbus", "onvif")  # the packages under mappers/


def shipped_driver(protocol: str, overrides: dict[str, Any] | None = None) -> DriverFactory:
    """The driver factory of a mapper shipped in ``mappers.<protocol>`` (its ``driver_factory``).

    ``overrides`` replace configData keys of every device (``--pin``/``--backend`` for dht11).
    """
    if protocol not in SHIPPED_PROTOCOLS:
        raise ValueError(
            f"no shipped mapper for protocol {protocol!r} (shipped: {', '.join(SHIPPED_PROTOCOLS)})."
            " Hint: pass --driver module:attribute for your own driver"
        )
    try:
        module = importlib.import_module(f"mappers.{protocol}")
    except ImportError:
        raise ValueError(
            f"no shipped mapper for protocol {protocol!r}. Hint: pass --driver module:attribute for your own driver"
        ) from None
    factory = getattr(module, "driver_factory", None)
    if factory is None:
        raise ValueError(f"mappers.{protocol} has no driver_factory")
    if overrides:
        return lambda device: _checked(factory(device, overrides), f"mappers.{protocol}")
    return lambda device: _checked(factory(device), f"mappers.{protocol}")


def run(
    protocol: Annotated[str | None, typer.Argument(help="Protocol of a shipped mapper (modbus, onvif, dht11).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The mapper's config.yaml.")] = None,
    driver: Annotated[
        str | None, typer.Option("--driver", help="Your driver as module:attribute (class or factory).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Mapper name (common.name).")] = None,
    socket: Annotated[
        Path | None, typer.Option("--socket", help="This mapper's socket (grpc_server.socket_path).")
    ] = None,
    edgecore_sock: Annotated[
        Path | None, typer.Option("--edgecore-sock", help="The agent's DMI socket (common.edgecore_sock).")
    ] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="REST API port (0: any free port).")] = None,
    pin: Annotated[int | None, typer.Option("--pin", help="dht11: the BCM GPIO pin, for every device.")] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="dht11: auto, iio, adafruit or simulated, for every device.")
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log level.")] = LogLevel.info,
) -> None:
    """Run a mapper: register with the agent (edgecore or ours), collect, report, serve the REST API."""
    setup_logging(log_level)
    try:
        cfg = load_config(config) if config is not None else _bare_config(protocol, name)
    except MapperConfigError as exc:
        fail(f"{exc}")
        raise AssertionError from exc
    if protocol is not None and protocol != cfg.protocol:
        fail(f"protocol {protocol!r} on the command line but common.protocol is {cfg.protocol!r} in {config}")
    cfg = cfg.with_overrides(name=name, socket_path=socket, edgecore_sock=edgecore_sock, http_port=http_port)
    overrides: dict[str, Any] = {}
    if pin is not None or backend is not None:
        if cfg.protocol != "dht11" or driver:
            fail("--pin and --backend are options of the shipped dht11 mapper")
        overrides = {k: v for k, v in (("pin", pin), ("backend", backend)) if v is not None}
        _check_dht_backend(backend, pin)
    try:
        factory = resolve_driver(driver) if driver else shipped_driver(cfg.protocol, overrides)
    except ValueError as exc:
        fail(str(exc))
        raise AssertionError from exc
    asyncio.run(_serve(cfg, factory))


def _check_dht_backend(backend: str | None, pin: int | None = None) -> None:
    """Fail at once, in one line, when the chosen backend or pin cannot work (not after a retry loop)."""
    from mapper_framework.driver import ConfigError
    from mappers.dht11.backends import BackendUnavailable, check_adafruit
    from mappers.dht11.driver import DhtConfig

    try:
        if pin is not None:
            DhtConfig(pin=pin)
        DhtConfig(backend=backend or "auto")
        if backend == "adafruit":
            check_adafruit()
    except (BackendUnavailable, ConfigError) as exc:
        fail(str(exc))


def _bare_config(protocol: str | None, name: str | None) -> MapperConfig:
    if protocol is None:
        raise MapperConfigError("give a PROTOCOL or --config config.yaml")
    return config_from_dict({"common": {"name": name or f"{protocol}-mapper", "protocol": protocol}}, "command line")


async def _serve(cfg: MapperConfig, factory: DriverFactory) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    mapper = Mapper(cfg, factory)
    start = asyncio.create_task(mapper.start())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if start.done() and start.exception() is not None:
        await mapper.stop()
        fail(f"mapper {cfg.name} could not start: {start.exception()}")
    await stop.wait()
    start.cancel()
    await mapper.stop()
