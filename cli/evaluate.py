"""Run an evaluation study: Siamese few-shot models against supervised and classical baselines.

STUDY is a YAML file naming the datasets (simulated from manifests, or CXI/HDF5 files with label
files), the training sources, the test sets, the models, the k-shot values and the seeds (see
docs/evaluation.md; ready-made studies are in studies/). Simulated datasets and trained models are
cached in REPORT_DIR/cache and reused when the command runs again.

REPORT_DIR receives report.md, report.html, metrics.json, CSV tables and PNG plots.

\b
Example usage:
    spi evaluate studies/sim_to_sim_heldout.yaml -o reports/heldout
    spi evaluate studies/real_data.yaml -o reports/pr772 \\
        --param real_data=pr772.cxi --param real_labels=pr772.labels.csv
    spi evaluate studies/robustness.yaml -o reports/robustness --device cuda --dry-run
    bash studies/sim_to_real/make_standin.sh && spi evaluate studies/sim_to_real.yaml -o reports/s2r --param seeds=1
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from spinet.records import StudyResults

    from .progress import Progress


@click.command(name="evaluate", help=__doc__)
@click.argument("study", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Report folder (created; its cache/ is reused by later runs).")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a parameter of the study (repeatable), e.g. --param real_data=run.cxi.")
@click.option("--device", type=str, default=None,
              help="auto, cpu, cuda or cuda:N for training, inference and simulation. [default: the study's "
                   "evaluation.device, else auto]")
@click.option("--fresh", is_flag=True, help="Retrain every model even when the cache holds it.")
@click.option("--dry-run", is_flag=True, help="Validate the study and print the plan; run nothing.")
@click.option("--quiet", is_flag=True, help="No progress display (messages and the summary still print).")
def command(study: Path, out: Path, params: tuple[str, ...], device: str | None, fresh: bool, dry_run: bool,
            quiet: bool) -> None:
    from spinet.report import write_report
    from spinet.study import StudyRunner, load_study, parse_param

    from .progress import Progress

    values = dict(parse_param(p) for p in params)
    spec = load_study(study, values)
    if dry_run:
        runner = StudyRunner(spec, out, device=device)
        for line in runner.describe():
            click.echo(line)
        click.echo(f"{runner.n_steps()} steps; report would go to {out}")
        return
    out.mkdir(parents=True, exist_ok=True)
    with Progress("starting", None, unit="steps", quiet=quiet, heartbeat=True) as bar:
        runner = StudyRunner(spec, out, device=device, progress=study_step(bar), say=bar.say, fresh=fresh)
        bar.update(total=runner.n_steps())
        results = runner.run()
        bar.update(description="writing the report")
        written = write_report(results, out)
    click.echo(f"spi evaluate: {len(results.records)} scores of {len(spec.models)} models in {results.seconds:.0f} s; "
               f"report in {written['report.md'].parent}")
    for line in headlines(results):
        click.echo(line)


def study_step(bar: Progress) -> Callable[[str, int], None]:
    """The runner's progress callback ``(what, steps done)`` on ``bar``: the description follows what is being done
    (shown in the next line, not a line of its own), the count the steps done."""

    def step(what: str, n: int) -> None:
        bar.update(description=what[:70], announce=False)
        if n:
            bar.advance(n)

    return step


def headlines(results: StudyResults) -> list[str]:
    """One line per unperturbed test: its best model (mean accuracy over seeds), in the test's label space, with
    the number of scored shots and the single-hit precision and recall."""
    from spinet.records import HUMAN_KIND
    from spinet.report import est_text, summarize

    plain = [v.name for v in results.study.plain_variants()]
    rows = [r for r in summarize(results.records) if r["test"] in plain and r["kind"] != HUMAN_KIND]
    out = []
    for test in plain:
        here = [r for r in rows if r["test"] == test and r["accuracy"].n]
        if not here:
            continue
        best = max(here, key=lambda r: r["accuracy"].mean)
        space = "single / not_single" if best["label_space"] == "binary" else best["label_space"]
        k = f", k={best['k']}" if best["k"] is not None else ""
        est = est_text(best)
        out.append(f"test {test} ({space}, n = {best['n_test']} shots): best {best['model']} trained on "
                   f"{best['source']}{k}: accuracy {best['accuracy'].format()}, single precision "
                   f"{best['single_precision'].format()}, single recall {best['single_recall'].format()}"
                   + ("" if est == "—" else f"; estimated from its supports alone (leave-one-out): {est}"))
    return out
