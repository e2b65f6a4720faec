"""Counters of a stream, its live status line and its summary.

Latency of a shot: from the moment its message was received (``Shot.t_arrival``) to the moment its batch
was classified (just before the result is logged and published), ms. The live line shows the p50/p99 of the
shots classified since the previous line; the summary those of the whole run (from a histogram of 1 % wide
bins, so within 1 %).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

import numpy as np

_BINS_PER_DECADE = 230  # 1 % wide bins
_LOG_MIN = -3.0  # 1 µs, in ms


class LatencyHistogram:
    """Latencies (ms) in 1 %-wide logarithmic bins from 1 µs to 10^5 s; percentiles within 1 %."""

    def __init__(self) -> None:
        self.counts = np.zeros(int(11 * _BINS_PER_DECADE) + 1, dtype=np.int64)
        self.n = 0

    def add(self, latency_ms: np.ndarray) -> None:
        v = np.maximum(np.asarray(latency_ms, dtype=np.float64), 10.0**_LOG_MIN)
        k = np.clip(((np.log10(v) - _LOG_MIN) * _BINS_PER_DECADE).astype(np.int64), 0, len(self.counts) - 1)
        np.add.at(self.counts, k, 1)
        self.n += len(v)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0–100), ms (NaN when empty); the centre of its bin."""
        if self.n == 0:
            return math.nan
        rank = q / 100.0 * (self.n - 1)
        k = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        return float(10.0 ** (_LOG_MIN + (k + 0.5) / _BINS_PER_DECADE))


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> list[float]:
    """Exact percentiles of a list (NaN when empty)."""
    if len(values) == 0:
        return [math.nan for _ in qs]
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), qs)]


@dataclass
class StreamStats:
    """Thread-safe counters of a stream.

    Attributes:
        received: shots received (skipped, dropped and classified included).
        skipped: shots already in the log when the stream (re)started.
        dropped: shots dropped because the classifier was behind (queue full).
        malformed: messages that could not be read.
        classified: shots classified.
        reconnects: times the source connection was remade after a silence or an error.
        counts: shots per class name.
        judged, correct: shots with a true label, and how many got it.
    """

    class_names: list[str] = field(default_factory=list)
    received: int = 0
    skipped: int = 0
    dropped: int = 0
    malformed: int = 0
    classified: int = 0
    reconnects: int = 0
    judged: int = 0
    correct: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    state: str = "starting"
    last_error: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.t0 = time.monotonic()
        self.latency = LatencyHistogram()
        self._window: list[float] = []
        self._last_tick = self.t0
        self._last_classified = 0
        for n in self.class_names:
            self.counts.setdefault(n, 0)

    def add(self, **increments: int) -> None:
        """Add to counters, e.g. ``add(received=10, dropped=2)``."""
        with self._lock:
            for name, v in increments.items():
                setattr(self, name, getattr(self, name) + int(v))

    def set_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self.state = state
            if error is not None:
                self.last_error = error

    def record(self, labels: Sequence[str], truth: Sequence[str | None], latency_ms: np.ndarray) -> None:
        """A classified batch: class names given, true names (None where unknown), latencies (ms)."""
        with self._lock:
            self.classified += len(labels)
            for lab, t in zip(labels, truth, strict=True):
                self.counts[lab] = self.counts.get(lab, 0) + 1
                if t is not None:
                    self.judged += 1
                    self.correct += int(t == lab)
            self.latency.add(latency_ms)
            self._window.extend(float(v) for v in latency_ms)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.judged if self.judged else None

    def tick(self) -> dict:
        """A snapshot for the live line; starts a new latency/rate window."""
        with self._lock:
            now = time.monotonic()
            dt = max(now - self._last_tick, 1e-9)
            p50, p99 = percentiles(self._window)
            snap = self._snapshot(now)
            snap.update(rate=(self.classified - self._last_classified) / dt, p50_ms=p50, p99_ms=p99)
            self._window = []
            self._last_tick = now
            self._last_classified = self.classified
            return snap

    def summary(self) -> dict:
        """Whole-run figures: the counters, mean rate (classified shots/s), latency p50/p99 over all shots."""
        with self._lock:
            now = time.monotonic()
            snap = self._snapshot(now)
            snap.update(rate=self.classified / max(now - self.t0, 1e-9), p50_ms=self.latency.percentile(50),
                        p99_ms=self.latency.percentile(99))
            return snap

    def _snapshot(self, now: float) -> dict:
        return {
            "elapsed_s": now - self.t0,
            "received": self.received,
            "skipped": self.skipped,
            "dropped": self.dropped,
            "malformed": self.malformed,
            "classified": self.classified,
            "reconnects": self.reconnects,
            "counts": dict(self.counts),
            "judged": self.judged,
            "accuracy": self.accuracy,
            "state": self.state,
            "last_error": self.last_error,
        }


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else (f"{v:.3g}" if v < 100 else f"{v:.0f}")


def format_status(snap: dict) -> str:
    """One line: ``received, classified, dropped, malformed, rate, latency p50/p99, per-class counts, accuracy``."""
    parts = [
        f"{snap['state']}",
        f"received {snap['received']}",
        f"classified {snap['classified']}",
        f"dropped {snap['dropped']}",
        f"malformed {snap['malformed']}",
    ]
    if snap.get("skipped"):
        parts.append(f"skipped {snap['skipped']}")
    parts.append(f"{snap['rate']:.4g} shots/s")
    parts.append(f"latency p50 {_ms(snap['p50_ms'])} ms p99 {_ms(snap['p99_ms'])} ms")
    if snap["counts"]:
        parts.append(" ".join(f"{k} {v}" for k, v in snap["counts"].items()))
    if snap["accuracy"] is not None:
        parts.append(f"accuracy {snap['accuracy']:.3f} ({snap['judged']} judged)")
    return ", ".join(parts)


class StatusPrinter:
    """Shows status lines: on a terminal one line rewritten in place every call, otherwise a plain line at
    most every ``plain_every_s`` seconds (and always with ``force``). Messages (:meth:`say`) go on their own line.

    Args:
        stream: where to write (a terminal gets the live line).
        plain_every_s: seconds between plain lines.
        quiet: show nothing.
    """

    def __init__(self, stream: IO[str], plain_every_s: float = 30.0, quiet: bool = False) -> None:
        self.stream = stream
        self.plain_every_s = float(plain_every_s)
        self.quiet = quiet
        try:
            self.tty = bool(stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self._last_plain = -math.inf
        self._live = False

    def show(self, line: str, force: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            width = 200
            self.stream.write("\r\x1b[2K" + line[:width])
            self.stream.flush()
            self._live = True
            return
        now = time.monotonic()
        if force or now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            print(line, file=self.stream, flush=True)

    def say(self, message: str) -> None:
        if self.quiet:
            return
        if self._live:
            self.stream.write("\r\x1b[2K")
            self._live = False
        print(message, file=self.stream, flush=True)

    def end(self) -> None:
        if self._live and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
            self._live = False
