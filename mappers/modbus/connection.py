"""One connection per Modbus endpoint (``ip:port`` or serial port), shared by every device and slave on it.

Requests on one endpoint are serialised (a Modbus line answers one request at a time, and most TCP devices
and gateways do the same); on RTU the bus is kept silent for 3.5 character times between frames. A lost
connection is reopened with backoff by whoever needs it next, never by a background task, so a dead
endpoint costs one failed connect per backoff period, not a storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from mapper_framework.driver import ConfigError
from mappers.modbus.config import ModbusProtocolConfig

log = logging.getLogger(__name__)
# pymodbus logs every failed connect and timeout on its own, without device context; we report those once per
# endpoint or per property with context, so its logger speaks only when asked to (an explicit level wins).
_pymodbus_log = logging.getLogger("pymodbus")
if _pymodbus_log.level == logging.NOTSET:
    _pymodbus_log.setLevel(logging.CRITICAL)

EXCEPTION_CODES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0
DRAIN_MAX_S = 1.0  # RTU: the longest quiet wait after a timeout (see Endpoint.call)


class ModbusExceptionResponse(Exception):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int, what: str) -> None:
        self.code = code
        name = EXCEPTION_CODES.get(code, f"exception code {code}")
        super().__init__(f"{name} {what}")


class EndpointUnreachable(ConnectionError):
    """The endpoint's connection is down (and the next attempt is not due yet)."""


class SlaveTimeout(TimeoutError):
    """The connection is up but the slave did not answer."""


class Endpoint:
    """The shared client of one endpoint. Use :meth:`call`; it serialises, reconnects and maps errors."""

    def __init__(self, config: ModbusProtocolConfig) -> None:
        self.name = config.endpoint
        self.mode = config.mode
        self.line = config.line
        self.port = config.serialPort
        self.timeout_s = config.timeout / 1000
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if config.mode == "tcp":
            self._client = AsyncModbusTcpClient(
                config.ip,
                port=config.port,
                timeout=self.timeout_s,
                retries=config.retries,
                reconnect_delay=0,  # reconnects are ours (see module docstring)
                reconnect_delay_max=0,
            )
            self._silence_s = 0.0
        else:
            self._client = AsyncModbusSerialClient(
                config.serialPort,
                baudrate=config.baudRate,
                bytesize=config.dataBits,
                parity=config.parity,
                stopbits=config.stopBits,
                timeout=self.timeout_s,
                retries=config.retries,
                reconnect_delay=0,
                reconnect_delay_max=0,
            )
            # 3.5 characters of 11 bits; above 19200 baud the spec fixes it at 1.75 ms.
            self._silence_s = 3.5 * 11 / config.baudRate if config.baudRate <= 19200 else 0.00175
        self._lock = asyncio.Lock()
        self._last_io = 0.0
        self._timed_out = False
        self._timeouts = 0  # in a row, on this line
        self._drain_s = min(self.timeout_s, DRAIN_MAX_S)
        self._next_attempt = 0.0
        self._delay = BACKOFF_START_S
        self._down_reason = ""
        self.users = 0
        self.requests = 0
        self.failures = 0

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._next_attempt:
            raise EndpointUnreachable(
                f"{self.name} is unreachable ({self._down_reason}); next attempt in {self._next_attempt - now:.1f} s"
            )
        if self.mode == "rtu" and not os.path.exists(self.port):
            ok, reason = False, f"serial port {self.port} does not exist"
        else:
            try:
                ok = await self._client.connect()
                reason = "" if ok else ("connection refused or timed out" if self.mode == "tcp" else "cannot open it")
            except Exception as exc:  # serial ports raise their own errors (permission, busy)
                ok, reason = False, str(exc) or type(exc).__name__
        if ok and self._client.connected:
            if self._down_reason:
                log.info("modbus endpoint %s: connected again", self.name)
            self._down_reason = ""
            self._delay = BACKOFF_START_S
            return
        if not self._down_reason:
            log.warning("modbus endpoint %s: cannot connect (%s); retrying with backoff", self.name, reason)
        self._down_reason = reason
        self._next_attempt = loop.time() + self._delay
        self._delay = min(self._delay * 2, BACKOFF_MAX_S)
        raise EndpointUnreachable(f"{self.name} is unreachable ({reason})")

    async def connect(self) -> None:
        """Try to connect now (a failure is remembered, not raised: reads report it)."""
        async with self._lock:
            with contextlib.suppress(EndpointUnreachable):
                await self._ensure_connected()

    async def call(self, method: str, *args: Any, slave: int, what: str, **kwargs: Any) -> Any:
        """Run one client request (``read_holding_registers`` ...) for ``slave``; ``what`` names it in errors."""
        async with self._lock:
            if not self._client.connected:
                await self._ensure_connected()
            silence = self._silence_s
            if silence:
                # After a timeout the slave may still answer, late: an RTU frame carries no transaction id, so
                # that answer would be taken for the next request's. Leave the line quiet long enough for it to
                # arrive while no request is pending (pymodbus then drops it).
                quiet = silence + (self._drain_s if self._timed_out else 0.0)
                wait = self._last_io + quiet - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._timed_out = False
            self.requests += 1
            try:
                response = await getattr(self._client, method)(*args, device_id=slave, **kwargs)
            except ConnectionException as exc:
                self.failures += 1
                self._lost(str(exc))
                raise EndpointUnreachable(f"{self.name}: connection lost ({exc})") from None
            except (TimeoutError, ModbusIOException) as exc:
                self.failures += 1
                if not self._client.connected:
                    self._lost("no response, connection closed")
                    raise EndpointUnreachable(f"{self.name}: connection lost ({exc})") from None
                # Drain once per run of timeouts: a dead slave polled every round never answers late, and a
                # quiet wait after each of its timeouts would double the bus time it costs the others.
                self._timeouts += 1
                self._timed_out = self._timeouts == 1
                raise SlaveTimeout(
                    f"no response from slave {slave} at {self.name} within {self.timeout_s * 1000:.0f} ms for {what}"
                ) from None
            finally:
                if silence:  # only RTU keeps the bus quiet between frames
                    self._last_io = asyncio.get_running_loop().time()
        self._timeouts = 0
        if response.isError():
            self.failures += 1
            code = int(getattr(response, "exception_code", 0))
            raise ModbusExceptionResponse(code, f"{what} from slave {slave} at {self.name}")
        return response

    def _lost(self, reason: str) -> None:
        if not self._down_reason:
            log.warning("modbus endpoint %s: connection lost (%s); reconnecting with backoff", self.name, reason)
        self._down_reason = reason or "connection lost"
        self._client.close()

    def close(self) -> None:
        self._client.close()


