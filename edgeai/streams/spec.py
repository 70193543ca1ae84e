"""What a worker reads, from its parameters: the stream URL, the feature properties, the window.

A Sedna worker gets its parameters as environment variables, so :meth:`StreamSpec.from_parameters` takes a
lookup function (``os.environ.get``, or Sedna's ``Context.get_parameters``)::

    STREAM_URL=mqtt://127.0.0.1:1883/kubeedge/#      # or http://127.0.0.1:7777, rtsp://..., file://..., a path
    STREAM_PROPERTIES=default/thermo/temperature,default/thermo/humidity
    STREAM_LABEL=default/thermo/comfort             # optional: the ground truth, not a feature
    STREAM_WINDOW=count:10:5                        # count:N[:STEP] or time:SECONDS[:STEP]; default count:1
    STREAM_POLL_SECONDS=1.0  STREAM_EVERY_NTH_FRAME=10  STREAM_FRAME_SIZE=160x120  STREAM_IDLE_SECONDS=30
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from edgeai.streams.records import PropertyRef, StreamConfigError, scrub

StreamKind = Literal["mqtt", "rest", "frames"]

PARAMETERS = (
    "STREAM_URL",
    "STREAM_PROPERTIES",
    "STREAM_LABEL",
    "STREAM_WINDOW",
    "STREAM_POLL_SECONDS",
    "STREAM_EVERY_NTH_FRAME",
    "STREAM_FRAME_SIZE",
    "STREAM_IDLE_SECONDS",
)

SUPPORTED_URLS = (
    "mqtt://HOST[:PORT]/TOPIC (MQTT push of a mapper), http(s)://HOST:PORT (a mapper's REST API),"
    " rtsp(s)://... (video), file://PATH or a plain file path (video)"
)
_WINDOW_FORM = (
    "expected count:N[:STEP] or time:SECONDS[:STEP] with N, STEP >= 1 (whole numbers) for count,"
    " SECONDS, STEP > 0 for time"
)


def url_kind(url: str, parameter: str = "STREAM_URL") -> StreamKind:
    """Which source reads ``url``: by its scheme, or a plain path (a video file).

    Raises :class:`StreamConfigError` naming the URL and the supported schemes.
    """
    scheme, sep, _rest = url.partition("://")
    if not sep:
        if not url.strip():
            raise StreamConfigError(f"{parameter}={url!r}: expected {SUPPORTED_URLS}")
        return "frames"  # a plain path: a video file
    scheme = scheme.lower()
    if scheme == "mqtt":
        return "mqtt"
    if scheme in ("http", "https"):
        return "rest"
    if scheme in ("rtsp", "rtsps", "file"):
        return "frames"
    raise StreamConfigError(
        f"{parameter}={scrub(url)!r}: unsupported scheme {scheme + '://'!r}; supported: {SUPPORTED_URLS}"
    )


def parse_mqtt_url(url: str, parameter: str = "STREAM_URL") -> tuple[str, int, str]:
    """``mqtt://host[:port]/topic`` -> (host, port, topic filter); the port defaults to 1883.

    The topic is the raw text after the first ``/`` following host:port, ``+`` and ``#`` included: a generic URL
    parser would take ``#...`` for a fragment and drop it.
    """
    form = "expected mqtt://HOST[:PORT]/TOPIC (a topic filter; + and # allowed), e.g. mqtt://127.0.0.1:1883/kubeedge/#"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "mqtt":
        raise StreamConfigError(f"{parameter}={url!r}: {form}")
    hostport, _slash, topic = rest.partition("/")
    if "@" in hostport:
        raise StreamConfigError(
            f"{parameter}={scrub(url)!r}: user names and passwords in mqtt:// URLs are not supported; {form}"
        )
    if hostport.startswith("["):  # IPv6 literal: [::1]:1883
        host, _bracket, tail = hostport[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ("" if not tail else "x")
    else:
        host, _colon, port_text = hostport.partition(":")
    if not host or not topic:
        raise StreamConfigError(f"{parameter}={url!r}: {form}")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise StreamConfigError(f"{parameter}={url!r}: bad port {port_text!r}; {form}")
    check_topic_filter(topic, f"{parameter}={url!r}")
    return host, int(port_text) if port_text else 1883, topic


def check_topic_filter(topic: str, where: str) -> None:
    """Raise :class:`StreamConfigError` for a filter a broker would refuse (``#`` not last, ``+`` inside a level)."""
    levels = topic.split("/")
    for i, level in enumerate(levels):
        bad_hash = "#" in level and (level != "#" or i != len(levels) - 1)
        bad_plus = "+" in level and level != "+"
        if bad_hash or bad_plus:
            raise StreamConfigError(
                f"{where}: topic filter {topic!r} is invalid: '#' must be the whole last level and '+' a whole level"
            )


@dataclass(frozen=True)
class WindowSpec:
    """``count:N[:STEP]`` (the last N rows, every STEP rows) or ``time:SECONDS[:STEP]`` (rows of the last SECONDS,
    every STEP seconds, STEP defaulting to SECONDS)."""

    kind: Literal["count", "time"] = "count"
    size: int = 1
    step: int = 1
    seconds: float = 0.0
    step_seconds: float = 0.0

    def __post_init__(self) -> None:
        ok = (
            self.size >= 1 and self.step >= 1
            if self.kind == "count"
            else _positive(self.seconds) and _positive(self.step_seconds or self.seconds)
        )
        if not ok:
            raise StreamConfigError(f"STREAM_WINDOW={str(self)!r}: {_WINDOW_FORM}")

    @classmethod
    def parse(cls, text: str, parameter: str = "STREAM_WINDOW") -> WindowSpec:
        """Parse the text form; raises :class:`StreamConfigError` naming ``parameter``, the text and the form."""
        bad = StreamConfigError(f"{parameter}={text!r}: {_WINDOW_FORM}")
        parts = [p.strip() for p in text.strip().split(":")]
        if len(parts) not in (2, 3):
            raise bad
        kind, *numbers = parts
        try:
            if kind.lower() == "count":
                if not all(re.fullmatch(r"\d+", n) for n in numbers):
                    raise bad
                size = int(numbers[0])
                step = int(numbers[1]) if len(numbers) > 1 else 1
                if size < 1 or step < 1:
                    raise bad
                return cls("count", size=size, step=step)
            if kind.lower() == "time":
                seconds = float(numbers[0])
                step_seconds = float(numbers[1]) if len(numbers) > 1 else seconds
                if not (_positive(seconds) and _positive(step_seconds)):
                    raise bad
                return cls("time", seconds=seconds, step_seconds=step_seconds)
        except ValueError:  # float() of a non-number
            raise bad from None
        raise bad

    def __str__(self) -> str:
        if self.kind == "count":
            return f"count:{self.size}:{self.step}"
        return f"time:{self.seconds:g}:{(self.step_seconds or self.seconds):g}"


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


@dataclass(frozen=True)
class StreamSpec:
    """One worker's stream: where from, which properties (in feature order), how to window them.

    Construction checks the combination and raises :class:`StreamConfigError` naming the parameter at fault.
    ``frame_size`` None keeps the stream's own size.
    """

    url: str
    properties: tuple[PropertyRef, ...] = ()
    label: PropertyRef | None = None
    window: WindowSpec = field(default_factory=WindowSpec)
    poll_seconds: float = 1.0
    every_nth_frame: int = 10
    frame_size: tuple[int, int] | None = (160, 120)
    idle_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.properties, tuple):  # a list is welcome, but the spec stays hashable
            object.__setattr__(self, "properties", tuple(self.properties))
        shown = {
            "STREAM_PROPERTIES": ",".join(str(p) for p in self.properties),
            "STREAM_LABEL": str(self.label),
            "STREAM_WINDOW": str(self.window),
        }
        _check_combination(self.url, self.properties, self.label, self.window, shown)
        for name, value in (("STREAM_POLL_SECONDS", self.poll_seconds), ("STREAM_IDLE_SECONDS", self.idle_seconds)):
            if not _positive(value):
                raise StreamConfigError(f"{name}={value!r}: expected a number of seconds > 0")
        if self.every_nth_frame < 1:
            raise StreamConfigError(f"STREAM_EVERY_NTH_FRAME={self.every_nth_frame!r}: expected a whole number >= 1")
        if self.frame_size is not None and (len(self.frame_size) != 2 or min(self.frame_size) < 1):
            raise StreamConfigError(f"STREAM_FRAME_SIZE={self.frame_size!r}: expected WIDTHxHEIGHT with both >= 1")

    @property
    def kind(self) -> StreamKind:
        """``mqtt``, ``rest`` or ``frames``, from the URL."""
        return url_kind(self.url)

    @property
    def safe_url(self) -> str:
        """The URL with any user:password masked, for messages."""
        return scrub(self.url)

    @property
    def wanted(self) -> tuple[PropertyRef, ...]:
        """The properties a source must deliver: the features, then the label."""
        return (*self.properties, *((self.label,) if self.label else ()))

    @classmethod
    def from_parameters(cls, get: Callable[[str], str | None]) -> StreamSpec | None:
        """Read the ``STREAM_*`` parameters through ``get`` (e.g. ``os.environ.get``).

        None when none of them is set (empty counts as unset); otherwise a spec, or :class:`StreamConfigError`
        naming the parameter, its bad value and the expected form.
        """
        raw = {name: (get(name) or "").strip() for name in PARAMETERS}
        given = [name for name, value in raw.items() if value]
        if not given:
            return None
        url = raw["STREAM_URL"]
        if not url:
            raise StreamConfigError(
                f"STREAM_URL='' is not set but {', '.join(given)} {'is' if len(given) == 1 else 'are'}:"
                f" expected {SUPPORTED_URLS}"
            )
        url_kind(url)  # an unknown scheme is reported before anything that depends on it
        window = WindowSpec.parse(raw["STREAM_WINDOW"]) if raw["STREAM_WINDOW"] else WindowSpec()
        properties = _refs("STREAM_PROPERTIES", raw["STREAM_PROPERTIES"])
        label = _ref("STREAM_LABEL", raw["STREAM_LABEL"]) if raw["STREAM_LABEL"] else None
        # Checked here too so that a message quotes the value as the operator wrote it, not as normalised.
        _check_combination(url, properties, label, window, raw)
        return cls(
            url=url,
            properties=properties,
            label=label,
            window=window,
            poll_seconds=_seconds("STREAM_POLL_SECONDS", raw["STREAM_POLL_SECONDS"], 1.0),
            every_nth_frame=_whole("STREAM_EVERY_NTH_FRAME", raw["STREAM_EVERY_NTH_FRAME"], 10),
            frame_size=_frame_size("STREAM_FRAME_SIZE", raw["STREAM_FRAME_SIZE"]),
            idle_seconds=_seconds("STREAM_IDLE_SECONDS", raw["STREAM_IDLE_SECONDS"], 30.0),
        )


