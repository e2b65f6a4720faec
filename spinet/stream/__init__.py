"""Real-time classification of a detector stream (``spi stream``) and a simulated beamline (``spi serve``).

Modules:

* :mod:`~spinet.stream.messages`: shots in (Karabo bridge trains, ``spi-frames`` ZeroMQ messages), results out;
* :mod:`~spinet.stream.sources`: Karabo bridge, ZeroMQ and file-replay sources (``--source``);
* :mod:`~spinet.stream.queue`: the bounded queue that drops the oldest shots when the classifier is behind;
* :mod:`~spinet.stream.engine`: frames → classes, distances, scores (torch on CPU/GPU, ONNX Runtime);
* :mod:`~spinet.stream.sinks`: the resumable label log, the single-hit veto list, the results PUB socket;
* :mod:`~spinet.stream.stats`: counters, latency percentiles, the status line;
* :mod:`~spinet.stream.runner`: the loop that ties them together (:class:`StreamRunner`);
* :mod:`~spinet.stream.serve`: the simulated beamline behind a Karabo bridge server.

``docs/stream.md`` describes the commands, the message formats and every option.
"""

from ..inference import SupportSpec
from .engine import FrameClassifier, Geometry
from .messages import MalformedMessage, Shot
from .runner import StreamOptions, StreamRunner
from .serve import BeamlineServer, ShotBuffer, file_buffer, simulate_buffer
from .sinks import Publisher, ResultLog, VetoList
from .sources import ArraySource, KaraboSource, ReplaySource, Source, ZmqSource, parse_source

parse_support = SupportSpec.parse
"""One ``--support`` value (:meth:`spinet.inference.SupportSpec.parse`, the parser of spi classify too)."""

__all__ = [
    "ArraySource",
    "BeamlineServer",
    "FrameClassifier",
    "Geometry",
    "KaraboSource",
    "MalformedMessage",
    "Publisher",
    "ReplaySource",
    "ResultLog",
    "Shot",
    "ShotBuffer",
    "Source",
    "StreamOptions",
    "StreamRunner",
    "SupportSpec",
    "VetoList",
    "ZmqSource",
    "file_buffer",
    "parse_source",
    "parse_support",
    "simulate_buffer",
]
