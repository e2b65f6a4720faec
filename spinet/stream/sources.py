"""Sources of a stream: a Karabo bridge, an ``spi-frames`` ZeroMQ socket, or a file replayed at a rate.

``--source`` values (:func:`parse_source`):

* ``karabo://tcp://HOST:PORT``: a Karabo bridge server (EuXFEL; ``spi serve``), read with
  ``karabo_bridge.Client`` (socket REQ by default, or SUB / PULL to match the server's REP / PUB / PUSH);
* ``zmq://tcp://HOST:PORT``: ``spi-frames`` messages (:mod:`spinet.stream.messages`) from a PUB (we SUB,
  the default) or PUSH (we PULL) socket; an optional leading topic frame is ignored;
* ``replay:FILE.cxi[?rate=HZ]``: the shots of a file, in order, at ``rate`` shots/s (live-like: the
  classifier's queue drops when behind), or as fast as the classifier takes them without ``rate`` (no drops).
  The stream ends when the file does.

A source runs in its own thread (:meth:`Source.run`) and hands shots to a :class:`Feed`. A message that
cannot be read is counted (:meth:`Feed.malformed`) and skipped; a silence longer than ``reconnect_s``
remakes the connection (ZeroMQ reconnects by itself, but a REQ socket whose server went away mid-request
would wait for ever).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from spisim.cxi import CXIReader
from spisim.errors import ConfigError, InputFileError

from ..data import file_labels
from .messages import (
    DEFAULT_KARABO_KEY,
    MalformedMessage,
    Shot,
    decode_frame_message,
    describe_karabo_train,
    karabo_shots,
    resolve_karabo_source,
)
from .queue import DropQueue
from .stats import StreamStats

KARABO_SOCKETS = ("REQ", "SUB", "PULL")
ZMQ_SOCKETS = ("SUB", "PULL")


class Feed:
    """What a source hands its shots to: the bounded queue, the counters, the stop flag, the skip set.

    Args:
        queue: the classifier's queue.
        stats: the counters.
        stop: set when the stream must end.
        skip: shot keys (:attr:`Shot.key`) already logged: not classified again.
        log: called with one-line messages (malformed messages, reconnections), at most one a second.
    """

    def __init__(self, queue: DropQueue[Shot], stats: StreamStats, stop: threading.Event,
                 skip: set | None = None, log: Callable[[str], None] | None = None) -> None:
        self.queue = queue
        self.stats = stats
        self.stop = stop
        self.skip = skip if skip is not None else set()
        self._log = log
        self._last_log = -1e9
        self._suppressed = 0
        self.error: BaseException | None = None

    def wanted(self, shot: Shot) -> bool:
        return shot.key not in self.skip

    def deliver(self, shots: Sequence[Shot], block: bool = False) -> None:
        """Queue shots (dropping the oldest waiting ones when full, unless ``block``)."""
        keep = [s for s in shots if s.key not in self.skip]
        dropped, left_out = self.queue.put(keep, block=block, stop=self.stop) if keep else (0, 0)
        self.stats.add(received=len(shots) - left_out, skipped=len(shots) - len(keep), dropped=dropped)

    def malformed(self, reason: str) -> None:
        self.stats.add(malformed=1)
        self.log(f"malformed message: {reason}")

    def log(self, message: str) -> None:
        if self._log is None:
            return
        now = time.monotonic()
        if now - self._last_log < 1.0:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more messages in the last second not shown)" if self._suppressed else ""
        self._suppressed = 0
        self._last_log = now
        self._log(message + more)

    def fatal(self, exc: BaseException) -> None:
        """End the stream with an error that the caller re-raises."""
        self.error = exc
        self.stop.set()


class Source:
    """A source of shots; :meth:`run` delivers them to a :class:`Feed` until the source ends or ``feed.stop``."""

    description = "source"
    live = True
    """Shots come at their own pace (the queue drops when behind); False: the source waits for room."""

    def run(self, feed: Feed, frame_shape: tuple[int, int, int]) -> None:
        raise NotImplementedError


class ReplaySource(Source):
    """The shots of a CXI/HDF5 file in order, at ``rate`` shots/s (None: as fast as they are taken).

    True labels come from the file where it has them (``label_mode`` names them as the model does).
    """

    def __init__(self, path: str | Path, rate: float | None = None, label_mode: str = "hit_type",
                 chunk: int = 64) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError(f"replay: no such file: {self.path}")
        if rate is not None and not rate > 0:
            raise ConfigError(f"replay rate must be > 0 shots/s, got {rate}")
        self.rate = rate
        self.label_mode = label_mode
        self.chunk = int(chunk)
        self.live = rate is not None
        self.description = f"replay of {self.path}" + (f" at {rate:g} shots/s" if rate else "")

    def run(self, feed: Feed, frame_shape: tuple[int, int, int]) -> None:
        with CXIReader(self.path) as reader:
            if tuple(reader.frame_shape) != tuple(frame_shape):
                raise InputFileError(f"{self.path}: frames of shape {reader.frame_shape}, the classifier is set up "
                                     f"for {tuple(frame_shape)} (give --geometry)")
            truth: dict[int, str] = {}
            if reader.has_labels:
                idx, names = file_labels(reader, self.label_mode)
                truth = {int(i): n for i, n in zip(idx, names, strict=True)}
            n = len(reader)
            feed.stats.set_state("replaying")

            def chunks() -> Iterator[tuple[list[int], np.ndarray, list[str | None]]]:
                for start in range(0, n, self.chunk):
                    sel = range(start, min(start + self.chunk, n))
                    todo = [i for i in sel if ("i", i) not in feed.skip]
                    if len(todo) < len(sel):  # already logged: not read, not paced
                        feed.stats.add(received=len(sel) - len(todo), skipped=len(sel) - len(todo))
                    if todo:
                        yield todo, reader.frames(np.asarray(todo)), [truth.get(i) for i in todo]

            play(feed, chunks(), self.rate)
        if not feed.stop.is_set():
            feed.stats.set_state("replay finished")


class ArraySource(Source):
    """Frames from memory, played in order (cycling) at ``rate`` shots/s (None: as fast as they are taken), for
    embedding the stream in a Python program (e.g. a facility's own reading loop) and for benchmarks.

    Args:
        frames: (N, M, SS, FS) any integer or float dtype.
        shots: shots to play (default N; more cycle through the frames with indices counting on).
        rate: shots/s, or None.
        labels: N true class names, or None.
    """

    def __init__(self, frames: np.ndarray, shots: int | None = None, rate: float | None = None,
                 labels: Sequence[str] | None = None, chunk: int = 64) -> None:
        self.frames = frames
        self.shots = len(frames) if shots is None else int(shots)
        self.rate = rate
        self.labels = labels
        self.chunk = int(chunk)
        self.live = rate is not None
        self.description = f"{self.shots} frames from memory" + (f" at {rate:g} shots/s" if rate else "")

    def run(self, feed: Feed, frame_shape: tuple[int, int, int]) -> None:
        n = len(self.frames)

        def chunks() -> Iterator[tuple[list[int], list[np.ndarray], list[str | None]]]:
            for start in range(0, self.shots, self.chunk):
                todo = list(range(start, min(start + self.chunk, self.shots)))
                pos = [i % n for i in todo]
                truth = [None if self.labels is None else self.labels[p] for p in pos]
                yield todo, [self.frames[p] for p in pos], truth

        feed.stats.set_state("playing")
        play(feed, chunks(), self.rate)


def play(feed: Feed, chunks: Iterator[tuple[list[int], Sequence[np.ndarray], list[str | None]]],
         rate: float | None) -> None:
    """Deliver chunks of (indices, frames, true labels) at ``rate`` shots/s, or as fast as they are taken
    (waiting for room in the queue, nothing dropped) when ``rate`` is None. A shot arrives when it is due."""
    t0 = time.monotonic()
    played = 0
    for todo, frames, truth in chunks:
        k = 0
        while k < len(todo):
            if feed.stop.is_set():
                return
            if rate is None:
                group = range(k, len(todo))
            else:
                now = time.monotonic()
                due = t0 + played / rate
                if due > now:
                    time.sleep(min(due - now, 0.05))
                    continue
                ready = int((now - t0) * rate) + 1 - played  # shots due by now
                group = range(k, min(len(todo), k + max(ready, 1)))
            t = time.monotonic()
            shots = [Shot(frames[j], todo[j], None, None, truth[j], t) for j in group]
            feed.deliver(shots, block=rate is None)
            played += len(shots)
            k += len(shots)


class _ZmqLoop(Source):
    """Receive loop shared by the ZeroMQ sources: poll every ``poll_s``, remake the connection after
    ``reconnect_s`` of silence once data had come (or after a socket error)."""

    poll_s = 0.25

    def __init__(self, endpoint: str, reconnect_s: float) -> None:
        self.endpoint = endpoint
        self.reconnect_s = float(reconnect_s)

    def _connect(self):  # noqa: ANN202 - returns a receiver object
        raise NotImplementedError

    def _receive(self, conn, feed: Feed, frame_shape: tuple[int, int, int]) -> bool:  # noqa: ANN001
        """Receive one message and deliver its shots; False on a poll timeout."""
        raise NotImplementedError

    def _close(self, conn) -> None:  # noqa: ANN001
        raise NotImplementedError

    def run(self, feed: Feed, frame_shape: tuple[int, int, int]) -> None:
        import zmq

        had_data = False  # data came at some point: a later silence is an outage
        while not feed.stop.is_set():
            conn = self._connect()
            silence = 0.0
            fresh = True  # no data yet on this connection
            try:
                while not feed.stop.is_set():
                    try:
                        got = self._receive(conn, feed, frame_shape)
                    except MalformedMessage as exc:
                        feed.malformed(str(exc))
                        got = True
                    except zmq.ZMQError as exc:
                        feed.log(f"{self.endpoint}: {exc}; reconnecting")
                        break
                    if got:
                        if silence > 0 or fresh:
                            feed.stats.set_state("receiving")
                        had_data, fresh, silence = True, False, 0.0
                        continue
                    silence += self.poll_s
                    if fresh and silence == self.poll_s:
                        feed.stats.set_state(f"waiting for {self.endpoint}")
                    if had_data and silence >= self.reconnect_s:
                        if not fresh:  # an outage: count and say it once
                            feed.stats.add(reconnects=1)
                            feed.log(f"no data from {self.endpoint} for {silence:.1f} s: reconnecting")
                        break
            finally:
                self._close(conn)


class KaraboSource(_ZmqLoop):
    """A Karabo bridge server (``karabo_bridge.Client``).

    Args:
        endpoint: ``tcp://HOST:PORT``.
        source: Karabo source of the detector data; None: the only source that has ``key``.
        key: the detector data key.
        socket: REQ (server REP, the default of Karabo bridges), SUB (server PUB) or PULL (server PUSH).
        reconnect_s: silence (s) after which the connection is remade.
    """

    def __init__(self, endpoint: str, source: str | None = None, key: str = DEFAULT_KARABO_KEY,
                 socket: str = "REQ", reconnect_s: float = 5.0) -> None:
        super().__init__(endpoint, reconnect_s)
        socket = socket.upper()
        if socket not in KARABO_SOCKETS:
            raise ConfigError(f"a Karabo bridge is read with a {', '.join(KARABO_SOCKETS)} socket, got {socket!r}")
        self.source = source
        self.key = key
        self.socket = socket
        self.description = f"Karabo bridge {endpoint} ({socket})"
        self._resolved: str | None = None
        self._counter = [0]

    def _connect(self):  # noqa: ANN202
        import zmq
        from karabo_bridge import Client

        ctx = zmq.Context()
        return Client(self.endpoint, sock=self.socket, timeout=self.poll_s, context=ctx)

    def _close(self, conn) -> None:  # noqa: ANN001
        conn._context.destroy(linger=0)

    def _receive(self, conn, feed: Feed, frame_shape: tuple[int, int, int]) -> bool:  # noqa: ANN001
        import zmq

        try:
            data, meta = conn.next()
        except TimeoutError:
            return False
        except zmq.ZMQError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken message can fail deserialisation in many ways
            raise MalformedMessage(f"cannot decode a Karabo bridge message ({exc.__class__.__name__}: {exc})") from None
        t = time.monotonic()
        if not isinstance(data, dict):
            raise MalformedMessage("a Karabo bridge message that is not a map of sources")
        if self._resolved is None:
            try:
                self._resolved = resolve_karabo_source(data, self.source, self.key)
            except LookupError as exc:
                feed.fatal(ConfigError(f"{self.endpoint}: {exc}; the stream holds {describe_karabo_train(data)} "
                                       "(set --karabo-source and --karabo-key)"))
                return True
        feed.deliver(karabo_shots(data, meta, self._resolved, self.key, frame_shape, t, self._counter))
        return True


class ZmqSource(_ZmqLoop):
    """``spi-frames`` messages from a ZeroMQ PUB (socket SUB, the default) or PUSH (socket PULL) socket."""

    def __init__(self, endpoint: str, socket: str = "SUB", reconnect_s: float = 5.0) -> None:
        super().__init__(endpoint, reconnect_s)
        socket = socket.upper()
        if socket not in ZMQ_SOCKETS:
            raise ConfigError(f"zmq:// sources are read with a {' or '.join(ZMQ_SOCKETS)} socket, got {socket!r}")
        self.socket = socket
        self.description = f"ZeroMQ {endpoint} ({socket})"
        self._counter = [0]

    def _connect(self):  # noqa: ANN202
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB if self.socket == "SUB" else zmq.PULL)
        if self.socket == "SUB":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, int(self.poll_s * 1000))
        sock.connect(self.endpoint)
        return ctx, sock

    def _close(self, conn) -> None:  # noqa: ANN001
        conn[0].destroy(linger=0)

    def _receive(self, conn, feed: Feed, frame_shape: tuple[int, int, int]) -> bool:  # noqa: ANN001
        import zmq

        try:
            parts = conn[1].recv_multipart()
        except zmq.Again:
            return False
        t = time.monotonic()
        feed.deliver(decode_frame_message(parts[-1], frame_shape, t, self._counter))
        return True


def parse_source(
    text: str,
    *,
    karabo_source: str | None = None,
    karabo_key: str = DEFAULT_KARABO_KEY,
    socket: str | None = None,
    reconnect_s: float = 5.0,
    label_mode: str = "hit_type",
) -> Source:
    """A :class:`Source` from a ``--source`` value (module doc).

    Raises:
        ConfigError: an unknown scheme, a bad address or rate.
    """
    if text.startswith("karabo://"):
        endpoint = text[len("karabo://"):]
        _check_endpoint(text, endpoint)
        return KaraboSource(endpoint, karabo_source, karabo_key, socket or "REQ", reconnect_s)
    if text.startswith("zmq://"):
        endpoint = text[len("zmq://"):]
        _check_endpoint(text, endpoint)
        return ZmqSource(endpoint, socket or "SUB", reconnect_s)
    if text.startswith("replay:"):
        rest = text[len("replay:"):]
        path, _, query = rest.partition("?")
        rate = None
        if query:
            q = parse_qs(query, strict_parsing=False)
            unknown = set(q) - {"rate"}
            if unknown or "rate" not in q:
                raise ConfigError(f"--source {text!r}: the only replay option is ?rate=HZ")
            try:
                rate = float(q["rate"][-1])
            except ValueError:
                raise ConfigError(f"--source {text!r}: rate must be a number of shots/s") from None
        if not path:
            raise ConfigError(f"--source {text!r}: expected replay:FILE.cxi[?rate=HZ]")
        return ReplaySource(path, rate, label_mode)
    raise ConfigError(f"--source {text!r}: expected karabo://tcp://HOST:PORT, zmq://tcp://HOST:PORT or "
                      "replay:FILE.cxi[?rate=HZ]")


def _check_endpoint(text: str, endpoint: str) -> None:
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    if not endpoint.startswith(("tcp://", "ipc://", "inproc://")) or (endpoint.startswith("tcp://") and
                                                                       (not host or not port.isdigit())):
        raise ConfigError(f"--source {text!r}: expected an address like tcp://HOST:PORT")
