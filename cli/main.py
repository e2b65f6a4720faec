"""The ``spi`` command: one subcommand per job, each in its own module under ``cli/``.

Subcommand modules are imported only when run (``spi --help`` stays fast); each defines a
``click.Command`` named ``command``. Errors a user can cause (:class:`spisim.errors.SpiError`,
missing files, permission problems) are printed as one line and exit with status 1.
"""

from __future__ import annotations

import importlib
import sys

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
        try:
            return super().invoke(ctx)
        except SpiError as exc:
            raise click.ClickException(str(exc)) from None
        except FileNotFoundError as exc:
            raise click.ClickException(f"no such file: {exc.filename or exc}") from None
        except PermissionError as exc:
            raise click.ClickException(f"permission denied: {exc.filename or exc}") from None
        except KeyboardInterrupt:
            click.echo("interrupted: finished work is kept; run again with --resume to continue", err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="spi")
def spi() -> None:
    """X-ray single-particle-imaging toolkit: simulate shots, train and run hit classifiers.

    Run ``spi COMMAND --help`` for the options of each command (units and defaults included).
    """
