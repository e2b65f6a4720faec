"""Run a stream: a source thread fills a bounded queue; the caller's thread takes batches from it under a
latency deadline, classifies them and writes the results (log, veto list, PUB socket), and shows the status.

Batching: a batch is sent to the classifier when it has ``max_batch`` shots or when its oldest shot has
waited ``max_latency_ms`` minus the time a batch takes (a running estimate), whichever comes first; shots
that are already late go at once. Drops: the queue holds at most ``queue_size`` shots; a live source that
finds it full drops the oldest waiting shot (counted) instead of waiting.

Stop: :meth:`StreamRunner.stop` (e.g. from a SIGINT handler) ends the stream after the batch in hand; the
log and the veto list are flushed and synced, and :meth:`StreamRunner.run` returns the summary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from spisim.errors import SpiError

from .engine import BatchResult, single_classes
from .messages import Shot
from .queue import DropQueue
from .sinks import Publisher, ResultLog, VetoList
from .sources import Feed, Source
from .stats import StreamStats


class Classifier(Protocol):
    """What the runner needs of a classifier (:class:`spinet.stream.engine.FrameClassifier`)."""

    frame_shape: tuple[int, int, int]
    class_names: list[str]

    @property
    def output_names(self) -> list[str]: ...

    def classify(self, frames: Sequence[np.ndarray]) -> BatchResult: ...


@dataclass
class StreamOptions:
    """Settings of a stream.

    Attributes:
        max_batch: most shots per batch.
        max_latency_ms: deadline from a shot's arrival to its result, ms (batches are cut to meet it).
        queue_size: most shots waiting for the classifier; more are dropped (oldest first).
        status_every_s: seconds between status callbacks.
        max_shots: stop after classifying this many shots (None: run until the source ends or a stop).
        max_seconds: stop after this many seconds (None: no limit).
    """

    max_batch: int = 64
    max_latency_ms: float = 100.0
    queue_size: int = 256
    status_every_s: float = 1.0
    max_shots: int | None = None
    max_seconds: float | None = None


class StreamRunner:
    """One stream: source → queue → batches → classifier → log, veto list, publisher.

    Args:
        source: where shots come from.
        classifier: frames → classes.
        options: batching, queue and stop settings.
        log: the label log (its already logged shots are skipped), or None.
        veto: the single-hit veto list, or None.
        publisher: the results PUB socket, or None.
        on_status: called with a status snapshot (:meth:`StreamStats.tick`) every ``status_every_s``.
        on_message: called with one-line messages (malformed messages, reconnections).
    """

    def __init__(
        self,
        source: Source,
        classifier: Classifier,
        options: StreamOptions | None = None,
        *,
        log: ResultLog | None = None,
        veto: VetoList | None = None,
        publisher: Publisher | None = None,
        on_status: Callable[[dict], None] | None = None,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self.classifier = classifier
        self.options = options or StreamOptions()
        if self.options.max_batch < 1 or self.options.queue_size < 1 or not self.options.max_latency_ms > 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_latency_ms > 0")
        self.log = log
        self.veto = veto
        self.publisher = publisher
        self.on_status = on_status
        self.on_message = on_message
        self.stats = StreamStats(list(classifier.output_names))
        self.queue: DropQueue[Shot] = DropQueue(self.options.queue_size)
        self._stop = threading.Event()
        self.feed = Feed(self.queue, self.stats, self._stop, log.done if log is not None else set(), on_message)
        self._single = single_classes(list(classifier.class_names))
        self._batch_s = 0.0  # running estimate of the time a batch takes, s

    def stop(self) -> None:
        """End the stream after the batch in hand (safe from a signal handler or another thread)."""
        self._stop.set()

    def _source_thread(self) -> None:
        try:
            self.source.run(self.feed, tuple(self.classifier.frame_shape))
        except SpiError as exc:
            self.feed.fatal(exc)
        except Exception as exc:  # noqa: BLE001 - a bug in a source must end the stream, not hang it
            self.feed.fatal(exc)
        finally:
            self.queue.close()

    def run(self) -> dict:
        """Run until the source ends, :meth:`stop`, ``max_shots`` or ``max_seconds``; returns
        :meth:`StreamStats.summary` (plus ``stopped_by``)."""
        opts = self.options
        thread = threading.Thread(target=self._source_thread, name="spi-stream-source", daemon=True)
        t_start = time.monotonic()
        next_status = t_start + opts.status_every_s
        stopped_by = "source ended"
        thread.start()
        try:
            while True:
                if self._stop.is_set():
                    stopped_by = "error" if self.feed.error is not None else "stop"
                    break
                if opts.max_seconds is not None and time.monotonic() - t_start >= opts.max_seconds:
                    stopped_by = "time limit"
                    break
                wait = max(opts.max_latency_ms / 1000.0 - self._batch_s, 0.0)
                timeout = max(min(next_status - time.monotonic(), 0.25), 0.0)
                batch = self.queue.get_batch(opts.max_batch, wait, timeout, arrival=lambda s: s.t_arrival)
                if batch:
                    self._process(batch)
                elif self.queue.closed and len(self.queue) == 0:
                    if self._stop.is_set():  # the source ended because it was told to (stop() or an error)
                        stopped_by = "error" if self.feed.error is not None else "stop"
                    break
                if opts.max_shots is not None and self.stats.classified >= opts.max_shots:
                    stopped_by = "shot limit"
                    break
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + opts.status_every_s
                    if self.on_status is not None:
                        self.on_status(self.stats.tick())
        finally:
            self._stop.set()
            thread.join(timeout=5.0)
            self.close()
        if self.feed.error is not None:
            raise self.feed.error
        summary = self.stats.summary()
        summary["stopped_by"] = stopped_by
        return summary

    def _process(self, batch: list[Shot]) -> None:
        t0 = time.monotonic()
        result = self.classifier.classify([s.frame for s in batch])
        t_done = time.monotonic()
        latency_ms = np.array([(t_done - s.t_arrival) * 1000.0 for s in batch])
        if self.log is not None:
            self.log.write(batch, result.labels, result.scores, result.distances)
        if self.veto is not None and self._single.any():
            singles = [s for s, p in zip(batch, result.pred.tolist(), strict=True) if p >= 0 and self._single[p]]
            if singles:
                self.veto.write(singles)
        if self.publisher is not None:
            self.publisher.send(batch, result.labels, result.scores, result.distances, latency_ms)
        self.stats.record(result.labels, [s.truth for s in batch], latency_ms)
        dt = time.monotonic() - t0
        self._batch_s = dt if self._batch_s == 0 else 0.8 * self._batch_s + 0.2 * dt

    def close(self) -> None:
        """Flush and close the outputs (called by :meth:`run`)."""
        for sink in (self.log, self.veto, self.publisher):
            if sink is not None:
                sink.close()
