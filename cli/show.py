"""Draw a dataset: shots per hit type in the assembled detector layout, radial profiles, photon histograms.

Each class present in the file gets a row of --per-class shots (log colour scale; grey: masked or no
pixel; the title of a shot gives its index, its number of particles and its total counts). Beside
them: the radial profile of each class (mean, with the 16-84 % band over shots) and the histogram of
total counts per shot.

\b
Example usage:
  spi simulate -o default.h5 && spi show default.h5 -o default.png
  spi show pr772.h5 -o pr772.png --per-class 6
"""

from __future__ import annotations

import sys

import click


@click.command(help=__doc__)
@click.argument("dataset", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Picture to write; the suffix picks the format (.png, .pdf or .svg; 110 dpi for .png). "
                   "Its folder must exist; an existing file is replaced.")
@click.option("--per-class", type=click.IntRange(min=1, max=20), default=4, show_default=True,
              help="Shots shown per hit type.")
def command(dataset: str, out: str, per_class: int) -> None:
    from spisim.errors import one_line_warnings
    from spisim.visualize import show_dataset

    one_line_warnings()
    try:
        path = show_dataset(dataset, out, per_class=per_class)
    except KeyboardInterrupt:
        click.echo("interrupted: no picture written", err=True)
        sys.exit(130)
    click.echo(f"wrote {path}")
