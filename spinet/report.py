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
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import SINGLE_PRECISION_TARGET, Spread, is_single_class, json_safe, single_hit_pr_curve, spread
from .study import HUMAN_KIND, SUPPORT_SOURCE, Perturbation, RunRecord, StudyResults

GROUP_KEYS = ("model", "source", "test", "k")
FIGURES = ("accuracy_vs_k", "confusion", "embedding", "pr", "sweep")


# ================================================================================== aggregation


def asked_ks(row: dict[str, Any]) -> list[int]:
    """The study's k values a summary row answers (its k unless a pool held fewer shots; [] without k)."""
    if row.get("k_asked"):
        return list(row["k_asked"])
    return [] if row.get("k") is None else [row["k"]]


def at_k(row: dict[str, Any], k: int) -> bool:
    """True for a summary row without k, or one that answers the study's k value ``k``."""
    return row.get("k") is None or k in asked_ks(row)


def _group(records: Sequence[RunRecord]) -> dict[tuple, list[RunRecord]]:
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(r.model, r.source, r.test, r.k)].append(r)
    return groups


def summarize(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Mean ± spread over seeds per (model, source, test, k), in the order the runs were made.

    Each row: model, kind, source, test, test_base, sweep_key, sweep_value, k (really used), k_asked (the
    study's k values it answers when they differ from k, else None), label_space, seeds, n_test, and for
    accuracy, macro_f1, single_precision, single_recall, answered, single_recall_at_98 a
    :class:`spinet.metrics.Spread` (the last over the seeds whose predictions have a single-hit score).
    """
    rows = []
    for (model, source, test, k), rs in _group(records).items():
        r0 = rs[0]
        row: dict[str, Any] = {"model": model, "kind": r0.kind, "source": source, "test": test,
                               "test_base": r0.test_base, "sweep_key": r0.sweep_key, "sweep_value": r0.sweep_value,
                               "k": k, "k_asked": list(r0.asked) if r0.k_asked else None,
                               "label_space": r0.label_space, "seeds": len(rs), "n_test": r0.metrics.n}
        for key in ("accuracy", "macro_f1", "single_precision", "single_recall", "answered"):
            row[key] = spread([getattr(r.metrics, key) for r in rs])
        row["single_recall_at_98"] = spread([r.single_recall_at_98 for r in rs])
        est = [r.estimate for r in rs if r.estimate and r.estimate.get("n")]
        if est:  # what the supports alone said (leave-one-out), beside the test's figure
            row["est_accuracy"] = spread([e["accuracy"] for e in est])
            row["est_n"] = int(est[0]["n"])
            row["est_interval"] = est[0]["interval_95"] if len(est) == 1 else None
            row["chosen"] = "; ".join(dict.fromkeys(_chosen_text(e) for e in est if _chosen_text(e))) or None
        rows.append(row)
    return rows


def _chosen_text(e: dict[str, Any]) -> str:
    """What a model chose with its supports, in words (checkpoint, rule, ratio test; the photon rule)."""
    if e.get("rule_text"):
        return str(e["rule_text"])
    parts = []
    if e.get("checkpoint") and e["checkpoint"] != "best":
        parts.append(str(e["checkpoint"]))
    if e.get("rule"):
        parts.append(f"rule {e['rule']}")
    if e.get("min_ratio"):
        parts.append(f"ratio {e['min_ratio']:g}")
    return ", ".join(parts)


def est_text(row: dict[str, Any]) -> str:
    """The supports' own estimate of a summary row: ``0.900 [0.596–0.982] (n = 10)`` for one seed, else
    ``mean ± sd (n = N per seed)``; ``—`` without one."""
    e = row.get("est_accuracy")
    if e is None or e.n == 0:
        return "—"
    if row.get("est_interval"):
        lo, hi = row["est_interval"]
        return f"{100 * e.mean:.1f} % [{100 * lo:.0f}–{100 * hi:.0f} %] (n = {row['est_n']})"
    return f"{e.format(percent=True)} (n = {row['est_n']} per seed)"


def per_class_summary(records: Sequence[RunRecord], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per (model, source, test, k) and class of its label space (the study's ``classes``, or single /
    not_single for a test labelled so): precision and recall Spreads over seeds, and the support."""
    rows = []
    for (model, source, test, k), rs in _group(records).items():
        for c in rs[0].metrics.class_names:
            rows.append({"model": model, "source": source, "test": test, "k": k,
                         "k_asked": list(rs[0].asked) if rs[0].k_asked else None, "class": c,
                         "support": rs[0].metrics.support.get(c, 0),
                         "precision": spread([r.metrics.precision[c] for r in rs]),
                         "recall": spread([r.metrics.recall[c] for r in rs])})
    return rows


def per_structure_summary(records: Sequence[RunRecord], classes: Sequence[str], plot_k: int) -> list[dict[str, Any]]:
    """Per (model, source, test) at k = ``plot_k`` (or no k), particle and true class: how the shots were read,
    counts summed over seeds. Only tests on simulated data (whose files name each shot's particle); of a
    sweep, the unperturbed point (fluence × 1, nothing missing).

    Each row: model, source, test, structure, class, shots, correct, recall, and ``read_as``
    {predicted class: count} (``unknown`` for shots no class claimed).
    """
    sums: dict[tuple, np.ndarray] = {}
    for r in records:
        neutral = Perturbation(r.sweep_key, r.sweep_value).neutral
        if r.by_structure is None or not neutral or not r.at_k(plot_k) or r.metrics.class_names != list(classes):
            continue
        for structure, cm in r.by_structure.items():
            key = (r.model, r.source, r.test, structure)
            sums[key] = sums.get(key, 0) + np.asarray(cm, dtype=np.int64)
    rows = []
    names = [*classes, "unknown"]
    for (model, source, test, structure), cm in sums.items():
        for i, c in enumerate(classes):
            n = int(cm[i].sum())
            if n == 0:
                continue
            read = {names[j]: int(cm[i, j]) for j in np.argsort(-cm[i], kind="stable") if cm[i, j] > 0}
            rows.append({"model": model, "source": source, "test": test, "structure": structure or "(none)",
                         "class": c, "shots": n, "correct": int(cm[i, i]), "recall": cm[i, i] / n, "read_as": read})
    return rows


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, Spread):
            out[f"{key}_mean"] = value.mean
            out[f"{key}_std"] = value.std
            out[f"{key}_n"] = value.n
        else:
            out[key] = value
    return out


# ================================================================================== files


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    fields: list[str] = []
    for r in rows:
        for k in r:
            if k not in fields:
                fields.append(k)
    with open(path, "w", newline="", encoding="utf-8") as f:
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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "x"


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
    _write_csv(out / "summary.csv", [_flat(r) for r in summary])
    _write_csv(out / "per_class.csv", [_flat(r) for r in per_class])
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
    (out / "metrics.json").write_text(json.dumps(json_safe(doc), indent=1), encoding="utf-8")
    written["metrics.json"] = out / "metrics.json"

    blocks = _blocks(results, summary, per_class, figures, out, per_structure)
    (out / "report.md").write_text(_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(_html(blocks, results.study.name), encoding="utf-8")
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


# ================================================================================== plots


_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _series_styles(results: StudyResults) -> dict[tuple, dict[str, Any]]:
    """Line style of each (model, source): colour by model, line style and marker by training source."""
    import matplotlib.pyplot as plt

    models = [m.name for m in results.study.models]
    sources = [*results.study.sources, SUPPORT_SOURCE]
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    styles = {(m, s): {"color": cmap(i % cmap.N), "ls": _LINESTYLES[j % len(_LINESTYLES)],
                       "marker": _MARKERS[j % len(_MARKERS)]}
              for i, m in enumerate(models) for j, s in enumerate(sources)}
    humans = list(dict.fromkeys((r.model, r.source) for r in results.records if r.kind == HUMAN_KIND))
    for i, key in enumerate(humans):
        styles[key] = {"color": str(0.1 + 0.5 * i / max(len(humans), 1)), "ls": (0, (6, 2, 1, 2)), "marker": "x"}
    return styles


def _legend_outside(fig: Any, axes: Sequence[Any], styles: dict[tuple, Any]) -> None:
    """One legend for the whole figure, to the right of the panels (labels deduplicated, in model order)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    order = [_label(*key) for key in styles]

    def rank(label: str) -> tuple[int, str]:
        hits = [i for i, o in enumerate(order) if label == o or label.startswith(o + " ") or label.startswith(o + ",")]
        return (hits[0] if hits else len(order), label)

    labels = sorted(seen, key=rank)
    if labels:
        fig.legend([seen[lab] for lab in labels], labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False)


def _plain_tests(results: StudyResults) -> list[str]:
    """Names of the unperturbed test variants (a swept test by its neutral point)."""
    return [v.name for v in results.study.plain_variants()]


def make_plots(results: StudyResults, summary: list[dict], folder: Path) -> dict[str, list[tuple[Path, str]]]:
    """Draw every figure; returns figure kind → [(PNG path, caption)]."""
    import matplotlib

    matplotlib.use("Agg")
    figs: dict[str, list[tuple[Path, str]]] = {name: [] for name in FIGURES}
    colors = _series_styles(results)
    p = _plot_accuracy_vs_k(results, summary, colors, folder / "accuracy_vs_k.png")
    if p:
        figs["accuracy_vs_k"].append(p)
    for test in _plain_tests(results):
        for kind, fn in (("confusion", _plot_confusion), ("embedding", _plot_embedding), ("pr", _plot_pr)):
            p = fn(results, test, colors, folder / f"{kind}_{_slug(test)}.png")
            if p:
                figs[kind].append(p)
    for t in results.study.tests.values():
        if t.sweep_key is not None:
            p = _plot_sweep(results, summary, t.name, colors, folder / f"sweep_{_slug(t.name)}.png")
            if p:
                figs["sweep"].append(p)
    return figs


def _seeds(results: StudyResults) -> str:
    n = len(results.study.seeds)
    return f"{n} seed{'' if n == 1 else 's'}"


def _spread_note(results: StudyResults) -> str:
    """How the plotted points were made: "mean ± sd over 3 seeds", or "one seed, no spread"."""
    return "one seed, no spread" if len(results.study.seeds) == 1 else f"mean ± sd over {_seeds(results)}"


def _label(model: str, source: str) -> str:
    return f"{model} · {source}"


def _plot_accuracy_vs_k(results: StudyResults, summary: list[dict], styles: dict,
                        path: Path) -> tuple[Path, str] | None:
    import matplotlib.pyplot as plt

    tests = _plain_tests(results)
    rows = [r for r in summary if r["test"] in tests]
    if not rows:
        return None
    n = len(tests)
    cols = min(n, 2)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.6 * cols, 4.2 * nrows), squeeze=False)
    for ax, test in zip(axes.flat, tests, strict=False):
        here = [r for r in rows if r["test"] == test]
        ks = sorted({r["k"] for r in here if r["k"] is not None}) or list(results.study.k_shots)
        chance = 1.0 / max(len(test_classes(results, test)), 1)
        for key in dict.fromkeys((r["model"], r["source"]) for r in here):
            st = styles[key]
            rs = [r for r in here if (r["model"], r["source"]) == key]
            with_k = sorted([r for r in rs if r["k"] is not None], key=lambda r: r["k"])
            if with_k:
                x = [r["k"] for r in with_k]
                y = [r["accuracy"].mean for r in with_k]
                e = [0.0 if math.isnan(r["accuracy"].std) else r["accuracy"].std for r in with_k]
                ax.errorbar(x, y, yerr=e, color=st["color"], ls=st["ls"], marker=st["marker"], ms=5, lw=1.8,
                            capsize=3, label=_label(*key))
            for r in rs:
                if r["k"] is None:
                    m, sd = r["accuracy"].mean, r["accuracy"].std
                    name = f"{key[0]} (human)" if r["kind"] == HUMAN_KIND else _label(*key) + " (trained without k)"
                    ax.axhline(m, color=st["color"], ls=st["ls"], lw=1.2, alpha=0.9, label=name)
                    if not math.isnan(sd) and sd > 0:
                        ax.axhspan(m - sd, m + sd, color=st["color"], alpha=0.08, lw=0)
        ax.axhline(chance, color="0.55", ls=":", lw=1)
        ax.text(ks[0] / 1.25, chance, "chance", va="bottom", ha="left", fontsize=8, color="0.45")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlim(ks[0] / 1.3, ks[-1] * 1.3)
        lows = [r["accuracy"].mean - (0 if math.isnan(r["accuracy"].std) else r["accuracy"].std) for r in here]
        ax.set_ylim(max(0.0, min([chance, *lows]) - 0.05), 1.02)
        ax.set_xlabel("k (labelled shots per class, as drawn)")
        ax.set_ylabel(f"accuracy ({_space_text(results, test)})")
        ax.set_title(f"test: {test} ({_n_text(here)})", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    _legend_outside(fig, list(axes.flat), styles)
    fig.suptitle(f"{results.study.name}: accuracy against k ({_spread_note(results)})",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path, ("Accuracy against the number k of labelled shots per class (log scale). Lines with markers: "
                  "models that use k (Siamese supports, or k shots per class in the training source); horizontal "
                  "lines and bands: models trained without k, mean ± sd over seeds, and human baselines (grey "
                  "dash-dot); dotted: chance. Colour: model; line style: training source.")


def test_classes(results: StudyResults, test: str) -> list[str]:
    """The label space of a test's scores: its records' class names (the study's classes, or single /
    not_single for a test labelled single vs rest)."""
    for r in results.records:
        if r.test == test and r.kind != HUMAN_KIND:
            return list(r.metrics.class_names)
    return list(results.classes)


def _space_text(results: StudyResults, test: str) -> str:
    names = test_classes(results, test)
    return "single / not_single" if names == ["single", "not_single"] else f"{len(names)} classes"


def _n_text(rows: Sequence[dict]) -> str:
    ns = sorted({r["n_test"] for r in rows if r["kind"] != HUMAN_KIND}) or sorted({r["n_test"] for r in rows})
    return "n = " + "/".join(map(str, ns)) + " shots"


def _k_text(results: StudyResults, ks: set) -> str:
    """``k = 20``, or ``k = 10 (asked 20)`` where a pool held fewer shots."""
    plot_k = results.study.plot_k
    real = sorted(k for k in ks if k is not None)
    if not real or real == [plot_k]:
        return f"k = {plot_k}"
    return f"k = {'/'.join(map(str, real))} (asked {plot_k})"


def _predictions_at(results: StudyResults, test: str) -> dict[tuple, Any]:
    return {(m, s): p for (m, s, t, _k), p in results.predictions.items() if t == test}


def _records_at(results: StudyResults, test: str) -> dict[tuple, list[RunRecord]]:
    k = results.study.plot_k
    out: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in results.records:
        if r.test == test and r.at_k(k) and r.kind != HUMAN_KIND:
            out[(r.model, r.source)].append(r)
    return out


def _short(name: str) -> str:
    return name.replace("_", " ") if len(name) <= 14 else name[:13] + "…"


def _plot_confusion(results: StudyResults, test: str, styles: dict, path: Path) -> tuple[Path, str] | None:
    import matplotlib.pyplot as plt

    groups = _records_at(results, test)
    if not groups:
        return None
    classes = test_classes(results, test)
    c = len(classes)
    n = len(groups)
    cols = min(n, 4)
    nrows = math.ceil(n / cols)
    side = 1.0 + 0.55 * c
    fig, axes = plt.subplots(nrows, cols, figsize=(side * cols + 0.8, side * nrows + 0.6), squeeze=False)
    for ax, ((model, source), rs) in zip(axes.flat, groups.items(), strict=False):
        cm = np.sum([np.asarray(r.metrics.confusion) for r in rs], axis=0)
        show_unknown = cm[:, c].sum() > 0
        mat = cm if show_unknown else cm[:, :c]
        rows = mat.sum(axis=1, keepdims=True)
        frac = np.divide(mat, rows, out=np.zeros_like(mat, dtype=float), where=rows > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, f"{int(mat[i, j])}\n{frac[i, j]:.0%}" if rows[i, 0] else "", ha="center", va="center",
                        fontsize=7.5, color="white" if frac[i, j] > 0.55 else "black")
        cols_names = [_short(x) for x in classes] + (["unknown"] if show_unknown else [])
        ax.set_xticks(range(mat.shape[1]))
        ax.set_xticklabels(cols_names, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(c))
        ax.set_yticklabels([_short(x) for x in classes], fontsize=8)
        ax.set_xlabel("predicted", fontsize=9)
        ax.set_ylabel("true", fontsize=9)
        ks = {r.k for r in rs}
        kk = f", k={next(iter(ks))}" if ks != {None} else ""
        acc = spread([r.metrics.accuracy for r in rs])
        ax.set_title(f"{_label(model, source)}{kk}\naccuracy {acc.format()} (n = {rs[0].metrics.n})", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    seeds = "one seed" if len(results.study.seeds) == 1 else f"summed over {_seeds(results)}"
    fig.suptitle(f"confusion matrices on {test}, {_space_text(results, test)} ({seeds})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    ks = {r.k for rs in groups.values() for r in rs}
    return path, (f"Confusion matrices on {test} ({_space_text(results, test)}) at {_k_text(results, ks)} for models "
                  "with supports: counts summed over seeds, colour and percentage normalised per true class (row); "
                  "n: shots scored per seed.")


def _project(x: np.ndarray, method: str, seed: int = 0) -> tuple[np.ndarray, str]:
    from sklearn.decomposition import PCA

    if method == "tsne" and len(x) > 10:
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(x) - 1) / 3)))
        return TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x), "t-SNE"
    k = min(2, x.shape[1], len(x))
    y = PCA(k, random_state=seed).fit_transform(x)
    if y.shape[1] < 2:
        y = np.concatenate([y, np.zeros((len(y), 2 - y.shape[1]))], axis=1)
    return y, "PCA"


def _plot_embedding(results: StudyResults, test: str, styles: dict, path: Path) -> tuple[Path, str] | None:
    import matplotlib.pyplot as plt

    preds = {k: p for k, p in _predictions_at(results, test).items() if p.embeddings is not None}
    if not preds:
        return None
    classes = test_classes(results, test)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    n = len(preds)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.0 * cols, 4.6 * nrows), squeeze=False)
    method = results.study.evaluation.projection
    used = "PCA"
    for ax, ((model, source), p) in zip(axes.flat, preds.items(), strict=False):
        q = np.asarray(p.embeddings)
        s = np.asarray(p.support_embeddings) if p.support_embeddings is not None else np.zeros((0, q.shape[1]))
        y, used = _project(np.concatenate([q, s]), method)
        yq, ys = y[: len(q)], y[len(q):]
        for c, name in enumerate(classes):
            sel = p.truth == c
            if sel.any():
                ax.scatter(yq[sel, 0], yq[sel, 1], s=10, alpha=0.65, color=cmap(c), label=name, lw=0, zorder=3)
        if len(ys) and p.support_classes is not None:
            for c in np.unique(p.support_classes):
                sel = p.support_classes == c
                ax.scatter(ys[sel, 0], ys[sel, 1], s=80, marker="*", color=cmap(int(c)), edgecolor="black", lw=0.7,
                           alpha=0.8, zorder=2)
        ax.scatter([], [], s=70, marker="*", color="white", edgecolor="black", lw=0.7, label="supports")
        ax.set_title(f"{_label(model, source)}, k={p.k}", fontsize=9)
        ax.set_xlabel(f"{used} 1")
        ax.set_ylabel(f"{used} 2")
        ax.legend(fontsize=7, markerscale=1.2, loc="best")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"embeddings of the {test} shots (first seed), coloured by true class", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    ks = {p.k for p in preds.values()}
    return path, (f"{used} projection of the Siamese embeddings of the {test} shots coloured by true class "
                  f"({_space_text(results, test)}); stars: the {_k_text(results, ks)} supports per class.")


def _plot_pr(results: StudyResults, test: str, styles: dict, path: Path) -> tuple[Path, str] | None:
    import matplotlib.pyplot as plt

    classes = test_classes(results, test)
    if not any(is_single_class(c) for c in classes):
        return None
    curves = []
    for key, p in _predictions_at(results, test).items():
        if p.single_score is None:
            continue
        curve = single_hit_pr_curve(p.truth, p.single_score, p.class_names or results.classes)
        if curve is not None:
            curves.append((key, p, curve))
    if not curves:
        return None
    sources = list(dict.fromkeys(key[1] for key, _, _ in curves))
    n = len(sources)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False, sharey=True)
    low = min(float(c.precision.min()) for _, _, c in curves)
    # a ratio-test model ranks shots as its rule does, so its curve lies on that rule's: dashed, to show both
    ratio_test = {m.name for m in results.study.models if m.min_ratio is not None}
    for ax, source in zip(axes.flat, sources, strict=True):
        for (model, src), p, curve in curves:
            if src != source:
                continue
            st = styles.get((model, src), {})
            ax.step(curve.recall, curve.precision, where="post", color=st.get("color"), lw=1.6,
                    ls="--" if model in ratio_test else "-", label=f"{model} (AP {curve.average_precision:.3f})")
            single = np.array([is_single_class(c) for c in (p.class_names or results.classes)])
            t = single[p.truth]
            pr = (p.pred >= 0) & single[np.clip(p.pred, 0, None)]
            if pr.any() and t.any():
                ax.plot((t & pr).sum() / t.sum(), (t & pr).sum() / pr.sum(), "o", color=st.get("color"), ms=7,
                        mec="black")
        ax.axhline(SINGLE_PRECISION_TARGET, color="0.5", ls=":", lw=1)
        ax.text(0.02, SINGLE_PRECISION_TARGET, f"{100 * SINGLE_PRECISION_TARGET:g} %", va="top", fontsize=8,
                color="0.4")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(max(0.0, low - 0.05), 1.02)
        ax.set_xlabel("single-hit recall")
        ax.set_title(f"trained on {source}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes.flat[0].set_ylabel("single-hit precision")
    ks = {p.k for _, p, _ in curves}
    fig.suptitle(f"single hits on {test} (first seed, {_k_text(results, ks)} where k applies, "
                 f"n = {len(curves[0][1].truth)} shots)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path, ("Single-hit precision against recall as the threshold on each model's single-hit score moves "
                  "(probability of single for the baselines; for the Siamese models ln(d_other / d_single), the "
                  "log ratio of the distances to the nearest other class and to single), one panel per training "
                  "source; dots: the operating point of the class predictions (dashed: a model with a ratio test, "
                  "whose curve is its rule's and whose dot is where the test keeps it); AP: average precision.")


def _plot_sweep(results: StudyResults, summary: list[dict], test_base: str, styles: dict,
                path: Path) -> tuple[Path, str] | None:
    import matplotlib.pyplot as plt

    k = results.study.plot_k
    rows = [r for r in summary if r["test_base"] == test_base and r["sweep_key"] is not None and at_k(r, k)]
    if not rows:
        return None
    key = rows[0]["sweep_key"]
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for series in dict.fromkeys((r["model"], r["source"]) for r in rows):
        st = styles.get(series, {})
        rs = sorted([r for r in rows if (r["model"], r["source"]) == series], key=lambda r: r["sweep_value"])
        x = [r["sweep_value"] for r in rs]
        y = [r["accuracy"].mean for r in rs]
        e = [0.0 if math.isnan(r["accuracy"].std) else r["accuracy"].std for r in rs]
        kk = "" if rs[0]["k"] is None else f", k={rs[0]['k']}"
        ax.errorbar(x, y, yerr=e, marker=st.get("marker", "o"), ms=5, capsize=3, lw=1.6, color=st.get("color"),
                    ls=st.get("ls", "-"), label=_label(*series) + kk)
    values = sorted({r["sweep_value"] for r in rows})
    if key == "fluence_scale":
        ax.set_xscale("log")
        ax.set_xlabel("fluence scale (× nominal)")
    else:
        ax.set_xlabel("fraction of the detector area lost")
    ax.set_xticks(values)
    ax.set_xticklabels([f"{v:g}" for v in values])
    ax.minorticks_off()
    ax.axhline(1.0 / len(test_classes(results, rows[0]["test"])), color="0.55", ls=":", lw=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(f"robustness on {test_base} ({_spread_note(results)})", fontsize=10)
    ax.grid(True, alpha=0.3)
    _legend_outside(fig, [ax], styles)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    what = "incident fluence" if key == "fluence_scale" else "missing detector area (a sector about the beam)"
    return path, (f"Accuracy on {test_base} against {what}; test shots and their supports are changed alike, the "
                  "training data are not. Dotted: chance.")


# ================================================================================== documents


def _space_label(name: str) -> str:
    return "single / not_single" if name == "binary" else name


def _fmt_k(k: int | None) -> str:
    return "—" if k is None else str(k)


def _targets(results: StudyResults, summary: list[dict]) -> list[list[str]]:
    """Rows comparing few-shot models at k ≤ 20 with the issue's targets and the supervised CNN baseline."""
    k20 = [k for k in results.study.k_shots if k <= 20]
    if not k20:
        return []
    kt = max(k20)
    rows = []
    for r in summary:
        if (r["kind"] != "siamese" or not at_k(r, kt) or r["k"] is None or r["sweep_key"] is not None
                or r["label_space"] == "binary"):  # the targets are four-class ones
            continue
        cnn = [c for c in summary if c["kind"] == "cnn" and c["source"] == r["source"] and c["test"] == r["test"]]
        beats = "—"
        if cnn:
            mine = {x["k"]: x["accuracy"].mean for x in summary if (x["model"], x["source"], x["test"]) ==
                    (r["model"], r["source"], r["test"]) and any(k in k20 for k in asked_ks(x))}
            ref = {c["k"]: c["accuracy"].mean for c in cnn}
            ok = all(v > (ref[None] if None in ref else ref.get(k, float("nan"))) for k, v in mine.items())
            beats = "yes" if ok else "no"
        acc, sp = r["accuracy"], r["single_precision"]
        rows.append([r["model"], r["source"], r["test"], str(r["k"]), acc.format(percent=True),
                     "yes" if acc.mean >= 0.95 else "no", sp.format(percent=True),
                     "yes" if (not math.isnan(sp.mean) and sp.mean >= SINGLE_PRECISION_TARGET) else "no",
                     r["single_recall_at_98"].format(percent=True), beats])
    return rows


def binary_targets(results: StudyResults, summary: list[dict]) -> list[list[str]]:
    """Rows comparing the Siamese models on single / not_single tests with the sim-to-real targets (issue 15):
    accuracy ≥ 95 % with ≤ 5 labelled shots per class (the largest k ≤ 5), single-hit precision ≥ 98 % at ≥ 50 %
    single recall (the ratio test's precision and recall where the model has one, else the recall at 98 %
    precision of the best threshold in hindsight), and accuracy above every photon-count and CNN row of the
    same test at every k."""
    plain = set(_plain_tests(results))
    rows = []
    for r in summary:
        if r["kind"] != "siamese" or r["label_space"] != "binary" or r["test"] not in plain or r["k"] is None:
            continue
        same = [x for x in summary if (x["model"], x["source"], x["test"]) == (r["model"], r["source"], r["test"])]
        if r is not max((x for x in same if x["k"] <= 5), key=lambda x: x["k"], default=None):
            continue  # one row per model, source and test: at the largest k <= 5
        acc = r["accuracy"]
        sure = r["answered"].mean < 1.0 if r["answered"].n else False
        prec, rec = ((r["single_precision"], r["single_recall"]) if sure else
                     (None, r["single_recall_at_98"]))
        purity = (f"{prec.format(percent=True)} at recall {rec.format(percent=True)}" if sure else
                  f"recall {rec.format(percent=True)} at 98 % (hindsight)")
        met = (prec.mean >= SINGLE_PRECISION_TARGET and rec.mean >= 0.5) if sure else rec.mean >= 0.5
        others = [x for x in summary if x["test"] == r["test"] and x["kind"] in ("photons", "cnn")]
        beats = "—"
        if others:
            ok = True
            for mine in same:
                ref = [x["accuracy"].mean for x in others if x["k"] is None or x["k"] == mine["k"]]
                ok &= all(mine["accuracy"].mean > v for v in ref)
            beats = "yes" if ok else "no"
        rows.append([r["model"], r["source"], r["test"], str(r["k"]), acc.format(percent=True),
                     "yes" if acc.mean >= 0.95 else "no", purity, "yes" if met else "no", beats])
    return rows


def _blocks(results: StudyResults, summary: list[dict], per_class: list[dict], figures: dict,
            out: Path, per_structure: Sequence[dict] = ()) -> list[tuple]:
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
    b.append(("h2", "Results"))
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
    targets = _targets(results, summary)
    if targets:
        b.append(("h2", "Targets"))
        b.append(("p", "Few-shot models against the project's targets: four-class accuracy ≥ 95 % with 20-shot "
                       "supports, single-hit precision ≥ 98 %, and accuracy above the supervised CNN (same training "
                       "data and test) at every k ≤ 20. Single recall at 98 % precision: the share of true single "
                       "hits that a threshold on the single-hit score keeps while 98 % of what it keeps are single "
                       "hits (read off the precision–recall curve of the scored shots, so the best such threshold; "
                       "0 when none reaches 98 %)."))
        b.append(("table", ["model", "training", "test", "k", "accuracy", "≥ 95 %", "single precision", "≥ 98 %",
                            "single recall at 98 % precision", "above CNN at k ≤ 20"], targets))
    btargets = binary_targets(results, summary)
    if btargets:
        b.append(("h2", "Targets on single / not_single tests"))
        b.append(("p", "The Siamese models on tests labelled single / not_single against the sim-to-real targets: "
                       "accuracy ≥ 95 % with at most 5 labelled shots per class (here at the largest k ≤ 5; a test "
                       "whose supports are simulated reads the target of no real label, ≥ 90 %); single-hit "
                       "precision ≥ 98 % at ≥ 50 % single recall (the ratio test's own precision and recall where "
                       "the model has one, else the recall a threshold chosen in hindsight keeps at 98 % "
                       "precision); and accuracy above every photon-count rule and CNN of the same test at every "
                       "k."))
        b.append(("table", ["model", "training", "test", "k", "accuracy", "≥ 95 %", "single purity",
                            "≥ 98 % at ≥ 50 %", "above photons and CNN at every k"], btargets))
    b.append(("h2", f"Per-class precision and recall (k = {s.plot_k} or —)"))
    plain = set(_plain_tests(results))
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
    if results.throughput:
        b.append(("h2", "Inference speed"))
        b.append(("p", "From raw frames in memory to predicted classes (preprocessing or feature extraction "
                       "included), first seed."))
        b.append(("table", ["model", "training", "device", "threads", "batch", "shots/s", "ms per batch"],
                  [[t.model, t.source, t.device, str(t.threads), str(t.batch_size), f"{t.shots_per_s:,.0f}",
                    f"{t.seconds_per_batch * 1e3:.1f}"] for t in results.throughput]))
    b.append(("h2", "Figures"))
    for kind in FIGURES:
        for p, caption in figures.get(kind, []):
            b.append(("img", str(p.relative_to(out)), caption))
    b.append(("h2", "Files"))
    b.append(("list", ["metrics.json: every run, the summary and the study definition",
                       "runs.csv, summary.csv, per_class.csv, per_structure.csv (simulated tests), throughput.csv, "
                       "datasets.csv",
                       "plots/: the figures above",
                       "cache/: simulated datasets and trained models (reused on a rerun)"]))
    return b


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(blocks: list[tuple]) -> str:
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


def _html(blocks: list[tuple], title: str) -> str:
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
