"""The DHT11/DHT22 40-bit frame: five bytes, the last a checksum of the first four."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FrameError(ValueError):
    """A frame that cannot be a reading (wrong length or checksum): read again."""


@dataclass(frozen=True, slots=True)
class Reading:
    temperature: float  # degrees Celsius
    humidity: float  # percent relative humidity


def frame_bytes(bits: Sequence[int]) -> bytes:
    """40 bits, most significant first, as the sensor sends them -> 5 bytes."""
    if len(bits) != 40:
        raise FrameError(f"a DHT frame has 40 bits, got {len(bits)}")
    return bytes(sum((1 if bits[i * 8 + j] else 0) << (7 - j) for j in range(8)) for i in range(5))


def decode_frame(frame: bytes | Sequence[int], sensor: str = "dht11") -> Reading:
    """Decode a frame (5 bytes, or 40 bits).

    DHT11: humidity = byte0 + byte1/10; temperature = byte2 + (byte3 & 0x7F)/10, negative when bit 7 of byte3 is set
    (newer DHT11 parts go below 0 C that way). DHT22: humidity = (byte0 << 8 | byte1)/10; temperature =
    ((byte2 & 0x7F) << 8 | byte3)/10, negative when bit 7 of byte2 is set.
    """
    data = bytes(frame) if len(frame) == 5 else frame_bytes(frame)
    if (data[0] + data[1] + data[2] + data[3]) & 0xFF != data[4]:
        raise FrameError(
            f"checksum mismatch: {data[0]}+{data[1]}+{data[2]}+{data[3]} = "
            f"{(data[0] + data[1] + data[2] + data[3]) & 0xFF}, frame says {data[4]}"
        )
    if sensor == "dht22":
        humidity = ((data[0] << 8) | data[1]) / 10
        temperature = (((data[2] & 0x7F) << 8) | data[3]) / 10
        if data[2] & 0x80:
            temperature = -temperature
    else:
        humidity = data[0] + data[1] / 10
        temperature = data[2] + (data[3] & 0x7F) / 10
        if data[3] & 0x80:
            temperature = -temperature
    if not 0 <= humidity <= 100:
        raise FrameError(f"humidity {humidity} % is impossible")
    return Reading(round(temperature, 1), round(humidity, 1))
