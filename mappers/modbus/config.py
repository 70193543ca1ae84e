"""Typed configData of Modbus devices and properties, with the field names KubeEdge's Modbus mapper uses.

Numbers may arrive as floats (edgecore packs every number as a float32); the SDK's ``parse_config`` turns
integral floats into ints before these classes see them. Checks of combinations happen here, at load time,
so a wrong register or data type is reported once per device and property, naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mapper_framework.driver import ConfigError

# Register tables: the CR spelling, the short name used inside, and the 1-based reference prefix (4xxxx, ...).
TABLES = {
    "coilregister": ("coil", 0),
    "discreteinputregister": ("discrete", 1),
    "inputregister": ("input", 3),
    "holdingregister": ("holding", 4),
}
TABLE_NAMES = {
    "coil": "CoilRegister",
    "discrete": "DiscreteInputRegister",
    "input": "InputRegister",
    "holding": "HoldingRegister",
}
BIT_TABLES = ("coil", "discrete")
MAX_REGISTERS = 125  # per read request (Modbus application protocol, FC 3/4)
MAX_BITS = 2000  # per read request (FC 1/2)

# dataType -> (decoder kind, registers; 0 = taken from ``limit``)
REGISTER_TYPES: dict[str, tuple[str, int]] = {
    "int16": ("int16", 1),
    "uint16": ("uint16", 1),
    "int32": ("int32", 2),
    "uint32": ("uint32", 2),
    "int64": ("int64", 4),
    "uint64": ("uint64", 4),
    "float32": ("float32", 2),
    "float64": ("float64", 4),
    "boolean": ("boolean", 1),
    "string": ("string", 0),
    "bytes": ("bytes", 0),
}
# The coarse KubeEdge names are the output format; ``limit`` (the registers read) picks the encoding. One
# register cannot hold an IEEE float, so a one-register float is a signed 16-bit integer times ``scale``, as
# KubeEdge's own samples use it (``dataType: float, limit: 1, scale: 0.1``).
_BY_LIMIT = {
    "int": {1: "int16", 2: "int32", 4: "int64"},
    "float": {1: "int16", 2: "float32", 4: "float64"},
    "double": {1: "int16", 2: "float32", 4: "float64"},
}
_DEFAULT_LIMIT = {"int": 1, "float": 2, "double": 4}
_PARITY = {"none": "N", "n": "N", "even": "E", "e": "E", "odd": "O", "o": "O"}


@dataclass(slots=True)
class ModbusProtocolConfig:
    """``spec.protocol.configData`` of a Modbus Device (TCP: ip/port; RTU: serialPort and line settings)."""

    slaveID: int = 1
    ip: str = ""
    port: int = 502
    serialPort: str = ""
    baudRate: int = 19200
    dataBits: int = 8
    parity: str = "none"
    stopBits: int = 1
    communicateMode: str = ""  # TCP or RTU; needed only when both ip and serialPort are given
    timeout: int = 1000  # ms per request
    retries: int = 0  # extra attempts after a request timed out
    coalesce: bool = True  # read neighbouring properties in one request
    coalesceGap: int = 8  # unused registers (or bits x 16) a coalesced request may span between properties
    mode: str = field(init=False, default="")

    def __post_init__(self) -> None:
        wanted = self.communicateMode.strip().upper()
        if wanted not in ("", "TCP", "RTU"):
            raise ConfigError(f"communicateMode: expected TCP or RTU, got {self.communicateMode!r}")
        if not wanted:
            if self.ip and self.serialPort:
                raise ConfigError("communicateMode: both ip and serialPort are set; say TCP or RTU")
            if not self.ip and not self.serialPort:
                raise ConfigError("ip: give ip (Modbus TCP) or serialPort (Modbus RTU)")
            wanted = "TCP" if self.ip else "RTU"
        self.mode = wanted.lower()
        if self.mode == "tcp":
            if not self.ip:
                raise ConfigError("ip is required with communicateMode TCP")
            if not 0 < self.port < 65536:
                raise ConfigError(f"port: {self.port} is not a TCP port (1-65535)")
        else:
            if not self.serialPort:
                raise ConfigError("serialPort is required with communicateMode RTU")
            parity = _PARITY.get(self.parity.strip().lower())
            if parity is None:
                raise ConfigError(f"parity: expected none, even or odd (or N/E/O), got {self.parity!r}")
            self.parity = parity
            if self.baudRate <= 0:
                raise ConfigError(f"baudRate: {self.baudRate} is not a baud rate")
            if self.dataBits not in (5, 6, 7, 8):
                raise ConfigError(f"dataBits: expected 5 to 8, got {self.dataBits}")
            if self.stopBits not in (1, 2):
                raise ConfigError(f"stopBits: expected 1 or 2, got {self.stopBits}")
        # Slave 0 is broadcast (no answer); 248-255 are reserved, but gateways use 255 on TCP.
        if not 1 <= self.slaveID <= 255:
            raise ConfigError(f"slaveID: expected 1 to 247 (255 for some TCP gateways), got {self.slaveID}")
        if self.timeout <= 0:
            raise ConfigError(f"timeout: expected milliseconds > 0, got {self.timeout}")
        if self.retries < 0:
            raise ConfigError(f"retries: expected 0 or more, got {self.retries}")
        if self.coalesceGap < 0:
            raise ConfigError(f"coalesceGap: expected 0 or more, got {self.coalesceGap}")

    @property
    def endpoint(self) -> str:
        """What one connection serves: ``tcp://ip:port`` or ``rtu:///dev/tty...``."""
        return f"tcp://{self.ip}:{self.port}" if self.mode == "tcp" else f"rtu://{self.serialPort}"

    @property
    def line(self) -> str:
        """The serial line settings as one text (``19200 8N1``), to catch two devices disagreeing on them."""
        return f"{self.baudRate} {self.dataBits}{self.parity}{self.stopBits}"


