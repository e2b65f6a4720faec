"""Simulate a dataset of SPI shots (no hit, single, multi, unintended) into a CXI/HDF5 file.

MANIFEST is a YAML recipe (see docs/manifest.md and data_manifests/); without it, the built-in
default runs: all four hit types, no file and no network needed. Finished shards are kept in
OUT.h5.parts/ until the run ends, so an interrupted run continues with --resume; the same manifest
and seed give the same bytes whatever --workers, --backend or interruptions.

\b
Example usage:
  spi simulate -o default.h5                                # built-in default, 100 shots
  spi simulate data_manifests/pr772_pnccd.yaml -o pr772.h5 --shots 1000 --workers 2
  spi simulate m.yaml -o big.h5 --backend dask --workers 8  # a local Dask cluster
  spi simulate m.yaml -o big.h5 --scheduler tcp://head:8786 # a running Dask cluster (docs/scale-out.md)
  spi simulate m.yaml -o big.h5 --resume                    # after Ctrl-C, a kill or a crash
"""

from __future__ import annotations

import contextlib
import sys
from typing import NoReturn

import click

COMPRESSIONS = ("none", "gzip", "lz4", "zstd", "bitshuffle")


@click.command(help=__doc__)
@click.argument("manifest", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Output HDF5 file in the CXI layout (docs/data-format.md); its folder must exist. An existing "
                   "file needs --overwrite.")
@click.option("--shots", type=click.IntRange(min=1),
              help="Number of shots.  [default: the manifest's `shots`; built-in default: 100]")
@click.option("--seed", type=click.IntRange(min=0),
              help="Seed of every random stream.  [default: the manifest's `seed`; built-in default: 0]")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes making shards (local pool, or Dask workers with --backend dask).")
@click.option("--backend", type=click.Choice(["process", "dask"]), default="process", show_default=True,
              help="Local process pool, or Dask distributed (a local cluster unless --scheduler).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Address of a running Dask scheduler, e.g. tcp://host:8786 (implies --backend dask).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
              help="Where shots are computed (cuda needs CuPy and a GPU); auto picks the GPU when one is present.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run with the same manifest and options, keeping its finished shards.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output and discard old shards.")
@click.option("--compression", type=click.Choice(COMPRESSIONS),
              help="Frame compression.  [default: the manifest's `output.compression`; built-in default: gzip]")
@click.option("-q", "--quiet", is_flag=True, help="No progress display (the summary line is still printed).")
def command(manifest: str | None, out: str, shots: int | None, seed: int | None, workers: int, backend: str,
            scheduler: str | None, device: str, resume: bool, overwrite: bool, compression: str | None,
            quiet: bool) -> None:
    from cli.progress import Progress
    from spisim.backend import resolve_device
    from spisim.errors import one_line_warnings
    from spisim.generate import check_output, generate
    from spisim.manifest import load_manifest

    one_line_warnings()
    overrides = {"shots": shots, "seed": seed}
    if compression:
        overrides["output"] = {"compression": compression}
    m = load_manifest(manifest, overrides=overrides)
    check_output(out, resume=resume, overwrite=overwrite)  # fail before the progress display shows
    device = resolve_device(device)
    try:
        with contextlib.ExitStack() as stack:
            bar: list[Progress] = []

            def on_start(to_make: int, already: int) -> None:  # the manifest's detector and particles are built
                description = "resuming" if already else "simulating"
                bar.append(stack.enter_context(Progress(description, to_make, unit="shots", quiet=quiet)))

            result = generate(m, out, workers=workers, backend=backend, scheduler=scheduler, device=device,
                              resume=resume, overwrite=overwrite, progress=lambda n: bar[0].advance(n),
                              on_start=on_start)
    except KeyboardInterrupt:
        _interrupted(out)
    reused = f", {result.shards_reused} shards reused" if result.shards_reused else ""
    click.echo(f"wrote {result.path}: {result.n_shots} shots from {m.source}{reused} in {result.seconds:.1f} s")


def _interrupted(out: str) -> NoReturn:
    """After Ctrl-C: say what was kept for --resume, and exit with status 130."""
    from spisim.generate import finished_shards, parts_dir

    folder = parts_dir(out)
    n = len(finished_shards(folder))
    if folder.is_dir():
        kept = f"{n} finished shard{'s' if n != 1 else ''}" if n else "the particles' reciprocal volumes"
        click.echo(f"interrupted: {out} not written; {kept} kept in {folder}: run the same command with --resume "
                   "to continue", err=True)
    else:
        click.echo("interrupted before any shot was finished: nothing written", err=True)
    sys.exit(130)