def _check_combination(
    url: str,
    properties: tuple[PropertyRef, ...],
    label: PropertyRef | None,
    window: WindowSpec,
    shown: dict[str, str],
) -> None:
    """The rules between parameters; ``shown`` gives the text each message quotes, by parameter name."""
    kind = url_kind(url)
    props, label_text, window_text = shown["STREAM_PROPERTIES"], shown["STREAM_LABEL"], shown["STREAM_WINDOW"]
    if kind == "mqtt":
        parse_mqtt_url(url)
    if kind in ("mqtt", "rest") and not properties:
        raise StreamConfigError(
            f"STREAM_PROPERTIES={props!r}: a {kind} stream needs its feature properties in order,"
            " e.g. default/thermo/temperature,default/thermo/humidity"
        )
    if kind == "frames" and len(properties) != 1:
        raise StreamConfigError(
            f"STREAM_PROPERTIES={props!r}: a video stream ({scrub(url)}) takes exactly one"
            " NAMESPACE/DEVICE/PROPERTY, the name its frames go by"
        )
    if len(set(properties)) != len(properties):
        raise StreamConfigError(f"STREAM_PROPERTIES={props!r}: a property is listed twice; list each once")
    if label is not None:
        if kind == "frames":
            raise StreamConfigError(
                f"STREAM_LABEL={label_text!r}: a video stream has no label property; leave it unset"
            )
        if label in properties:
            raise StreamConfigError(
                f"STREAM_LABEL={label_text!r}: the label is also in STREAM_PROPERTIES; the label is the ground"
                " truth, not a feature: name a property that is not a feature"
            )
    if kind == "frames" and window != WindowSpec():
        raise StreamConfigError(
            f"STREAM_WINDOW={window_text!r}: video frames are not windowed (each chosen frame is one sample);"
            " leave it unset or count:1"
        )


