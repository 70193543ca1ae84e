"""Device streams for AI workers: property values over MQTT or a mapper's REST API, video frames over RTSP or
from files, turned into model inputs (count or time windows of feature rows, or one frame per sample).

Everything arrives over the wire, as a worker on another node would see it; nothing here imports the mapper SDK
or the agent. The usual way in is a worker's parameters::

    spec = StreamSpec.from_parameters(os.environ.get)     # STREAM_URL, STREAM_PROPERTIES, STREAM_WINDOW, ...
    with SampleStream(spec) as stream:                     # blocking, for Sedna-style synchronous loops
        for sample in stream:
            model.predict(sample.features.reshape(1, -1))

or, in asyncio code, ``async for sample in windowed(open_source(spec), spec)``.
"""

from edgeai.streams.bridge import SampleStream
from edgeai.streams.frames import FrameSource
from edgeai.streams.mqtt import MqttSource
from edgeai.streams.records import PropertyRef, StreamConfigError, StreamRecord, StreamStalled, StreamStats
from edgeai.streams.rest import RestPollSource
from edgeai.streams.sources import Source, open_source
from edgeai.streams.spec import StreamSpec, WindowSpec
from edgeai.streams.window import CountWindow, Sample, TimeWindow, Window, make_window, windowed

__all__ = [
    "CountWindow",
    "FrameSource",
    "MqttSource",
    "PropertyRef",
    "RestPollSource",
    "Sample",
    "SampleStream",
    "Source",
    "StreamConfigError",
    "StreamRecord",
    "StreamSpec",
    "StreamStalled",
    "StreamStats",
    "TimeWindow",
    "Window",
    "WindowSpec",
    "make_window",
    "open_source",
    "windowed",
]
