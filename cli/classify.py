"""Classify shots few-shot: compare each shot's embedding with a small labelled support set.

The support set defines the classes: --support FILE uses every labelled shot of FILE (or k per class
with -k); --support-from DATASET -k K draws K shots per class from a labelled dataset (seeded). Labels
come from the file itself (simulated data) or from --support-labels (CSV index,label or HDF5). A shot
gets the class whose supports are nearest on average (--rule mean, the paper's rule), whose mean
embedding is nearest (--rule prototype), whose single nearest support is nearest (--rule nearest) or
whose 3 nearest supports are nearest on average (--rule knn); with --unknown-threshold a shot farther than that (squared
embedding distance) from every class is "unknown". With --min-ratio R a shot is "unknown" unless its second-nearest
class is at least R times as far as the nearest: the purity knob for a clean single-hit set (R = 12 with
--rule nearest and 20 supports per class gave 97-100 % pure single hits, keeping 50-70 % of them, on four
held-out simulated studies; docs/evaluation.md).

Shots stream through in batches; the class counts are printed, and the accuracy where DATA has labels
(or --labels gives them). -o writes one CSV row per shot: index, label, distance to each class, truth.

\b
Example usage:
    spi classify runs/sim/best.pt run42.cxi --support-from sim.h5 -k 10 -o predictions.csv
    spi classify best.pt real.cxi --support real_support.cxi --support-labels support.csv --rule prototype
"""

from __future__ import annotations

from pathlib import Path

import click

from spisim.errors import ConfigError


@click.command(name="classify", help=__doc__)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--support",
    "support",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Labelled support file (all its labelled shots, or -k per class).",
)
@click.option(
    "--support-from",
    "support_from",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Labelled dataset to draw -k supports per class from.",
)
@click.option(
    "--support-labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Label file of the support file (CSV index,label or HDF5).",
)
@click.option("-k", "k", type=click.IntRange(min=1), default=None, help="Supports per class.")
@click.option(
    "--labels",
    "labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Label file of DATA, to report the accuracy.",
)
@click.option(
    "--rule",
    type=click.Choice(["mean", "prototype", "nearest", "knn"]),
    default="mean",
    show_default=True,
    help="Mean distance to a class's supports (the paper's), distance to its mean embedding (prototype), to its "
    "nearest support, or mean distance to its 3 nearest supports (knn: best for mixed classes such as unintended).",
)
@click.option(
    "--unknown-threshold",
    type=float,
    default=None,
    help="Squared embedding distance above which a shot is 'unknown'. [default: none]",
)
@click.option(
    "--min-ratio",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Ratio test: 'unknown' unless the second-nearest class is at least this many times as far (squared "
    "distance) as the nearest. Higher: purer classes, fewer shots kept. [default: none]",
)
@click.option(
    "--label",
    "label_mode",
    type=click.Choice(["hit_type", "structure_hit_type"]),
    default=None,
    help="Class names from simulated labels. [default: the model's]",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Predictions CSV.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Shots per batch.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the support draw.")
def command(
    model: Path,
    data: Path,
    support: Path | None,
    support_from: Path | None,
    support_labels: Path | None,
    k: int | None,
    labels: Path | None,
    rule: str,
    unknown_threshold: float | None,
    min_ratio: float | None,
    label_mode: str | None,
    output: Path | None,
    batch_size: int,
    device: str,
    seed: int,
) -> None:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from spinet.checkpoint import ModelBundle
    from spinet.inference import build_support, classify_file
    from spisim.cxi import CXIReader

    if (support is None) == (support_from is None):
        raise click.UsageError("give exactly one of --support FILE or --support-from DATASET (with -k)")
    if support_from is not None and k is None:
        raise click.UsageError("--support-from needs -k (supports per class)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available")
    console = Console(stderr=True)
    bundle = ModelBundle.load(model, device=device)
    mode = label_mode or bundle.config.data.label
    sup = build_support(
        bundle, support or support_from, labels=support_labels, k=k, seed=seed, label_mode=mode, batch_size=batch_size
    )
    console.print(f"support from {sup.source}: " + ", ".join(f"{n} {c}" for n, c in sup.counts().items()))
    with CXIReader(data) as r:
        n = len(r)
    with Progress(
        TextColumn("classifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=n)
        result = classify_file(
            bundle,
            data,
            sup,
            rule=rule,
            threshold=unknown_threshold,
            min_ratio=min_ratio,
            output=output,
            batch_size=batch_size,
            truth_labels=labels,
            label_mode=mode,
            on_batch=lambda b: progress.update(task, advance=b),
        )
    table = Table(title=f"{data.name}: {result.n_shots} shots")
    table.add_column("class")
    table.add_column("shots", justify="right")
    table.add_column("fraction", justify="right")
    for name, count in result.counts.items():
        table.add_row(name, str(count), f"{count / max(result.n_shots, 1):.1%}")
    Console().print(table)
    if result.accuracy is not None:
        click.echo(f"accuracy against the labels: {result.accuracy:.3f}")
    if output is not None:
        click.echo(f"predictions: {output}")