def _ref(name: str, value: str) -> PropertyRef:
    try:
        return PropertyRef.parse(value)
    except StreamConfigError:
        raise StreamConfigError(
            f"{name}={value!r}: expected NAMESPACE/DEVICE/PROPERTY or DEVICE/PROPERTY (namespace 'default')"
        ) from None


def _refs(name: str, value: str) -> tuple[PropertyRef, ...]:
    if not value:
        return ()
    items = value.split(",")
    try:
        return tuple(PropertyRef.parse(item) for item in items)
    except StreamConfigError as exc:
        raise StreamConfigError(
            f"{name}={value!r}: expected comma-separated NAMESPACE/DEVICE/PROPERTY (or DEVICE/PROPERTY) references"
            f" in feature order; {exc}"
        ) from None


def _seconds(name: str, value: str, default: float) -> float:
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not _positive(seconds):
        raise StreamConfigError(f"{name}={value!r}: expected a number of seconds > 0, e.g. {default:g}")
    return seconds


def _whole(name: str, value: str, default: int) -> int:
    if not value:
        return default
    if not re.fullmatch(r"\d+", value) or int(value) < 1:
        raise StreamConfigError(f"{name}={value!r}: expected a whole number >= 1, e.g. {default}")
    return int(value)


def _frame_size(name: str, value: str) -> tuple[int, int] | None:
    if not value:
        return (160, 120)
    if value.lower() == "source":
        return None
    match = re.fullmatch(r"(\d+)[xX](\d+)", value)
    if match is None or int(match[1]) < 1 or int(match[2]) < 1:
        raise StreamConfigError(
            f"{name}={value!r}: expected WIDTHxHEIGHT with both >= 1 (e.g. 160x120), or 'source' for the stream's"
            " own size"
        )
    return int(match[1]), int(match[2])
