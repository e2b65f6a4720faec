"""Label shots by eye in a local web page, or play the "game of hit" against a simulated dataset's truth.

The page shows one shot at a time in the assembled detector layout (log scale, adjustable contrast,
zoom with the mouse wheel or + and −). Keys 1–4 give the labels no hit / single / multi / unintended;
U (or Backspace) undoes, S (or Space) skips to the next unlabelled shot, ← → step, G goes to a shot.
Every label is appended to the label file (CSV, see docs/label.md) and flushed to disk at once; running
the command again continues where it stopped.

With --game the truth of a simulated dataset stays hidden, shots come in a random order (--seed) and at
the end the page shows accuracy, per-class precision and recall and the confusion matrix; they are
saved beside the label file as LABELS.results.json and LABELS.results.csv (the human baseline for
spi evaluate).

The server listens on 127.0.0.1 unless --host says otherwise; on any other address the printed URL's
token is required.

\b
Example usage:
    spi label run.h5                          # labels go to run.labels.csv
    spi label real.cxi --labels mine.csv --no-browser --port 8765
    spi label sim.h5 --game --game-shots 50   # results in sim.game.results.json / .csv
"""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from spisim.errors import one_line_warnings

from .label_server import LabelHTTPServer, LabelSession, is_loopback


@click.command(name="label", help=__doc__)
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Label file (CSV) to write and continue. [default: DATA.labels.csv, or DATA.game.csv "
                   "with --game, beside DATA]")
@click.option("--game", is_flag=True, help="Play the game of hit: truth hidden, random order, scored at the end.")
@click.option("--game-shots", type=click.IntRange(min=1), default=100, show_default=True,
              help="Shots in a game (at most the dataset's).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the game's random order.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than a loopback address requires the URL's token.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port; 0 picks a free one.")
@click.option("--no-browser", is_flag=True, help="Only print the address; do not open a browser.")
@click.option("--classes", default=None,
              help="Comma-separated classes to choose from, in key order (keys 1, 2, ...), e.g. single,not_single "
              "to label a run single vs rest; each one of no_hit, single, multi, unintended, not_single. "
              "[default: the dataset's classes; the four hit types for a file without labels]")
def command(
    data: Path,
    labels_path: Path | None,
    game: bool,
    game_shots: int,
    seed: int,
    host: str,
    port: int,
    no_browser: bool,
    classes: str | None,
) -> None:
    one_line_warnings()
    chosen = None if classes is None else [c for c in classes.split(",") if c.strip()]
    session = LabelSession(data, labels_path, game=game, game_shots=game_shots, seed=seed, classes=chosen)
    try:
        server = LabelHTTPServer(session, host, port)
    except BaseException:
        session.close()
        raise
    done = len(session.log.labels)
    what = f"game of {len(session.order)} shots (seed {seed})" if game else f"{session.n_shots} shots"
    click.echo(f"spi label: {data} ({what}); labels go to {session.labels_path} ({done} there already)")
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: anyone who can reach it and has the URL can see the shots",
                   err=True)
    click.echo(f"open {server.url}")
    click.echo("press Ctrl+C to stop (every label is already on disk)")
    if not no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo(f"\nstopped: {len(session.log.labels)} shots labelled in {session.labels_path}")
    finally:
        server.server_close()
        session.close()
