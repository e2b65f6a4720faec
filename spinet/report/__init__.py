"""The report of a study: ``report.md``, ``report.html``, ``metrics.json``, CSV tables and PNG plots.

Files written into the report folder::

    report.md, report.html     tables and figures for people (the HTML is self-contained but for the PNGs)
    metrics.json               everything for machines: study, classes, datasets, every run, the summary
    runs.csv                   one row per (model, source, test, k, seed)
    summary.csv                mean ± spread over seeds per (model, source, test, k)
    per_class.csv              per-class precision and recall, mean ± spread over seeds
    throughput.csv             inference shots/s per model
    datasets.csv               shots per class of every dataset part
    plots/accuracy_vs_k.png    accuracy against k per test set (baselines without supports and human
                               baselines as horizontal lines)
    plots/confusion_<test>.png confusion matrices at the plot k, summed over seeds, rows normalised
    plots/embedding_<test>.png embedding projection of the test shots coloured by class (Siamese models)
    plots/pr_<test>.png        single-hit precision–recall curves
    plots/sweep_<test>.png     accuracy against the sweep value (robustness studies)

The spread is the sample standard deviation over seeds (shown as mean ± sd). Human baselines (the study's
``human`` key; records of kind ``human``, one "seed", k —) appear in the tables, CSV files, metrics.json and
as a horizontal line in the accuracy-against-k plot, but in no other figure.

The package: :mod:`~spinet.report.tables` (summaries, target rows), :mod:`~spinet.report.figures` (PNG plots),
:mod:`~spinet.report.render` (Markdown and HTML); this module writes the files. It reads
:class:`spinet.records.StudyResults` and imports nothing of :mod:`spinet.study`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spisim.atomic import atomic_path, write_text_atomic

from ..metrics import Spread, json_safe
from ..records import StudyResults
from .figures import FIGURES, make_plots, test_classes
from .render import blocks, markdown, to_html
from .tables import (
    ACCURACY_TARGET,
    BINARY_TARGET_K,
    GROUP_KEYS,
    SINGLE_RECALL_TARGET,
    TARGET_K,
    asked_ks,
    at_k,
    binary_targets,
    est_text,
    flat_row,
    per_class_summary,
    per_structure_summary,
    summarize,
    targets,
)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    fields: list[str] = []
    for r in rows:
        for k in r:
            if k not in fields:
                fields.append(k)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields or ["empty"])
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(v) for k, v in r.items()})


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, list | tuple):
        return ";".join(str(x) for x in v)
    return v


def write_report(results: StudyResults, out: str | Path) -> dict[str, Path]:
    """Write every report file of a study into ``out``; returns name → path of what was written."""
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    summary = summarize(results.records)
    per_class = per_class_summary(results.records, results.classes)
    per_structure = per_structure_summary(results.records, results.classes, results.study.plot_k)
    written: dict[str, Path] = {}

    _write_csv(out / "runs.csv", [r.row() for r in results.records])
    _write_csv(out / "summary.csv", [flat_row(r) for r in summary])
    _write_csv(out / "per_class.csv", [flat_row(r) for r in per_class])
    _write_csv(out / "throughput.csv", [t.__dict__ for t in results.throughput])
    _write_csv(out / "datasets.csv", results.datasets)
    for name in ("runs.csv", "summary.csv", "per_class.csv", "throughput.csv", "datasets.csv"):
        written[name] = out / name
    if per_structure:
        _write_csv(out / "per_structure.csv",
                   [{**r, "read_as": "; ".join(f"{c} {n}" for c, n in r["read_as"].items())} for r in per_structure])
        written["per_structure.csv"] = out / "per_structure.csv"

    figures = make_plots(results, summary, plots)
    written.update({f"plots/{p.name}": p for fig in figures.values() for p, _ in fig})

    doc = _metrics_json(results, summary, per_class)
    doc["per_structure"] = per_structure
    write_text_atomic(out / "metrics.json", json.dumps(json_safe(doc), indent=1))
    written["metrics.json"] = out / "metrics.json"

    doc_blocks = blocks(results, summary, per_class, figures, out, per_structure)
    write_text_atomic(out / "report.md", markdown(doc_blocks))
    write_text_atomic(out / "report.html", to_html(doc_blocks, results.study.name))
    written["report.md"] = out / "report.md"
    written["report.html"] = out / "report.html"
    return written


def _metrics_json(results: StudyResults, summary: list[dict], per_class: list[dict]) -> dict[str, Any]:
    s = results.study
    from spisim import __version__

    def spreads(row: dict) -> dict:
        return {k: (v.to_dict() if isinstance(v, Spread) else v) for k, v in row.items()}

    return {
        "study": {"name": s.name, "description": s.description, "source": s.source, "parameters": s.parameters,
                  "seeds": s.seeds, "k_shots": s.k_shots, "plot_k": s.plot_k, "label": s.label,
                  "definition": s.raw},
        "spi_version": __version__, "created": results.created, "device": results.device,
        "seconds": round(results.seconds, 2), "classes": results.classes, "datasets": results.datasets,
        "notes": results.notes,
        "runs": [{**r.row(), "confusion": r.metrics.confusion} for r in results.records],
        "summary": [spreads(r) for r in summary],
        "per_class": [spreads(r) for r in per_class],
        "throughput": [t.__dict__ for t in results.throughput],
        "training": results.train_logs,
    }



__all__ = ["ACCURACY_TARGET", "BINARY_TARGET_K", "FIGURES", "GROUP_KEYS", "SINGLE_RECALL_TARGET", "TARGET_K",
           "asked_ks", "at_k", "binary_targets", "est_text", "make_plots", "per_class_summary", "per_structure_summary",
           "summarize", "targets", "test_classes", "write_report"]
