"""Where a stream's results go: the label log (CSV), the single-hit veto list, and a ZeroMQ PUB socket.

Label log (``spi stream -o LOG.csv``), one row per shot, header first::

    index,label,score,train_id,pulse_id,truth,time,distance_<class 1>,...
    1042,single,2.31,,,single,2025-05-01T09:12:03.114+00:00,0.0123,...

It is a label file of :func:`spisim.labels.read_label_file` (``index,label`` with extra columns), so it can be
given to ``spi classify --support-labels`` and to studies as a file's labels (``unknown`` rows are a class
there; filter them out first where that is not wanted). Rows are written after each batch and fsync-ed at
most every ``fsync_every_s`` seconds and when the log is closed: a killed process loses nothing it wrote,
a crashed machine at most that much. An existing log is resumed: a cut-short last line is removed, and
the shots already in it (by train/pulse id where known, else by index) are reported by :attr:`ResultLog.done`
so that the stream skips them.

Veto list (``--veto-out``): ``index,train_id,pulse_id`` of every shot classified as a single hit, appended
and synced like the log.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spisim.errors import OutputFileError
from spisim.labels import now_iso

from .messages import Shot, encode_results, shot_key

LOG_COLUMNS = ("index", "label", "score", "train_id", "pulse_id", "truth", "time")
VETO_COLUMNS = ("index", "train_id", "pulse_id")


def _opt_int(cell: str) -> int | None:
    cell = cell.strip()
    return int(cell) if cell else None


def _repair_tail(path: Path) -> None:
    """Remove a cut-short last line (a write that a kill or crash interrupted)."""
    raw = path.read_bytes()
    cut = raw.rfind(b"\n") + 1
    if cut != len(raw):
        with open(path, "r+b") as f:
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())


class _AppendFile:
    """A CSV file appended to in batches, fsync-ed at most every ``fsync_every_s`` seconds."""

    def __init__(self, path: str | Path, header: Sequence[str], *, overwrite: bool, fsync_every_s: float) -> None:
        self.path = Path(path)
        self.header = list(header)
        self.fsync_every_s = float(fsync_every_s)
        if not self.path.parent.is_dir():
            raise OutputFileError(f"cannot write {self.path}: no folder {self.path.parent}")
        self.existing_rows: list[list[str]] = []
        if self.path.exists() and not overwrite and self.path.stat().st_size > 0:
            _repair_tail(self.path)
            text = self.path.read_text(encoding="utf-8", errors="replace")
            rows = list(csv.reader(io.StringIO(text)))
            if rows and rows[0] != self.header:
                raise OutputFileError(
                    f"{self.path} exists with columns {','.join(rows[0])[:200]!r}, not those of this stream "
                    f"({','.join(self.header)[:200]!r}): give --overwrite or another file"
                )
            self.existing_rows = rows[1:]
        mode = "w" if overwrite or not self.path.exists() or self.path.stat().st_size == 0 else "a"
        try:
            self._file = open(self.path, mode, encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise OutputFileError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        if mode == "w":
            self._file.write(",".join(self.header) + "\n")
            self._sync()
        self._last_sync = time.monotonic()
        self._dirty = False

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()
        self._dirty = False

    def write_rows(self, rows: list[list]) -> None:
        if not rows:
            return
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        self._file.write(buf.getvalue())
        self._file.flush()
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.fsync_every_s:
            self._sync()

    def close(self) -> None:
        if not self._file.closed:
            if self._dirty:
                self._sync()
            self._file.close()


class ResultLog(_AppendFile):
    """The label log of a stream (module doc).

    Args:
        path: the CSV file.
        class_names: the classifier's classes (one distance column each).
        overwrite: start afresh instead of resuming an existing log.
        fsync_every_s: longest time between syncs to disk, s.
    """

    def __init__(self, path: str | Path, class_names: Sequence[str], *, overwrite: bool = False,
                 fsync_every_s: float = 1.0) -> None:
        self.class_names = list(class_names)
        super().__init__(path, [*LOG_COLUMNS, *(f"distance_{n}" for n in self.class_names)], overwrite=overwrite,
                         fsync_every_s=fsync_every_s)
        self.done: set[tuple] = set()
        for lineno, r in enumerate(self.existing_rows, start=2):
            if not r:
                continue
            try:
                self.done.add(shot_key(int(r[0]), _opt_int(r[3]), _opt_int(r[4])))
            except (ValueError, IndexError):
                raise OutputFileError(f"{self.path}:{lineno}: not a row of a stream log") from None
        self.existing_rows = []

    def write(self, shots: Sequence[Shot], labels: Sequence[str], scores: np.ndarray, distances: np.ndarray) -> None:
        """Append one batch."""
        stamp = now_iso()
        rows = []
        for s, lab, sc, d in zip(shots, labels, scores, distances, strict=True):
            rows.append([s.index, lab, f"{sc:.6g}", "" if s.train_id is None else s.train_id,
                         "" if s.pulse_id is None else s.pulse_id, s.truth or "", stamp, *(f"{v:.6g}" for v in d)])
            self.done.add(s.key)
        self.write_rows(rows)


class VetoList(_AppendFile):
    """``index,train_id,pulse_id`` of the shots classified as single hits (module doc)."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, fsync_every_s: float = 1.0) -> None:
        super().__init__(path, VETO_COLUMNS, overwrite=overwrite, fsync_every_s=fsync_every_s)
        self.existing_rows = []

    def write(self, shots: Sequence[Shot]) -> None:
        self.write_rows([[s.index, "" if s.train_id is None else s.train_id, "" if s.pulse_id is None else s.pulse_id]
                         for s in shots])


class Publisher:
    """A ZeroMQ PUB socket bound at ``endpoint`` (e.g. ``tcp://*:5560``) that sends one
    :func:`spinet.stream.messages.encode_results` message per batch. Slow subscribers lose messages (PUB
    semantics: the stream never waits for them)."""

    def __init__(self, endpoint: str, class_names: Sequence[str], hwm: int = 1000) -> None:
        import zmq

        self.class_names = list(class_names)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._sock.setsockopt(zmq.SNDHWM, int(hwm))
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._ctx.destroy(linger=0)
            raise OutputFileError(f"--publish {endpoint}: cannot bind ({exc})") from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sent = 0

    def send(self, shots: Sequence[Shot], labels: Sequence[str], scores: np.ndarray, distances: np.ndarray,
             latency_ms: np.ndarray) -> None:
        import zmq

        parts = encode_results(self.class_names, shots, labels, scores, distances, latency_ms)
        try:
            self._sock.send_multipart(parts, flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            pass

    def close(self) -> None:
        self._sock.close()
        self._ctx.term()
