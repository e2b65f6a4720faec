"""The report's figures (PNG, matplotlib): accuracy against k, confusion matrices, embeddings, single-hit
precision–recall curves and robustness sweeps; each drawing function returns (path, caption) or None."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spisim.atomic import save_figure

from ..metrics import SINGLE_PRECISION_TARGET, is_single_class, single_hit_pr_curve, spread
from ..records import HUMAN_KIND, SUPPORT_SOURCE, RunRecord, StudyResults
from .tables import at_k, plain_tests

FIGURES = ("accuracy_vs_k", "confusion", "embedding", "pr", "sweep")
"""Figure kinds, in the order the report shows them."""


def slug(text: str) -> str:
    """``text`` as a file-name part (letters, digits, ``_ . + -``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "x"


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



def make_plots(results: StudyResults, summary: list[dict], folder: Path) -> dict[str, list[tuple[Path, str]]]:
    """Draw every figure; returns figure kind → [(PNG path, caption)]."""
    import matplotlib

    matplotlib.use("Agg")
    figs: dict[str, list[tuple[Path, str]]] = {name: [] for name in FIGURES}
    colors = _series_styles(results)
    p = _plot_accuracy_vs_k(results, summary, colors, folder / "accuracy_vs_k.png")
    if p:
        figs["accuracy_vs_k"].append(p)
    for test in plain_tests(results):
        for kind, fn in (("confusion", _plot_confusion), ("embedding", _plot_embedding), ("pr", _plot_pr)):
            p = fn(results, test, colors, folder / f"{kind}_{slug(test)}.png")
            if p:
                figs[kind].append(p)
    for t in results.study.tests.values():
        if t.sweep_key is not None:
            p = _plot_sweep(results, summary, t.name, colors, folder / f"sweep_{slug(t.name)}.png")
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

    tests = plain_tests(results)
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
    save_figure(fig, path, dpi=110, bbox_inches="tight")
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
    save_figure(fig, path, dpi=110)
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
    save_figure(fig, path, dpi=110)
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
    save_figure(fig, path, dpi=110, bbox_inches="tight")
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
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    what = "incident fluence" if key == "fluence_scale" else "missing detector area (a sector about the beam)"
    return path, (f"Accuracy on {test_base} against {what}; test shots and their supports are changed alike, the "
                  "training data are not. Dotted: chance.")