@dataclass(slots=True)
class ModbusVisitorConfig:
    """A property's ``visitors.configData``: where its value lives and how its registers decode."""

    register: str
    offset: int
    limit: int = 0
    scale: float = 1.0
    isSwap: bool = False  # swap the two bytes of every register
    isRegisterSwap: bool = False  # reverse the order of the registers of one value (low word first)
    dataType: str = ""
    min: float | None = None
    max: float | None = None
    table: str = field(init=False, default="")
    kind: str = field(init=False, default="")
    count: int = field(init=False, default=0)  # registers, or bits for coils and discrete inputs
    # The codec's decoder for these settings, built on first use (a read happens every cycle; the settings never
    # change once the CR is parsed).
    decoder: Callable[[list[int]], Any] | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        entry = TABLES.get(self.register.strip().lower())
        if entry is None:
            raise ConfigError(
                f"register: unknown register type {self.register!r}; expected CoilRegister, DiscreteInputRegister,"
                " HoldingRegister or InputRegister"
            )
        self.table = entry[0]
        if not 0 <= self.offset <= 65535:
            raise ConfigError(f"offset: {self.offset} is outside 0-65535")
        if self.limit < 0:
            raise ConfigError(f"limit: {self.limit} is negative")
        if self.scale == 0:
            self.scale = 1.0  # KubeEdge CRs often leave scale at 0, meaning "no scaling"
        data_type = self.dataType.strip().lower()
        if self.table in BIT_TABLES:
            self._bits(data_type)
        else:
            self._registers(data_type)
        maximum = MAX_BITS if self.table in BIT_TABLES else MAX_REGISTERS
        if self.count > maximum:
            unit = "bits" if self.table in BIT_TABLES else "registers"
            raise ConfigError(f"limit: {self.count} {unit} is more than one request can read ({maximum})")
        if self.offset + self.count > 65536:
            raise ConfigError(f"limit: offset {self.offset} + {self.count} runs past the end of the address space")

    def _bits(self, data_type: str) -> None:
        if data_type in ("", "boolean", "bool"):
            if self.limit not in (0, 1):
                raise ConfigError(
                    f"limit: a boolean is one bit, got limit {self.limit}; use dataType int for a bit field"
                )
            self.kind, self.count = "bit", 1
        elif data_type in ("int", "uint16", "uint32", "uint64"):
            self.kind, self.count = "bitfield", self.limit or 1
            if self.count > 64:
                raise ConfigError(f"limit: a bit field holds at most 64 bits, got {self.count}")
        else:
            raise ConfigError(
                f"dataType: {self.dataType} cannot be read from {TABLE_NAMES[self.table]}; use boolean, or int for a"
                " bit field"
            )

    def _registers(self, data_type: str) -> None:
        data_type = {"bool": "boolean", "": "int"}.get(data_type, data_type)
        if data_type in _BY_LIMIT:
            limit = self.limit or _DEFAULT_LIMIT[data_type]
            kind = _BY_LIMIT[data_type].get(limit)
            if kind is None:
                sizes = " or ".join(str(n) for n in _BY_LIMIT[data_type])
                raise ConfigError(f"limit: dataType {data_type} takes {sizes} registers, got {self.limit}")
            self.kind, self.count = kind, limit
            return
        entry = REGISTER_TYPES.get(data_type)
        if entry is None:
            raise ConfigError(
                f"dataType: unknown {self.dataType!r}; expected int, float, double, boolean, string, bytes or one of"
                " int16, uint16, int32, uint32, int64, uint64, float32, float64"
            )
        kind, size = entry
        if size == 0:
            if self.limit < 1:
                raise ConfigError(f"limit: dataType {data_type} needs limit (the number of registers it spans)")
            size = self.limit
        elif self.limit not in (0, size):
            raise ConfigError(f"limit: dataType {data_type} spans {size} register(s), got limit {self.limit}")
        self.kind, self.count = kind, size

    @property
    def writable(self) -> bool:
        return self.table in ("coil", "holding")

    def reference(self) -> str:
        """The conventional 1-based address (holding offset 16 -> 40017), as PLC manuals print it."""
        prefix = TABLES[self.register.strip().lower()][1]
        number = self.offset + 1
        return f"{prefix}{number:04d}" if number <= 9999 else f"{prefix}{number:05d}"

    def describe(self) -> str:
        unit = "bit" if self.table in BIT_TABLES else "register"
        plural = "" if self.count == 1 else "s"
        return f"{self.reference()} ({TABLE_NAMES[self.table]} offset {self.offset}, {self.count} {unit}{plural})"
