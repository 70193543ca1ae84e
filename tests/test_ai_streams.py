"""edgeai.streams against real peers: a mapper of the SDK pushing through mosquitto and serving its REST API,
ffmpeg decoding H.264 that ffmpeg encoded (RTSP from GStreamer's server, and a file), and the blocking
SampleStream across a broker and an RTSP server that go away and come back.

The RTSP arrangement: ffmpeg encodes its ``testsrc`` pattern to H.264 and sends it as RTP over UDP to loopback;
the GStreamer RTSP server of ``mappers/onvif/gst_rtsp_server.py`` (run by the system Python, as the ONVIF tests
do) re-serves that RTP (``udpsrc ! rtph264depay ! rtph264pay``) instead of encoding its own pattern. So the video
FrameSource decodes was encoded by ffmpeg and reaches it through a real RTSP server, over RTSP/TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import itertools
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeai.streams import (
    CountWindow,
    FrameSource,
    MqttSource,
    PropertyRef,
    RestPollSource,
    Sample,
    SampleStream,
    StreamConfigError,
    StreamRecord,
    StreamSpec,
    StreamStalled,
    TimeWindow,
    WindowSpec,
    open_source,
    windowed,
)
from edgeai.streams.spec import parse_mqtt_url
from mapper_framework.config import config_from_dict
from mapper_framework.mapper import Mapper
from tests import crs
from tests.brokers import free_port
from tests.rtsp_relay import RtspRelay
from tests.sdk_driver import FakeDevice, FakeFleet, fast_device, until

TEMP = PropertyRef("default", "dev-a", "temperature")
SETPOINT = PropertyRef("default", "dev-a", "setpoint")
CAMERA = PropertyRef("default", "cam", "frames")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------------------------- real peers
class Mosquitto:
    """A plain mosquitto listener on a fixed loopback port, which a test can stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
        if binary is None:
            raise RuntimeError("mosquitto not found: run `make test`, which installs the mosquitto Debian package")
        self.binary = binary
        self.conf = folder / "mosquitto.conf"
        # As root, mosquitto would switch to the "mosquitto" user, who cannot read the test's folder.
        self.conf.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n")

    def start(self) -> None:
        log = (self.folder / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.folder / "mosquitto.log").read_text()
                    raise RuntimeError(f"mosquitto did not start: {log_text}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path)
    b.start()
    yield b
    b.stop()


class Publisher:
    """A real MQTT client publishing what a test chooses (QoS 1, waiting for each acknowledgement)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{id(self):x}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: str | dict[str, Any]) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        info = self.client.publish(topic, text, qos=1)
        info.wait_for_publish(5)
        assert info.is_published()

    def record(self, topic: str, ref: PropertyRef, value: str, stamp: int) -> None:
        """Our mapper's push payload."""
        self.send(
            topic,
            {
                "namespace": ref.namespace,
                "device": ref.device,
                "property": ref.property,
                "value": value,
                "type": "float",
                "timestamp": stamp,
            },
        )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def pushing_device(name: str, broker_port: int, topic: str, collect_ms: int = 50) -> dict[str, Any]:
    """A Device CR whose two properties (temperature, setpoint) are both pushed to ``topic``."""
    dev = fast_device(name)
    for prop in dev["spec"]["properties"]:
        prop["collectCycle"] = collect_ms
        prop["pushMethod"] = {"mqtt": {"address": f"tcp://127.0.0.1:{broker_port}", "topic": topic, "qos": 1}}
    return dev


@pytest.fixture
async def start_mapper(make_agent: Any, sockdir: Path) -> AsyncIterator[Any]:
    """Start an SDK mapper (in this process, on this loop) serving ``devices`` through a real agent."""
    started: list[Mapper] = []

    async def start(devices: list[dict[str, Any]], fleet: FakeFleet | None = None) -> tuple[Mapper, FakeFleet]:
        h = await make_agent()
        crs.write(h.crs, "d.yaml", crs.model("thermo"), *devices)
        await h.agent.reload()
        fleet = fleet or FakeFleet()
        config = config_from_dict(
            {
                "grpc_server": {"socket_path": str(sockdir / "streams.sock")},
                "common": {
                    "name": "streams-mapper",
                    "protocol": "testproto",
                    "edgecore_sock": str(h.agent.socket_path),
                    "http_port": "0",
                },
            }
        )
        mapper = Mapper(config, fleet)
        await mapper.start()
        started.append(mapper)
        names = {d["metadata"]["name"] for d in devices}
        await until(lambda: names <= fleet.devices.keys(), what="devices served")
        return mapper, fleet

    yield start
    for m in started:
        await m.stop()


@pytest.fixture
def relay() -> Iterator[RtspRelay]:
    r = RtspRelay()
    try:
        r.start_server()
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def red_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of plain red at 25 fps, 320x240, H.264 in MP4: exactly 50 frames."""
    path = tmp_path_factory.mktemp("video") / "red.mp4"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "lavfi", "-i", "color=c=red:size=320x240:rate=25:duration=2",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


async def take(it: AsyncIterator[Any], count: int, where: Callable[[Any], bool] = lambda _: True) -> list[Any]:
    """The next ``count`` items of ``it`` that satisfy ``where`` (20 s at most)."""

    async def run() -> list[Any]:
        out: list[Any] = []
        async for item in it:
            if where(item):
                out.append(item)
                if len(out) == count:
                    break
        return out

    return await asyncio.wait_for(run(), 20)


@contextlib.asynccontextmanager
async def consuming(source: Any) -> AsyncIterator[list[StreamRecord]]:
    """Iterate ``source.records()`` in a task, collecting records, and close the source afterwards."""
    got: list[StreamRecord] = []

    async def run() -> None:
        async for record in source.records():
            got.append(record)

    task = asyncio.create_task(run())
    try:
        yield got
    finally:
        await source.close()
        await asyncio.wait_for(task, 10)


def next_stall(stream: SampleStream) -> StreamStalled:
    """Drain what is queued until the stream reports a stall."""
    for _ in range(1000):
        try:
            next(stream)
        except StreamStalled as exc:
            return exc
    raise AssertionError("samples kept coming: the stream never stalled")


def next_sample(stream: SampleStream, where: Callable[[Sample], bool] = lambda _: True, stalls: int = 30) -> Sample:
    """The next sample satisfying ``where``, iterating on through up to ``stalls`` StreamStalled."""
    for _ in range(1000):
        try:
            sample = next(stream)
        except StreamStalled:
            stalls -= 1
            if stalls < 0:
                raise
            continue
        if where(sample):
            return sample
    raise AssertionError("no matching sample")


# ---------------------------------------------------------------------------------------------- MQTT
async def test_mqtt_push_of_a_mapper_becomes_rows_and_count_windows(broker: Mosquitto, start_mapper: Any) -> None:
    spec = StreamSpec.from_parameters(
        {
            "STREAM_URL": f"mqtt://127.0.0.1:{broker.port}/plant/#",
            "STREAM_PROPERTIES": "default/dev-a/temperature,dev-a/setpoint",
            "STREAM_LABEL": "default/dev-b/temperature",
            "STREAM_WINDOW": "count:3",
        }.get
    )
    assert spec is not None
    _, fleet = await start_mapper(
        [pushing_device("dev-a", broker.port, "plant/dev-a"), pushing_device("dev-b", broker.port, "plant/dev-b")]
    )
    a, b = fleet.devices["dev-a"], fleet.devices["dev-b"]
    b.registers.update({0: 7, 1: 99})  # dev-b: temperature is the label, setpoint is not asked for
    a.registers.update({0: 20, 1: 5})
    source = open_source(spec)
    assert isinstance(source, MqttSource) and source.topic == "plant/#"
    samples = windowed(source, spec)
    try:
        # Steady values: three rows of [temperature, setpoint], labelled with dev-b's temperature.
        (steady,) = await take(samples, 1, lambda s: s.features.tolist() == [20, 5] * 3 and s.label == "7")
        assert steady.features.shape == (6,) and steady.features.dtype == np.float64 and steady.rows == 3

        # A ramp: each write sets temperature k and setpoint k + 1000 together, so every row must pair them.
        async def ramp() -> None:
            for k in range(100, 10_000):
                a.registers.update({0: k, 1: k + 1000})
                await asyncio.sleep(0.03)

        ramping = asyncio.create_task(ramp())
        try:
            window = await take(samples, 6, lambda s: s.features[0] >= 100)
        finally:
            ramping.cancel()
        for sample in window:
            rows = sample.features.reshape(3, 2)
            assert (rows[:, 1] == rows[:, 0] + 1000).all(), rows
            assert (np.diff(rows[:, 0]) >= 0).all(), f"rows not oldest first: {rows}"
            assert sample.label == "7"
        for older, newer in itertools.pairwise(window):
            # Step 1: each window is the previous one moved on by one row.
            assert newer.features[:4].tolist() == older.features[2:].tolist()
            assert newer.timestamp > older.timestamp
        assert source.stats.ignored > 0  # dev-b/setpoint arrived and was left out
        assert source.stats.rejected == 0 and source.stats.connected

        # A value that is not a number: rejected with the reason, and the stream goes on.
        publisher = Publisher(broker.port)
        try:
            # Stamped a minute ahead, so it is certainly newer than any reading the window has used.
            publisher.record("plant/dev-a", TEMP, "abc", now_ms() + 60_000)
        finally:
            publisher.close()
        # Windows are pulled: the rejection happens while samples are being taken.
        await take(samples, 1, lambda _: source.stats.rejected == 1)
        assert source.stats.last_error == "default/dev-a/temperature: value 'abc' is not a number"
        a.registers.update({0: 42, 1: 1042})
        (after,) = await take(samples, 1, lambda s: s.features.tolist() == [42, 1042] * 3)
        assert after.label == "7"
    finally:
        await samples.aclose()
        await source.close()
    assert not source.stats.connected


async def test_time_windows_of_published_records_hand_checked(broker: Mosquitto) -> None:
    t, h, lab = (PropertyRef("lab", "room", p) for p in ("t", "h", "comfort"))
    source = MqttSource("127.0.0.1", broker.port, "lab/#", [t, h, lab])
    t0 = 1_700_000_000_000
    rows = [(0, "1", "10"), (4000, "2", "30"), (9000, "6", "20"), (11000, "10", "40"), (15000, "4", "0")]
    rows.append((21000, "5", "5"))
    async with consuming(source) as got:
        await until(lambda: source.stats.connected, what="subscribed")
        publisher = Publisher(broker.port)
        try:
            publisher.record("lab/room", lab, "warm", t0)
            for offset, tv, hv in rows:
                if offset == 15000:
                    publisher.record("lab/room", lab, "cold", t0 + offset)
                publisher.record("lab/room", t, tv, t0 + offset)
                publisher.record("lab/room", h, hv, t0 + offset)
        finally:
            publisher.close()
        await until(lambda: len(got) == 14, what="all records")
    assert [r.timestamp - t0 for r in got if r.ref == t] == [offset for offset, _, _ in rows]

    def run(window: TimeWindow | CountWindow) -> list[Sample]:
        return [sample for record in got for sample in window.add(record)]

    # Tumbling 10 s windows: [t0, t0+10s) = rows at 0, 4, 9 s; [t0+10s, t0+20s) = rows at 11, 15 s.
    tumbling = run(TimeWindow([t, h], 10, label=lab))
    assert [s.features.tolist() for s in tumbling] == [
        [3, 1, 6, 6, 20, 10, 30, 20],  # t: mean 3, min 1, max 6, last 6; h: mean 20, min 10, max 30, last 20
        [7, 4, 10, 4, 20, 0, 40, 0],
    ]
    assert [(s.rows, s.label, s.timestamp - t0) for s in tumbling] == [(3, "warm", 9000), (2, "cold", 15000)]
    # 10 s windows every 5 s: [0, 10), [5, 15) = 9, 11 s; [10, 20) = 11, 15 s.
    sliding = run(TimeWindow([t, h], 10, 5))
    assert [s.features.tolist() for s in sliding] == [
        [3, 1, 6, 6, 20, 10, 30, 20],
        [8, 6, 10, 10, 30, 20, 40, 40],
        [7, 4, 10, 4, 20, 0, 40, 0],
    ]
    # The same records through count windows of two rows, every two rows.
    pairs = run(CountWindow([t, h], 2, step=2, label=lab))
    assert [s.features.tolist() for s in pairs] == [[1, 10, 2, 30], [6, 20, 10, 40], [4, 0, 5, 5]]
    assert [s.label for s in pairs] == ["warm", "warm", "cold"]


async def test_mqtt_payload_forms_selection_and_unparsable_payloads(broker: Mosquitto) -> None:
    level, temp, hum = (PropertyRef("default", "probe", p) for p in ("level", "temperature", "humidity"))
    source = MqttSource("127.0.0.1", broker.port, "#", [level, temp, hum])
    async with consuming(source) as got:
        await until(lambda: source.stats.connected, what="subscribed")
        publisher = Publisher(broker.port)
        try:
            # KubeEdge Go mapper-framework's plain text: the property comes from the topic's last three levels.
            topic = "kubeedge/default/probe/level"
            publisher.send(topic, f"time is 2026-03-01 10:00:00  {topic}: 42.5")
            # The Go DataModel as JSON, and ours.
            publisher.send(
                "go/json",
                {"DeviceName": "probe", "PropertyName": "temperature", "Namespace": "default", "Value": "21.5",
                 "Type": "float", "TimeStamp": 1_700_000_000_123},
            )  # fmt: skip
            publisher.record("ours", hum, "55", 1_700_000_000_456)
            # Not selected, and three that cannot be read.
            publisher.record("ours", PropertyRef("default", "probe", "pressure"), "1013", 1_700_000_000_789)
            publisher.send("short/topic", "time is 2026-03-01 10:00:00  short/topic: 3")
            publisher.send("junk", "hello")
            publisher.send("junk", "{not json")
        finally:
            publisher.close()
        await until(lambda: len(got) == 3 and source.stats.ignored == 4, what="all messages")
    values = {str(r.ref): (r.value, r.timestamp) for r in got}
    assert values["default/probe/temperature"] == ("21.5", 1_700_000_000_123)
    assert values["default/probe/humidity"] == ("55", 1_700_000_000_456)
    assert values["default/probe/level"][0] == "42.5"
    assert values["default/probe/level"][1] > 1_700_000_000_000  # the receive time: the text's time is too coarse
    assert source.stats.received == 7 and source.stats.errors == 0
    assert source.stats.last_error is not None and "MQTT topic 'junk'" in source.stats.last_error
    assert "not valid JSON" in source.stats.last_error


# ---------------------------------------------------------------------------------------------- REST
async def test_rest_polling_of_a_running_mapper(start_mapper: Any) -> None:
    fleet = FakeFleet()
    fleet.devices["dev-b"] = FakeDevice(down=True)  # never read: its answers are stale
    slow = [fast_device(name) for name in ("dev-a", "dev-b")]
    for dev in slow:
        for prop in dev["spec"]["properties"]:
            prop["collectCycle"] = 400
    mapper, _ = await start_mapper(slow, fleet)
    assert mapper.rest is not None
    base = f"http://127.0.0.1:{mapper.rest.port}"
    a = fleet.devices["dev-a"]
    a.registers.update({0: 31, 1: 32})
    spec = StreamSpec(base, (TEMP, SETPOINT), poll_seconds=0.1)
    source = open_source(spec)
    assert isinstance(source, RestPollSource)
    samples = windowed(source, spec)
    try:
        (first,) = await take(samples, 1, lambda s: s.features.tolist() == [31, 32])
        a.registers.update({0: 33, 1: 34})
        (second,) = await take(samples, 1, lambda s: s.features.tolist() == [33, 34])
        assert second.timestamp > first.timestamp and second.rows == 1 and second.label is None
    finally:
        await samples.aclose()
        await source.close()
    # Polled ten times a cycle, a reading is one record however often it is seen.
    poller = RestPollSource(base + "/api/v1", [TEMP], interval_s=0.05)
    async with consuming(poller) as got:
        await until(lambda: poller.stats.received >= len(got) + 5 and len(got) >= 2, what="repeated answers")
    stamps = [r.timestamp for r in got]
    assert stamps == sorted(set(stamps))

    # A stale property and a missing one: counted and reported with the URL, nothing yielded, nothing raised.
    stale, missing = PropertyRef("default", "dev-b", "temperature"), PropertyRef("default", "dev-a", "nope")
    odd = RestPollSource(base, [stale, missing], interval_s=0.05)
    async with consuming(odd) as got:
        await until(lambda: odd.stats.stale >= 2 and odd.stats.errors >= 2, what="stale and 404 answers")
    assert got == [] and odd.stats.connected
    assert odd.stats.last_error is not None
    assert odd.stats.last_error.startswith(f"GET {base}/api/v1/device/default/dev-a/nope: HTTP 404: ")
    assert "no property 'nope'" in odd.stats.last_error


async def test_rest_polling_of_an_absent_mapper_reports_and_retries() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    source = RestPollSource(base, [TEMP], interval_s=0.05, max_backoff_s=0.2)
    async with consuming(source) as got:
        await until(lambda: source.stats.errors >= 3, what="failed polls")
    assert got == [] and not source.stats.connected
    assert source.stats.last_error is not None
    assert source.stats.last_error.startswith(f"GET {base}/api/v1/device/default/dev-a/temperature: ")


# ---------------------------------------------------------------------------------------------- frames
async def test_frames_of_an_rtsp_stream_encoded_by_ffmpeg(relay: RtspRelay) -> None:
    spec = StreamSpec(relay.url, (CAMERA,), every_nth_frame=5)
    source = open_source(spec)
    assert isinstance(source, FrameSource) and source.size == (160, 120)
    records = source.records()
    try:
        got = []
        for n in range(3):
            record = await asyncio.wait_for(anext(records), 20)
            # Frames 1, 6 and 11 of what ffmpeg decoded: the counter stands still while we hold the record.
            assert source.stats.received == 1 + 5 * n
            got.append(record)
    finally:
        await records.aclose()
        await source.close()
    for record in got:
        assert isinstance(record.value, np.ndarray)
        assert record.value.shape == (120, 160, 3) and record.value.dtype == np.uint8
        assert record.ref == CAMERA and record.value.std() > 10  # a picture, not a blank
    assert not np.array_equal(got[0].value, got[2].value)  # testsrc moves
    assert source.stats.errors == 0 and not source.stats.connected


async def test_frames_of_a_video_file_loop_at_its_own_size(red_video: Path) -> None:
    source = FrameSource(str(red_video), CAMERA, every_nth=10, size=None, realtime=False, first_backoff_s=0.1)
    records = source.records()
    try:
        first_pass = [await asyncio.wait_for(anext(records), 20) for _ in range(5)]  # frames 1, 11, 21, 31, 41
        assert source.stats.errors == 0 and source.stats.received == 41
        again = await asyncio.wait_for(anext(records), 20)  # after the end: ffmpeg plays the file again
    finally:
        await records.aclose()
        await source.close()
    assert source.stats.restarts == 2 and source.stats.received == 51
    ended = f"stream {red_video}: the stream ended after 50 frame(s) (ffmpeg exit code 0); restarting ffmpeg"
    assert source.stats.last_error == ended
    for record in [*first_pass, again]:
        frame = record.value
        assert isinstance(frame, np.ndarray) and frame.shape == (240, 320, 3)
        red, green, blue = frame.reshape(-1, 3).mean(axis=0)
        assert red > 200 and green < 40 and blue < 40, (red, green, blue)  # RGB order, not BGR

    # A file:// URL, scaled, played at its own rate (the default for files).
    spec = StreamSpec(f"file://{red_video}", (CAMERA,), frame_size=(80, 60))
    scaled = open_source(spec)
    assert isinstance(scaled, FrameSource) and scaled.realtime and scaled.input == f"file:{red_video}"
    samples = windowed(scaled, spec)
    try:
        (sample,) = await take(samples, 1)
    finally:
        await samples.aclose()
        await scaled.close()
    assert sample.features.shape == (60, 80, 3) and sample.rows == 1 and sample.label is None


async def test_a_missing_ffmpeg_is_reported_with_its_debian_package(red_video: Path) -> None:
    source = FrameSource(str(red_video), CAMERA, ffmpeg="/nonexistent/ffmpeg", first_backoff_s=0.05)
    async with consuming(source) as got:
        await until(lambda: source.stats.errors >= 2, what="failed starts")
    assert got == []
    assert source.stats.last_error == (
        "/nonexistent/ffmpeg not found: install the Debian package ffmpeg (apt install ffmpeg)"
    )


# ---------------------------------------------------------------------------------------------- SampleStream
def test_rtsp_server_gone_stalls_the_stream_then_it_recovers(relay: RtspRelay) -> None:
    spec = StreamSpec(relay.url, (CAMERA,), every_nth_frame=5, idle_seconds=1.0)
    source = FrameSource(spec.url, CAMERA, 5, (160, 120), first_backoff_s=0.2, max_backoff_s=1.0)
    with SampleStream(spec, source=source) as stream:
        assert next_sample(stream).features.shape == (120, 160, 3)
        relay.stop_server()
        stalled = next_stall(stream)
        assert str(stalled).startswith(f"no sample from {relay.url} for 1 s")
        assert stalled.last_error is not None and relay.url in stalled.last_error
        relay.start_server()
        sample = next_sample(stream)
        assert sample.features.shape == (120, 160, 3)
        assert stream.stats.restarts >= 2
    assert not source.stats.connected


async def test_broker_gone_stalls_the_stream_then_it_recovers(broker: Mosquitto, start_mapper: Any) -> None:
    _, fleet = await start_mapper([pushing_device("dev-a", broker.port, "plant/dev-a")])
    fleet.devices["dev-a"].registers.update({0: 11, 1: 12})
    url = f"mqtt://127.0.0.1:{broker.port}/plant/#"
    spec = StreamSpec(url, (TEMP, SETPOINT), window=WindowSpec.parse("count:2"), idle_seconds=1.0)
    source = MqttSource("127.0.0.1", broker.port, "plant/#", [TEMP, SETPOINT], first_backoff_s=0.1, max_backoff_s=0.5)
    stream = SampleStream(spec, source=source, queue_size=4)
    try:
        first = await asyncio.to_thread(next_sample, stream, lambda s: s.features.tolist() == [11, 12, 11, 12])
        assert first.rows == 2
        broker.stop()
        stalled = await asyncio.to_thread(next_stall, stream)
        assert str(stalled).startswith(f"no sample from {url} for 1 s")
        assert not stream.stats.connected
        assert stream.stats.last_error is not None and f"MQTT broker 127.0.0.1:{broker.port}" in stream.stats.last_error
        broker.start()
        fleet.devices["dev-a"].registers.update({0: 13, 1: 14})
        await asyncio.to_thread(next_sample, stream, lambda s: s.features.tolist() == [13, 14, 13, 14])
        assert stream.stats.connected and stream.stats.restarts >= 2
    finally:
        await asyncio.to_thread(stream.close)
    assert not source.stats.connected
    with pytest.raises(StopIteration):
        next(stream)


def test_a_slow_consumer_loses_the_oldest_samples(red_video: Path) -> None:
    spec = StreamSpec(str(red_video), (CAMERA,), every_nth_frame=1, idle_seconds=20)
    source = FrameSource(spec.url, CAMERA, every_nth=1, size=(16, 12), realtime=False)
    with SampleStream(spec, source=source, queue_size=3) as stream:
        first = next(stream)
        deadline = time.monotonic() + 20
        while stream.stats.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # consume nothing while the file decodes
        assert stream.stats.dropped > 0
        newer = next(stream)
    assert newer.timestamp >= first.timestamp and newer.features.shape == (12, 16, 3)


# ---------------------------------------------------------------------------------------------- parameters
def params(**values: str) -> Callable[[str], str | None]:
    return values.get


def test_parameters_to_spec_and_sources() -> None:
    assert StreamSpec.from_parameters(params()) is None
    assert StreamSpec.from_parameters(params(STREAM_URL="  ")) is None
    spec = StreamSpec.from_parameters(
        params(
            STREAM_URL="mqtt://10.0.0.5:1884/kubeedge/+/thermo/#",
            STREAM_PROPERTIES=" default/thermo/temperature , thermo/humidity",
            STREAM_LABEL="lab/thermo/comfort",
            STREAM_WINDOW="time:2.5:0.5",
            STREAM_POLL_SECONDS="0.2",
            STREAM_EVERY_NTH_FRAME="3",
            STREAM_FRAME_SIZE="320x240",
            STREAM_IDLE_SECONDS="5",
        )
    )
    assert spec is not None and spec.kind == "mqtt"
    assert spec.properties == (
        PropertyRef("default", "thermo", "temperature"),
        PropertyRef("default", "thermo", "humidity"),
    )
    assert spec.label == PropertyRef("lab", "thermo", "comfort")
    assert spec.window == WindowSpec("time", seconds=2.5, step_seconds=0.5)
    assert (spec.poll_seconds, spec.every_nth_frame, spec.frame_size, spec.idle_seconds) == (0.2, 3, (320, 240), 5.0)
    source = open_source(spec)
    assert isinstance(source, MqttSource)
    assert (source.host, source.port, source.topic) == ("10.0.0.5", 1884, "kubeedge/+/thermo/#")
    assert source.properties == {*spec.properties, spec.label}

    defaults = StreamSpec.from_parameters(params(STREAM_URL="http://127.0.0.1:7777", STREAM_PROPERTIES="dev/p"))
    assert defaults is not None and defaults.kind == "rest"
    assert defaults.window == WindowSpec.parse("count:1") and defaults.poll_seconds == 1.0
    assert (defaults.every_nth_frame, defaults.frame_size, defaults.idle_seconds) == (10, (160, 120), 30.0)
    rest = open_source(defaults)
    assert isinstance(rest, RestPollSource) and rest.url_of(rest.properties[0]) == (
        "http://127.0.0.1:7777/api/v1/device/default/dev/p"
    )
    for url, expected_input in [
        ("rtsp://admin:secret@cam:554/live", "rtsp://admin:secret@cam:554/live"),
        ("/videos/in.mp4", "file:/videos/in.mp4"),
        ("file:///videos/in.mp4", "file:/videos/in.mp4"),
        ("file://video/video.mp4", "file:video/video.mp4"),  # Sedna's relative form
    ]:
        frames = open_source(StreamSpec(url, (CAMERA,), frame_size=None))
        assert isinstance(frames, FrameSource) and frames.input == expected_input and frames.size is None
    assert StreamSpec("rtsp://admin:secret@cam/live", (CAMERA,)).safe_url == "rtsp://***@cam/live"
    assert parse_mqtt_url("mqtt://[::1]/a/+/b") == ("::1", 1883, "a/+/b")
    assert parse_mqtt_url("mqtt://broker:1883/#") == ("broker", 1883, "#")
    assert str(PropertyRef.parse("ns/dev/p")) == "ns/dev/p" and PropertyRef.parse("dev/p").namespace == "default"
    assert StreamRecord("ns", "dev", "p", "1", 5).ref == PropertyRef("ns", "dev", "p")


MQTT = "mqtt://127.0.0.1:1883/plant/#"
BAD_PARAMETERS = [
    ({"STREAM_PROPERTIES": "dev/p"}, ["STREAM_URL='' is not set but STREAM_PROPERTIES is", "mqtt://HOST"]),
    ({"STREAM_URL": "ftp://host/x", "STREAM_PROPERTIES": "dev/p"}, ["STREAM_URL='ftp://host/x'", "'ftp://'", "rtsp"]),
    ({"STREAM_URL": "mqtt://127.0.0.1:1883"}, ["STREAM_URL='mqtt://127.0.0.1:1883'", "mqtt://HOST[:PORT]/TOPIC"]),
    ({"STREAM_URL": "mqtt://h:99999/t", "STREAM_PROPERTIES": "d/p"}, ["STREAM_URL='mqtt://h:99999/t'", "port"]),
    ({"STREAM_URL": "mqtt://h/a/#/b", "STREAM_PROPERTIES": "d/p"}, ["STREAM_URL='mqtt://h/a/#/b'", "'#'"]),
    ({"STREAM_URL": "mqtt://u:pw@h/t", "STREAM_PROPERTIES": "d/p"}, ["STREAM_URL='mqtt://***@h/t'", "not supported"]),
    ({"STREAM_URL": MQTT}, ["STREAM_PROPERTIES=''", "needs its feature properties"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "a/b/c/d"}, ["STREAM_PROPERTIES='a/b/c/d'", "NAMESPACE/DEVICE/"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p,,d/q"}, ["STREAM_PROPERTIES='d/p,,d/q'", "comma-separated"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p,default/d/p"}, ["STREAM_PROPERTIES='d/p,default/d/p'", "twice"]),
    ({"STREAM_URL": "rtsp://cam/live"}, ["STREAM_PROPERTIES=''", "exactly one"]),
    ({"STREAM_URL": "rtsp://cam/live", "STREAM_PROPERTIES": "c/f,c/g"}, ["exactly one"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_LABEL": "x"}, ["STREAM_LABEL='x'", "NAMESPACE/DEVICE"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_LABEL": "d/p"}, ["STREAM_LABEL='d/p'", "not a feature"]),
    ({"STREAM_URL": "/v.mp4", "STREAM_PROPERTIES": "c/f", "STREAM_LABEL": "c/l"}, ["STREAM_LABEL='c/l'", "no label"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_WINDOW": "count:x"}, [
        "STREAM_WINDOW='count:x': expected count:N[:STEP] or time:SECONDS[:STEP] with N, STEP >= 1"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_WINDOW": "count:0"}, ["STREAM_WINDOW='count:0'"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_WINDOW": "count:3:0"}, ["STREAM_WINDOW='count:3:0'"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_WINDOW": "count:2.5"}, ["STREAM_WINDOW='count:2.5'"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_WINDOW": "time:-1"}, ["STREAM_WINDOW='time:-1'"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_WINDOW": "time:5:0"}, ["STREAM_WINDOW='time:5:0'"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_WINDOW": "time:nan"}, ["STREAM_WINDOW='time:nan'"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_WINDOW": "sliding:3"}, ["STREAM_WINDOW='sliding:3'"]),
    ({"STREAM_URL": "/v.mp4", "STREAM_PROPERTIES": "c/f", "STREAM_WINDOW": "count:5"}, [
        "STREAM_WINDOW='count:5'", "not windowed"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_POLL_SECONDS": "fast"}, [
        "STREAM_POLL_SECONDS='fast'", "seconds > 0"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_POLL_SECONDS": "0"}, ["STREAM_POLL_SECONDS='0'"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_POLL_SECONDS": "inf"}, ["STREAM_POLL_SECONDS='inf'"]),
    ({"STREAM_URL": "/v.mp4", "STREAM_PROPERTIES": "c/f", "STREAM_EVERY_NTH_FRAME": "0"}, [
        "STREAM_EVERY_NTH_FRAME='0'", "whole number >= 1"]),
    ({"STREAM_URL": "/v.mp4", "STREAM_PROPERTIES": "c/f", "STREAM_EVERY_NTH_FRAME": "2.5"}, [
        "STREAM_EVERY_NTH_FRAME='2.5'"]),
    ({"STREAM_URL": "/v.mp4", "STREAM_PROPERTIES": "c/f", "STREAM_FRAME_SIZE": "160"}, [
        "STREAM_FRAME_SIZE='160'", "WIDTHxHEIGHT"]),
    ({"STREAM_URL": "/v.mp4", "STREAM_PROPERTIES": "c/f", "STREAM_FRAME_SIZE": "0x120"}, ["STREAM_FRAME_SIZE='0x120'"]),
    ({"STREAM_URL": MQTT, "STREAM_PROPERTIES": "d/p", "STREAM_IDLE_SECONDS": "-3"}, [
        "STREAM_IDLE_SECONDS='-3'", "seconds > 0"]),
]  # fmt: skip


@pytest.mark.parametrize(("values", "expected"), BAD_PARAMETERS)
def test_each_bad_parameter_is_named_with_its_value_and_form(values: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(StreamConfigError) as caught:
        StreamSpec.from_parameters(values.get)
    assert isinstance(caught.value, ValueError)
    for text in expected:
        assert text in str(caught.value), str(caught.value)


def test_bad_property_references_and_urls_outside_parameters() -> None:
    for text in ("", "p", "a/b/c/d", "ns//p", "ns/dev ice/p"):
        with pytest.raises(StreamConfigError, match="expected NAMESPACE/DEVICE/PROPERTY or DEVICE/PROPERTY") as caught:
            PropertyRef.parse(text)
        assert repr(text) in str(caught.value)
    with pytest.raises(StreamConfigError, match=r"'gopher://x'.*supported: mqtt://HOST\[:PORT\]/TOPIC"):
        StreamSpec("gopher://x", (TEMP,))
    with pytest.raises(StreamConfigError, match="topic filter 'a/b#'"):
        MqttSource("127.0.0.1", 1883, "a/b#")