class EndpointPool:
    """Endpoints shared by the drivers of one event loop, counted by users and closed with the last."""

    def __init__(self) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self._holders: dict[str, list[str]] = {}  # endpoint -> the devices using it, in the order they came

    def acquire(self, config: ModbusProtocolConfig, device: str) -> Endpoint:
        endpoint = self._endpoints.get(config.endpoint)
        if endpoint is None:
            endpoint = Endpoint(config)
            self._endpoints[config.endpoint] = endpoint
        elif endpoint.mode == "rtu" and endpoint.line != config.line:
            holders = ", ".join(self._holders.get(config.endpoint, [])) or "another device"
            raise ConfigError(
                f"serialPort: {config.serialPort} is already open at {endpoint.line} for device {holders}; this"
                f" device asks for {config.line}. Hint: one bus has one speed"
            )
        endpoint.users += 1
        self._holders.setdefault(config.endpoint, []).append(device)
        return endpoint

    def release(self, endpoint: Endpoint, device: str = "") -> None:
        endpoint.users -= 1
        holders = self._holders.get(endpoint.name, [])
        if device in holders:
            holders.remove(device)
        if endpoint.users <= 0 and self._endpoints.get(endpoint.name) is endpoint:
            del self._endpoints[endpoint.name]
            self._holders.pop(endpoint.name, None)
            endpoint.close()

    def __len__(self) -> int:
        return len(self._endpoints)


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EndpointPool] = weakref.WeakKeyDictionary()


def shared_pool() -> EndpointPool:
    """The pool of the running event loop (each loop has its own clients)."""
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = EndpointPool()
    return pool
