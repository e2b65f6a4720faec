"""The ``spi`` command: one subcommand per job, each in its own module under ``cli/``.

Subcommand modules are imported only when run (``spi --help`` stays fast); each defines a
``click.Command`` named ``command``. Errors a user can cause (:class:`spisim.errors.SpiError`,
missing files, permission problems) are printed as one line and exit with status 1; a bad option or
argument of a subcommand is one line too (status 2, as click gives it).

Ctrl-C (SIGINT) in any command prints ``stopping`` at once and raises KeyboardInterrupt, so that the command
unwinds through its cleanup (closing files and worker pools) and ends with status 130 and a line that says
what was kept. A second Ctrl-C while it stops only says so; a third quits at once. CPython runs a Python
signal handler at the next bytecode, which may be inside a weakref callback or a ``__del__`` method run by the
garbage collector (numba, matplotlib and multiprocessing keep WeakValueDictionary registries); an exception
raised there cannot propagate: Python prints ``Exception ignored in: <function WeakValueDictionary.__init__.
<locals>.remove ...> ... KeyboardInterrupt`` and the Ctrl-C is lost (CPython issues 86190, 95959). The
handler here therefore never raises inside such a callback: it delivers the interrupt again a moment later,
in ordinary code.
"""

from __future__ import annotations

import _thread
import importlib
import os
import signal
import sys
import threading
import weakref
from types import FrameType
from typing import Any

import click

from spisim import __version__
from spisim.errors import SpiError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("cli.simulate", "Simulate a dataset of SPI shots (four hit types) into a CXI/HDF5 file."),
    "import": ("cli.import_", "Import a real run (any HDF5 layout or .npy; ADU -> photons, masks, geometry) as CXI."),
    "show": ("cli.show", "Draw a dataset: shots per hit type, radial profiles, photon histograms."),
    "train": ("cli.train", "Train a Siamese embedding network with a triplet loss."),
    "classify": ("cli.classify", "Classify shots few-shot against a labelled support set."),
    "evaluate": ("cli.evaluate", "Run an evaluation study: models, baselines, reports."),
    "match": ("cli.match", "Write a manifest whose simulation looks like a real run, and a realism report."),
    "label": ("cli.label", "Label shots by eye in a local web page (and play the hit game)."),
    "bench": ("cli.bench", "Measure classifier inference speed (shots/s, latency per batch)."),
    "stream": ("cli.stream", "Classify a live detector stream (Karabo bridge, ZeroMQ, file replay) in real time."),
    "serve": ("cli.serve", "Serve simulated shots with true labels through a Karabo bridge (a simulated beamline)."),
}


STOPPED: dict[str, str] = {
    "train": "stopped: the run folder keeps the last finished epoch (last.pt); add --resume to the same command "
             "to continue from it",
    "evaluate": "stopped: finished datasets and models are kept in the report's cache/; run the same command "
                "again to continue",
}
"""The last line after Ctrl-C, per command, for commands that do not print their own (default: ``stopped``)."""

_UNRAISABLE_FILES = frozenset(os.path.normcase(os.path.abspath(m.__file__ or ""))
                              for m in (weakref, sys.modules["_weakrefset"]))


def in_unraisable_context(frame: FrameType | None) -> bool:
    """True when an exception raised in ``frame`` cannot propagate to the command: the frame or a caller is a
    weakref callback (weakref.py, _weakrefset.py: WeakValueDictionary, WeakSet, finalize) or a ``__del__``."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or os.path.normcase(os.path.abspath(code.co_filename)) in _UNRAISABLE_FILES:
            return True
        frame = frame.f_back
    return False


def _say_now(text: str) -> None:
    """Write a line to stderr at once, also from a signal handler (no reentrant use of a buffered stream)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream (tests): an ordinary write
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        return
    prefix = "\n" if os.isatty(fd) else ""  # below a progress bar's line
    os.write(fd, f"{prefix}{text}\n".encode(errors="replace"))


class Interrupts:
    """The SIGINT handler of a command (a context manager; the main thread only, elsewhere it does nothing).

    1st Ctrl-C: ``stopping`` at once, then KeyboardInterrupt (never inside a weakref callback or ``__del__``:
    there it is delivered again ``retry_s`` later); 2nd: a line saying it is still stopping; 3rd: exit at once
    with status 130 (``os._exit``: temporary files may be left). The previous handler is put back when the
    command ends, unless a Ctrl-C came (then a Ctrl-C during interpreter shutdown is handled here too).
    """

    def __init__(self, retry_s: float = 0.02) -> None:
        self.count = 0
        self.retry_s = retry_s
        self.active = False
        self._previous: Any = None

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self.handle)
            self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active and self.count == 0:
            signal.signal(signal.SIGINT, self._previous)
            self.active = False

    def _retry(self) -> None:
        if self.active and signal.getsignal(signal.SIGINT) == self.handle:
            _thread.interrupt_main(signal.SIGINT)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if in_unraisable_context(frame):
            threading.Timer(self.retry_s, self._retry).start()  # raise it out of the callback, not lose it
            return
        self.count += 1
        if self.count == 1:
            _say_now("stopping (Ctrl-C): finishing cleanly, keeping what is done")
            raise KeyboardInterrupt
        if self.count == 2:
            _say_now("still stopping; press Ctrl-C again to quit at once (temporary files may be left)")
            return
        _say_now("stopped at once")
        os._exit(130)


class OneLineUsageError(click.ClickException):
    """A usage error shown as ``Error: MESSAGE (see 'spi CMD --help')`` on one line, exit status 2."""

    exit_code = 2


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, and which turns user errors into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module = importlib.import_module(SUBCOMMANDS[name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary) for name, (_, summary) in SUBCOMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        with Interrupts():
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option or argument: one line too, exit status 2 as click's
            where = exc.ctx.command_path if exc.ctx is not None else "spi"
            raise OneLineUsageError(f"{exc.format_message()} (see '{where} --help')") from None
        except SpiError as exc:
            raise click.ClickException(str(exc)) from None
        except FileNotFoundError as exc:
            raise click.ClickException(f"no such file: {exc.filename or exc}") from None
        except PermissionError as exc:
            raise click.ClickException(f"permission denied: {exc.filename or exc}") from None
        except KeyboardInterrupt:
            click.echo(STOPPED.get(ctx.invoked_subcommand or "", "stopped"), err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="spi")
def spi() -> None:
    """X-ray single-particle-imaging toolkit: simulate shots, train and run hit classifiers.

    Run 'spi COMMAND --help' for the options of each command (units and defaults included).
    """
