"""Classify shots few-shot: compare each shot's embedding with a small labelled support set.

The support set defines the classes. --support FILE[,labels=LABELS][,k=K][,seed=S] (repeatable) takes the
labelled shots of FILE (all of them, or K random ones per class drawn with seed S); labels come from the
file itself (simulated data) or from LABELS (CSV index,label or HDF5). Several --support may mix label
spaces, e.g. a simulated 4-class file and a real run labelled single / not_single: the classes are the union.
The older forms still work: --support FILE --support-labels LABELS -k K, and --support-from DATASET -k K
(-k and --seed also serve as defaults for every --support that gives none).

A shot gets the class whose supports are nearest on average (--rule mean, the paper's rule), whose mean
embedding is nearest (--rule prototype), whose single nearest support is nearest (--rule nearest) or whose
3 nearest supports are nearest on average (--rule knn); with --unknown-threshold a shot farther than that
(squared embedding distance) from every class is "unknown". With --min-ratio R a shot is "unknown" unless its
second-nearest class is at least R times as far as the nearest: the purity knob for a clean single-hit set
(R = 12 with --rule nearest and 20 supports per class gave 97-100 % pure single hits, keeping 50-70 % of them,
on four held-out simulated studies; docs/evaluation.md). A frame with no finite pixel where the model looks
is "invalid", never a class.

Scoring, where DATA has labels (or --labels gives them): every labelled shot that is not itself a support
(same file, same index) and not invalid. Answers and scores are in the label space of the truth labels: labels
that are only single / not_single (or --binary) make it single-vs-rest, and any non-single answer counts as
not_single. The accuracy, single-hit precision and recall and the confusion matrix are printed with the
label space and the number of scored shots.

What the supports alone say: each support is classified by the others (leave-one-out, the supports of DATA
itself when there are any); the share right is printed as the estimated accuracy with its n and 95 % Wilson
interval (e.g. 9 of 10, 0.60-0.98: with 5 supports per class an estimate is coarse). --rule auto chooses the
rule, and --select the checkpoint (MODEL a run folder: best.pt and the epochs kept by spi train --keep-every),
by that leave-one-out count; --min-ratio auto sets the ratio test from the supports (the smallest ratio at
which no non-single support would be called single while half the single ones still are). When the supports
chose something, the estimate printed is the nested one (each support answered by what the others chose).
Supports used to choose are never scored. With supports from several files, a label-free check prints how
often each file's supports alone read DATA's frames the same (single vs rest). --adapt FILE re-estimates the
network's batch-norm statistics on FILE's frames (AdaBN; labels unused), e.g. the run itself.

-o writes one CSV row per shot (index, label, support 1/0, distance to each class, truth) and a JSON summary
beside it (predictions.csv -> predictions.summary.json), both complete or not at all; existing files need
--overwrite.

\b
Example usage:
    spi classify runs/sim/best.pt run42.cxi --support-from sim.h5 -k 10 -o predictions.csv
    spi classify best.pt real.cxi --support real.cxi,labels=real.labels.csv,k=5 --labels real.labels.csv
    spi classify best.pt real.cxi --support sim.h5,k=20 --support real.cxi,labels=real.labels.csv,k=5 \\
        --labels real.labels.csv --rule nearest -o predictions.csv
    spi classify runs/sim real.cxi --select --rule auto --min-ratio auto --adapt real.cxi \\
        --support real.cxi,labels=real.labels.csv,k=5 --labels real.labels.csv -o predictions.csv
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from spinet.classify import ClassifyOutcome


class RatioType(click.ParamType):
    """A ratio-test threshold: a number >= 1, or ``auto`` (set from the supports)."""

    name = "R|auto"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        if value is None or value == "auto" or isinstance(value, float):
            return value
        try:
            r = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number >= 1 nor auto", param, ctx)
        if not r >= 1.0:
            self.fail(f"{value!r} is below 1", param, ctx)
        return r


@click.command(name="classify", help=__doc__)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--support",
    "supports",
    multiple=True,
    metavar="FILE[,labels=L][,k=K][,seed=S]",
    help="Labelled support file (repeatable), each with its own label file (default: labels inside FILE), "
    "supports per class (default: -k, else every labelled shot) and seed of their draw (default: --seed).",
)
@click.option(
    "--support-from",
    "support_from",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Labelled dataset to draw -k supports per class from (the same as --support DATASET,k=K).",
)
@click.option(
    "--support-labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Label file of the one --support file (CSV index,label or HDF5); with several, use FILE,labels=L.",
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=None,
    help="Supports per class, for every support file that sets no k; more than a class holds is an error. "
    "[default: every labelled shot]",
)
@click.option(
    "--labels",
    "labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Truth label file of DATA, to score the answers. [default: DATA's own labels, if any]",
)
@click.option(
    "--binary/--no-binary",
    "binary",
    default=None,
    help="Answer and score single / not_single (every non-single class counts as not_single), or not. "
    "[default: binary when the truth labels, or without any the supports, are only single / not_single]",
)
@click.option(
    "--rule",
    type=click.Choice(["mean", "prototype", "nearest", "knn", "auto"]),
    default="mean",
    show_default=True,
    help="Mean distance to a class's supports (the paper's), distance to its mean embedding (prototype), to its "
    "nearest support, or mean distance to its 3 nearest supports (knn: best for mixed classes such as unintended); "
    "auto: the one with the most supports right under leave-one-out.",
)
@click.option(
    "--unknown-threshold",
    type=float,
    default=None,
    help="Squared embedding distance above which a shot is 'unknown'. [default: none]",
)
@click.option(
    "--min-ratio",
    type=RatioType(),
    default=None,
    help="Ratio test: 'unknown' unless the second-nearest class is at least this many times as far (squared "
    "distance) as the nearest. Higher: purer classes, fewer shots kept. auto: set from the supports' "
    "leave-one-out single-hit scores. [default: none]",
)
@click.option(
    "--select",
    is_flag=True,
    help="MODEL a run folder: choose among best.pt and the kept epochs (epochs/) by leave-one-out over the supports.",
)
@click.option(
    "--adapt",
    "adapt",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="AdaBN: re-estimate the batch-norm statistics on this file's frames (labels unused), e.g. DATA itself. "
    "[default: off]",
)
@click.option(
    "--adapt-shots",
    type=click.IntRange(min=2),
    default=2000,
    show_default=True,
    help="Frames of --adapt used at most (spread evenly over the file).",
)
@click.option(
    "--label",
    "label_mode",
    type=click.Choice(["hit_type", "structure_hit_type"]),
    default=None,
    help="Class names from simulated labels. [default: the model's]",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Predictions CSV; its JSON summary goes beside it (NAME.summary.json). [default: none written]",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing predictions CSV and summary.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Shots per batch.")
@click.option("--device", default="cpu", show_default=True,
              help="cpu, cuda, cuda:N or auto (the GPU when torch sees one).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the support draw (default of k draws).")
def command(
    model: Path,
    data: Path,
    supports: tuple[str, ...],
    support_from: Path | None,
    support_labels: Path | None,
    k: int | None,
    labels: Path | None,
    binary: bool | None,
    rule: str,
    unknown_threshold: float | None,
    min_ratio: float | str | None,
    select: bool,
    adapt: Path | None,
    adapt_shots: int,
    label_mode: str | None,
    output: Path | None,
    overwrite: bool,
    batch_size: int,
    device: str,
    seed: int,
) -> None:
    from contextlib import ExitStack

    from cli.progress import Progress
    from spinet.classify import run_classify
    from spinet.inference import SupportSpec

    if not supports and support_from is None:
        raise click.UsageError("give --support FILE (repeatable) or --support-from DATASET with -k")
    if support_from is not None and k is None:
        raise click.UsageError("--support-from needs -k (supports per class)")
    if support_labels is not None and len(supports) != 1:
        raise click.UsageError("--support-labels goes with exactly one --support; with several, use FILE,labels=L")
    if select and not model.is_dir():
        raise click.UsageError("--select chooses among the checkpoints of a run folder: give MODEL as a folder")
    specs = [SupportSpec.parse(s, support_labels, k, seed) for s in supports]
    if support_from is not None:
        specs.append(SupportSpec(support_from, None, k, seed))
    with ExitStack() as stack:
        bar: list[Progress] = []  # the bar starts with the classifying, after the supports

        def on_start(total: int) -> None:
            bar.append(stack.enter_context(Progress("classifying", total, unit="shots")))

        done = run_classify(model, data, specs, labels=labels, binary=binary, rule=rule,
                            unknown_threshold=unknown_threshold, min_ratio=min_ratio, select=select, adapt=adapt,
                            adapt_shots=adapt_shots, label_mode=label_mode, output=output, overwrite=overwrite,
                            batch_size=batch_size, device=device, say=lambda text: click.echo(text, err=True),
                            progress=lambda n: bar[0].advance(n), on_start=on_start)
    _report(data, done, output)


def _report(data: Path, done: ClassifyOutcome, output: Path | None) -> None:
    """The answers per class, the estimate from the supports and, with truth labels, the scores (stdout)."""
    from rich.console import Console
    from rich.table import Table

    result, estimate, is_bin = done.result, done.estimate, done.binary
    assert result.space is not None
    out = Console()
    table = Table(title=f"{data.name}: {result.n_shots} shots ({result.space.name})")
    table.add_column("answer")
    table.add_column("shots", justify="right")
    table.add_column("fraction", justify="right")
    for name, count in result.counts.items():
        table.add_row(name, str(count), f"{count / max(result.n_shots, 1):.1%}")
    out.print(table)
    if result.n_support:
        click.echo(f"{result.n_support} shots of {data.name} are support shots: marked in the CSV, never scored")
    if result.n_invalid:
        click.echo(f"{result.n_invalid} shots have no finite pixel where the model looks: 'invalid', never scored")
    if estimate.n:
        click.echo(f"estimated from the supports ({estimate.what}, {'single / not_single' if is_bin else 'all classes'}"
                   f"): accuracy {estimate.text()}")
    else:
        click.echo("no estimate from the supports: leave-one-out needs at least 2 supports of a class")
    s = result.summary
    if s is not None:
        click.echo(f"scored against the labels: {s.headline()}")
        if s.n:
            header, rows = s.confusion_rows()
            cm = Table(title=f"confusion matrix, n = {s.n}")
            for i, h in enumerate(header):
                cm.add_column(h, justify="left" if i == 0 else "right")
            for row in rows:
                cm.add_row(*row)
            out.print(cm)
    if output is not None:
        click.echo(f"predictions: {output}; summary: {result.summary_path}")
