"""InfluxDB v2: points in line protocol through the official ``influxdb-client`` (its asyncio write API).

A point: measurement ``influxdb2DataConfig.measurement`` (the property name when empty), tags from
``influxdb2DataConfig.tag`` plus ``namespace``, ``device`` and ``property``, one field ``fieldKey`` (``value``
when empty) typed by the model (``INT`` -> integer, ``FLOAT``/``DOUBLE`` -> float, ``BOOLEAN`` -> boolean, else
string), stamped with the device's timestamp at ms precision. Same series and timestamp overwrite in InfluxDB, so a
retried batch stores nothing twice. The token comes from the mapper config (``push.influxdb2``), never the CR.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dmi.v1beta1 import api_pb2 as pb
from mapper_framework.config import InfluxSettings
from mapper_framework.sinks.base import SeriesKey, Sink, SinkError, read_secret

if TYPE_CHECKING:
    from mapper_framework.push import Record

log = logging.getLogger(__name__)


def _escape_key(text: str) -> str:
    """Measurement, tag keys and tag values: commas, equals signs and spaces are escaped."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def field_value(value: str, type_: str) -> str | None:
    """A line-protocol field value of the model type; None for a value InfluxDB cannot store (NaN, inf)."""
    if type_ == "int":
        try:
            return f"{int(value)}i"
        except ValueError:
            pass
    elif type_ in ("float", "double"):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return repr(number) if math.isfinite(number) else None
    elif type_ == "boolean":
        return "true" if value.lower() in ("true", "1") else "false"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxSink(Sink):
    kind = "influxdb2"

    def __init__(self, config: pb.Influxdb2ClientConfig, settings: InfluxSettings) -> None:
        super().__init__(f"influxdb2 {config.url} org {config.org or '-'} bucket {config.bucket}")
        self.url, self.org, self.bucket = config.url, config.org, config.bucket
        self._settings = settings
        self._client: Any = None
        self._write: Any = None
        # Per property: "measurement,tags " and the field key, escaped once.
        self._series: dict[SeriesKey, tuple[str, str]] = {}
        self._skipped: set[SeriesKey] = set()

    def bind(self, key: SeriesKey, method: pb.PushMethod) -> None:
        data = method.dbMethod.influxdb2.influxdb2DataConfig
        tags = dict(data.tag)
        tags.update(namespace=key[0], device=key[1], property=key[2])
        head = _escape_key(data.measurement or key[2])
        head += "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items()) if v)
        self._series[key] = (head + " ", _escape_key(data.fieldKey or "value"))

    async def _api(self) -> Any:
        if self._write is None:
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

            s = self._settings
            token = read_secret(s.token_env, s.token_file, "influxdb2.token")
            self._client = InfluxDBClientAsync(url=self.url, token=token or "", org=self.org, timeout=10_000)
            self._write = self._client.write_api()
        return self._write

    async def _reset(self) -> None:
        client, self._client, self._write = self._client, None, None
        if client is not None:
            try:
                await client.close()
            except Exception as exc:  # a broken client has nothing more to release
                log.debug("influxdb2 client close: %s", exc)

    def lines(self, batch: Sequence[Record]) -> str:
        out = []
        for rec in batch:
            key = (rec.namespace, rec.device, rec.property)
            head, field = self._series[key]
            value = field_value(rec.value, rec.type)
            if value is None:
                if key not in self._skipped:
                    self._skipped.add(key)
                    log.warning(
                        "device %s/%s property %s: sink %s: value %r cannot be stored in InfluxDB; such values"
                        " are skipped",
                        *key,
                        self.name,
                        rec.value,
                    )
                continue
            out.append(f"{head}{field}={value} {rec.timestamp}")
        return "\n".join(out)

    async def write(self, batch: Sequence[Record]) -> None:
        body = self.lines(batch)
        if not body:
            return
        try:
            api = await self._api()
            await api.write(bucket=self.bucket, org=self.org, record=body, write_precision="ms")
        except SinkError:
            raise
        except Exception as exc:
            await self._reset()
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> SinkError:
        status = getattr(exc, "status", None)
        text = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).strip()
        if status == 401 or status == 403:
            return SinkError(
                f"influxdb2 refused the token: HTTP {status} {text}",
                "check push.influxdb2.token_file / token_env in the mapper config",
            )
        if status == 404:
            return SinkError(
                f"influxdb2 has no bucket {self.bucket!r} in org {self.org!r}: {text}",
                "create the bucket or fix influxdb2ClientConfig.bucket/org in the Device CR",
            )
        if status is not None and 400 <= int(status) < 500 and status != 429:
            # The server will refuse the same lines again: retrying would block the queue forever.
            return SinkError(f"influxdb2 refused the batch: HTTP {status} {text}", "see the server's log", False)
        if status is not None:
            return SinkError(f"influxdb2 answered HTTP {status}: {text}", "see the server's log")
        return SinkError(
            f"cannot reach influxdb2 at {self.url}: {text}",
            "check influxdb2ClientConfig.url in the Device CR and that the server runs",
        )

    async def close(self) -> None:
        await self._reset()
