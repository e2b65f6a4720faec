"""Draw a dataset: shots per hit type in the assembled detector layout, radial profiles, photon histograms.

Each class present in the file gets a row of --per-class shots (log colour scale; grey: masked or no
pixel; the title of a shot gives its index, its number of particles and its total counts). Beside
them: the radial profile of each class (mean, with the 16-84 % band over shots) and the histogram of
total counts per shot.

The file is read once, a block of frames at a time (memory stays bounded whatever its size), with a
progress display. Non-finite pixels (NaN, inf) are masked and counted in a warning line; shots without
any finite pixel are named in a warning and left out.

\b
Example usage:
  spi simulate -o default.h5 && spi show default.h5 -o default.png
  spi show pr772.h5 -o pr772.png --per-class 6
"""

from __future__ import annotations

import contextlib
import sys

import click


@click.command(help=__doc__)
@click.argument("dataset", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Picture to write; the suffix picks the format (.png, .pdf or .svg; 110 dpi for .png). "
                   "Its folder must exist; an existing file needs --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace an existing picture.")
@click.option("--per-class", type=click.IntRange(min=1, max=20), default=4, show_default=True,
              help="Shots shown per hit type.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display (warnings and the summary line are still "
                                                  "printed).")
def command(dataset: str, out: str, per_class: int, overwrite: bool, quiet: bool) -> None:
    from pathlib import Path

    from cli.progress import Progress
    from spisim.errors import OutputFileError, one_line_warnings

    if Path(out).exists() and not Path(out).is_dir() and not overwrite:
        raise OutputFileError(f"{out} exists: use --overwrite to replace it")
    from spisim.visualize import show_dataset

    one_line_warnings()
    with contextlib.ExitStack() as stack:
        bar: list[Progress] = []

        def on_start(n: int) -> None:  # the display starts once the file is open and checked
            bar.append(stack.enter_context(Progress("reading", total=n, unit="shots", quiet=quiet)))

        def say(message: str) -> None:
            if bar and not quiet:
                bar[0].say(f"warning: {message}")  # above the bar on a terminal
            else:
                click.echo(f"warning: {message}", err=True)

        try:
            path = show_dataset(dataset, out, per_class=per_class, on_start=on_start,
                                progress=lambda k: bar[0].advance(k) if bar else None, say=say)
        except KeyboardInterrupt:
            stack.close()
            click.echo("stopped: no picture written", err=True)
            sys.exit(130)
    click.echo(f"wrote {path}")
