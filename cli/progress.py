"""One progress display for every long ``spi`` command.

On a terminal: a rich progress bar (description, bar, done/total, rate, time left). Not on a terminal (a
batch job, a pipe, a log file): a plain line on stderr when work starts, at least every
:data:`PLAIN_EVERY_S` seconds while it runs, and when it ends, e.g.::

    importing: 1200/10000 frames (12.0 %), 41.3 frames/s, 3:33 left

``log_file`` (optional) receives the same plain lines with a time stamp, whatever stderr is. Library code
takes a plain callback ``progress(n_done_since_last_call)``; commands pass :meth:`Progress.advance`. Work whose
steps can each take longer than :data:`PLAIN_EVERY_S` (training a model) asks for ``heartbeat=True``: a
background thread then writes the plain line on time even while no step finishes.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

PLAIN_EVERY_S = 30.0
"""Longest silence (s) of a long command when stderr is not a terminal."""


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress of one job of ``total`` units (None: unknown), shown as the module doc says.

    Use as a context manager; call :meth:`advance` with the units just finished, :meth:`update` to change
    the description or the total, :meth:`say` for a message that must not be torn by the bar.

    Args:
        description: what is being done ("simulating", "importing").
        total: units of work, or None.
        unit: name of a unit in messages ("shots", "frames").
        quiet: show nothing on stderr (the log file still gets its lines).
        log_file: a file that gets every plain line with a time stamp, appended.
        stream: where to write (default stderr); a terminal gets the bar.
        every_s: longest silence in plain mode (s).
        heartbeat: write the plain line every ``every_s`` even while nothing advances (a background thread).
    """

    def __init__(self, description: str, total: int | None = None, *, unit: str = "shots", quiet: bool = False,
                 log_file: str | Path | None = None, stream: IO[str] | None = None,
                 every_s: float = PLAIN_EVERY_S, heartbeat: bool = False) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = float(every_s)
        self.done = 0
        self._log: IO[str] | None = open(log_file, "a", encoding="utf-8") if log_file else None  # noqa: SIM115
        self._bar: Any = None
        self._task: Any = None
        self._t0 = time.monotonic()
        self._last_line = -1e9
        self._lock = threading.RLock()
        self._heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- context ----
    def __enter__(self) -> Progress:
        self._t0 = time.monotonic()
        if not self.quiet and self._isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
            self._bar = RichProgress(*columns, console=Console(file=self.stream), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, rate="")
        self._plain(force=True)
        if self._heartbeat and self._bar is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        """Check often enough that no silence exceeds ``every_s`` by more than a second."""
        while not self._stop.wait(min(1.0, self.every_s / 4)):
            self._plain()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None
        ending = "done" if exc_type is None else ("stopped" if exc_type is KeyboardInterrupt else "failed")
        self._plain(force=True, ending=ending)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _isatty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    # ---- updates ----
    def advance(self, n: int = 1) -> None:
        """``n`` more units are finished."""
        self.done += int(n)
        if self._bar is not None:
            self._bar.update(self._task, advance=int(n), rate=self._rate_text())
        self._plain()

    def update(self, *, description: str | None = None, total: int | None = None, done: int | None = None,
               announce: bool = True) -> None:
        """Change what is shown: a new description, total or count of finished units. A new description is written
        as a plain line at once unless ``announce`` is False (then it shows in the next one)."""
        if description is not None:
            self.description = description
        if total is not None:
            self.total = total
        if done is not None:
            self.done = int(done)
        if self._bar is not None:
            kw: dict[str, Any] = {"description": self.description}
            if total is not None:
                kw["total"] = total
            if done is not None:
                kw["completed"] = done
            self._bar.update(self._task, **kw)
        self._plain(force=description is not None and announce)

    def say(self, message: str) -> None:
        """Print a message above the bar (or as a plain line), and into the log file."""
        with self._lock:
            self._say(message)

    def _say(self, message: str) -> None:
        if not self.quiet:
            if self._bar is not None:
                self._bar.console.print(message, markup=False, highlight=False)
            else:
                print(message, file=self.stream, flush=True)
        self._write_log(message)

    # ---- plain lines ----
    def _rate(self) -> float | None:
        elapsed = time.monotonic() - self._t0
        return self.done / elapsed if elapsed > 0 and self.done else None

    def _rate_text(self) -> str:
        rate = self._rate()
        return "" if rate is None else f"{rate:.3g} {self.unit}/s"

    def line(self, ending: str | None = None) -> str:
        """The plain status line."""
        parts = [f"{self.description}: {self.done}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit} ({100.0 * self.done / self.total:.1f} %)"
        else:
            parts[0] += f" {self.unit}"
        rate = self._rate()
        if rate is not None:
            parts.append(f"{rate:.3g} {self.unit}/s")
        if ending is None and rate and self.total:
            parts.append(f"{_duration((self.total - self.done) / rate)} left")
        if ending is not None:
            parts.append(f"{ending} after {_duration(time.monotonic() - self._t0)}")
        return ", ".join(parts)

    def _plain(self, force: bool = False, ending: str | None = None) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_line < self.every_s:
                return
            self._last_line = now
            text = self.line(ending)
            if not self.quiet and self._bar is None:
                print(text, file=self.stream, flush=True)
            self._write_log(text)

    def _write_log(self, text: str) -> None:
        if self._log is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            self._log.write(f"{stamp} {text}\n")
            self._log.flush()
