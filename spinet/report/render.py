"""The report's documents: the same blocks (headings, paragraphs, lists, tables, figures) rendered as Markdown and
as self-contained HTML.

A block is a tuple: ``("h1" | "h2" | "p", text)``, ``("list", [items])``, ``("table", header, rows)`` or
``("img", relative path, caption)``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from ..metrics import SINGLE_PRECISION_TARGET
from ..records import HUMAN_KIND, StudyResults
from .figures import FIGURES
from .tables import (
    ACCURACY_TARGET,
    BINARY_TARGET_K,
    SIMULATED_SUPPORT_ACCURACY_TARGET,
    SINGLE_RECALL_TARGET,
    TARGET_K,
    at_k,
    binary_targets,
    est_text,
    plain_tests,
    targets,
)


def _pct(x: float) -> str:
    """0.95 -> ``95 %``."""
    return f"{100 * x:g} %"


def _space_label(name: str) -> str:
    return "single / not_single" if name == "binary" else name


def _fmt_k(k: int | None) -> str:
    return "—" if k is None else str(k)


def blocks(results: StudyResults, summary: list[dict], per_class: list[dict], figures: dict,
           out: Path, per_structure: Sequence[dict] = ()) -> list[tuple]:
    """Every block of the report, in order."""
    return [*_head(results), *_results(results, summary), *_targets(results, summary),
            *_per_class(results, per_class, per_structure), *_speed(results), *_figures(figures, out), *_files()]


def _head(results: StudyResults) -> list[tuple]:
    from spisim import __version__

    s = results.study
    b: list[tuple] = [("h1", f"Evaluation study: {s.name}")]
    if s.description:
        b.append(("p", s.description))
    params = ", ".join(f"{k} = {v}" for k, v in s.parameters.items()) or "none"
    b.append(("list", [f"study file: {s.source}", f"created {results.created} by spi {__version__} on "
                       f"{results.device}, in {results.seconds:.0f} s",
                       f"classes: {', '.join(results.classes)}", f"seeds: {', '.join(map(str, s.seeds))}; "
                       f"k (supports per class): {', '.join(map(str, s.k_shots))}; plots at k = {s.plot_k} (where a "
                       "pool holds fewer shots of a class, the k really drawn: see the notes under Results)",
                       f"parameters: {params}",
                       "numbers are mean ± sample standard deviation over seeds"]))
    b.append(("h2", "Datasets"))
    b.append(("table", ["dataset", "part", "shots", *results.classes, "source"],
              [[d["dataset"], d["part"], str(d["shots"]), *[str(d.get(c, 0)) for c in results.classes],
                ("simulated: " if d["simulated"] else "") + Path(d["file"]).name] for d in results.datasets]))
    return b


def _results(results: StudyResults, summary: list[dict]) -> list[tuple]:
    b: list[tuple] = [("h2", "Results")]
    human = ""
    if any(r["kind"] == HUMAN_KIND for r in summary):
        human = (" Rows with training — are human baselines: a person's labels from spi label --game, scored against "
                 "the truth of the shots played (one person, so seeds = 1).")
    b.append(("p", "Accuracy, macro F1 and single-hit precision and recall of every model (k: supports per class for "
                   "the Siamese models, or shots per class of the training source, as really drawn; — where k does "
                   "not apply). Labels: the label space of the test's labels (the study's classes, or single / "
                   "not_single for a test labelled single vs rest, where every other answer counts as not_single); "
                   "shots: the shots scored per seed." + human))
    for note in results.notes:
        b.append(("p", f"Note: {note}."))
    # "answered" (shots given a class) only where some model may answer "unknown" (min_ratio)
    unknowns = any(m.min_ratio is not None for m in results.study.models)
    if unknowns:
        b.append(("p", "Answered: the share of shots given a class; a model with a ratio test (min_ratio) "
                       "answers \"unknown\" where it is unsure, which counts as wrong in the accuracy and is never a "
                       "single-hit prediction, so its single precision is that of the shots it keeps."))
    estimates = any(r.get("est_accuracy") is not None for r in summary)
    if estimates:
        b.append(("p", "Estimated: what the supports alone say, before any test shot is looked at — each support "
                       "classified by the other supports (leave-one-out), with the 95 % Wilson interval for one "
                       "seed and the number of supports scored (n); the models that choose a checkpoint, rule, "
                       "ratio test or photon cut with their supports make that choice on the same count (chosen). "
                       "This is the figure a user with only the supports would have; the accuracy column is the "
                       "test's."))
    b.append(("table", ["model", "training", "test", "k", "accuracy", *(["estimated from the supports"]
                                                                         if estimates else []),
                        "macro F1", "single precision", "single recall", *(["answered"] if unknowns else []),
                        *(["chosen"] if estimates else []), "seeds", "labels", "shots"],
              [[r["model"], r["source"], r["test"], _fmt_k(r["k"]), r["accuracy"].format(percent=True),
                *([est_text(r)] if estimates else []),
                r["macro_f1"].format(), r["single_precision"].format(percent=True),
                r["single_recall"].format(percent=True),
                *([r["answered"].format(percent=True)] if unknowns else []),
                *([r.get("chosen") or "—"] if estimates else []), str(r["seeds"]),
                _space_label(r["label_space"]), str(r["n_test"])] for r in summary]))
    return b


def _targets(results: StudyResults, summary: list[dict]) -> list[tuple]:
    b: list[tuple] = []
    acc, prec, rec = _pct(ACCURACY_TARGET), _pct(SINGLE_PRECISION_TARGET), _pct(SINGLE_RECALL_TARGET)
    rows = targets(results, summary)
    if rows:
        b.append(("h2", "Targets"))
        b.append(("p", f"Few-shot models against the project's targets: four-class accuracy ≥ {acc} with "
                       f"{TARGET_K}-shot supports, single-hit precision ≥ {prec}, and accuracy above the supervised "
                       f"CNN (same training data and test) at every k ≤ {TARGET_K}. Single recall at {prec} "
                       "precision: the share of true single hits that a threshold on the single-hit score keeps while "
                       f"{prec} of what it keeps are single hits (read off the precision–recall curve of the scored "
                       f"shots, so the best such threshold; 0 when none reaches {prec})."))
        b.append(("table", ["model", "training", "test", "k", "accuracy", f"≥ {acc}", "single precision", f"≥ {prec}",
                            f"single recall at {prec} precision", f"above CNN at k ≤ {TARGET_K}"], rows))
    rows = binary_targets(results, summary)
    if rows:
        b.append(("h2", "Targets on single / not_single tests"))
        b.append(("p", "The Siamese models on tests labelled single / not_single against the sim-to-real targets: "
                       f"accuracy ≥ {acc} with at most {BINARY_TARGET_K} labelled shots per class (here at the "
                       f"largest k ≤ {BINARY_TARGET_K}; a test whose supports are simulated reads the target of no "
                       f"real label, ≥ {_pct(SIMULATED_SUPPORT_ACCURACY_TARGET)}); single-hit precision ≥ {prec} at "
                       f"≥ {rec} single recall (the ratio test's own precision and recall where the model has one, "
                       f"else the recall a threshold chosen in hindsight keeps at {prec} precision); and accuracy "
                       "above every photon-count rule and CNN of the same test at every k."))
        b.append(("table", ["model", "training", "test", "k", "accuracy", f"≥ {acc}", "single purity",
                            f"≥ {prec} at ≥ {rec}", "above photons and CNN at every k"], rows))
    return b


def _per_class(results: StudyResults, per_class: list[dict], per_structure: Sequence[dict]) -> list[tuple]:
    s = results.study
    b: list[tuple] = [("h2", f"Per-class precision and recall (k = {s.plot_k} or —)")]
    plain = set(plain_tests(results))
    if any(t.sweep_key for t in s.tests.values()):
        b.append(("p", "A swept test at its unperturbed point (fluence × 1, nothing missing); the sweep itself is "
                       "in the results table, per_class.csv and the sweep figures."))
    pc = [r for r in per_class if at_k(r, s.plot_k) and r["test"] in plain]
    b.append(("table", ["model", "training", "test", "class", "shots", "precision", "recall"],
              [[r["model"], r["source"], r["test"], r["class"], str(r["support"]),
                r["precision"].format(percent=True), r["recall"].format(percent=True)] for r in pc]))
    per_structure = [r for r in per_structure if r["test"] in plain]
    if per_structure:
        b.append(("h2", f"Per particle (k = {s.plot_k} or —)"))
        b.append(("p", "How the shots of each particle were read, summed over seeds: which held-out structure, "
                       "contaminant or hit type a model gets wrong, and what it takes them for (simulated test "
                       "data only; a multi hit counts under its first particle)."))
        b.append(("table", ["model", "training", "test", "particle", "class", "shots", "recall", "read as"],
                  [[r["model"], r["source"], r["test"], r["structure"], r["class"], str(r["shots"]),
                    f"{100 * r['recall']:.1f} %", ", ".join(f"{c} {n}" for c, n in r["read_as"].items())]
                   for r in per_structure]))
    return b


def _speed(results: StudyResults) -> list[tuple]:
    if not results.throughput:
        return []
    return [("h2", "Inference speed"),
            ("p", "From raw frames in memory to predicted classes (preprocessing or feature extraction "
                  "included), first seed."),
            ("table", ["model", "training", "device", "threads", "batch", "shots/s", "ms per batch"],
             [[t.model, t.source, t.device, str(t.threads), str(t.batch_size), f"{t.shots_per_s:,.0f}",
               f"{t.seconds_per_batch * 1e3:.1f}"] for t in results.throughput])]


def _figures(figures: dict, out: Path) -> list[tuple]:
    b: list[tuple] = [("h2", "Figures")]
    for kind in FIGURES:
        for p, caption in figures.get(kind, []):
            b.append(("img", str(p.relative_to(out)), caption))
    return b


def _files() -> list[tuple]:
    return [("h2", "Files"),
            ("list", ["metrics.json: every run, the summary and the study definition",
                      "runs.csv, summary.csv, per_class.csv, per_structure.csv (simulated tests), throughput.csv, "
                      "datasets.csv",
                      "plots/: the figures above",
                      "cache/: simulated datasets and trained models (reused on a rerun)"])]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h1":
            lines += [f"# {blk[1]}", ""]
        elif kind == "h2":
            lines += [f"## {blk[1]}", ""]
        elif kind == "p":
            lines += [blk[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in blk[1]] + [""]
        elif kind == "table":
            header, rows = blk[1], blk[2]
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{Path(blk[1]).stem}]({blk[1]})", "", f"*{blk[2]}*", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #3b6ea5; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; color: #2c5282; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .88em; }
th, td { border: 1px solid #ccd; padding: .25em .6em; text-align: left; }
th { background: #eef2f8; }
tr:nth-child(even) td { background: #f8f9fc; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #dde; }
figcaption { font-size: .88em; color: #555; margin-top: .3em; }
"""


def to_html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{e(title)} — spi evaluate</title><style>{_CSS}</style></head><body>"]
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{e(blk[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{e(blk[1])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in blk[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in blk[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in blk[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            img = f"<img src=\"{e(blk[1])}\" alt=\"{e(Path(blk[1]).stem)}\">"
            parts.append(f"<figure>{img}<figcaption>{e(blk[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
