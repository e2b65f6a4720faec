"""The report's tables: mean ± spread over seeds per (model, source, test, k), per class, per particle, and the
rows that compare models with the project's targets."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics import SINGLE_PRECISION_TARGET, Spread, spread
from ..records import CNN, PHOTONS, SIAMESE, Perturbation, RunRecord, StudyResults

GROUP_KEYS = ("model", "source", "test", "k")

ACCURACY_TARGET = 0.95
"""Accuracy a few-shot model should reach (four classes with ``TARGET_K`` supports; single / not_single with at most
``BINARY_TARGET_K`` labelled shots per class)."""

TARGET_K = 20
"""Supports per class of the four-class targets: the largest k of a study up to this one."""

BINARY_TARGET_K = 5
"""Labelled shots per class of the single / not_single targets (issue 15): the largest k up to this one."""

SINGLE_RECALL_TARGET = 0.5
"""Single-hit recall the single / not_single targets ask at ``SINGLE_PRECISION_TARGET`` precision."""

SIMULATED_SUPPORT_ACCURACY_TARGET = 0.90
"""Accuracy of a single / not_single test whose supports are simulated (no real label)."""


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


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, Spread):
            out[f"{key}_mean"] = value.mean
            out[f"{key}_std"] = value.std
            out[f"{key}_n"] = value.n
        else:
            out[key] = value
    return out


def plain_tests(results: StudyResults) -> list[str]:
    """Names of the unperturbed test variants (a swept test by its neutral point)."""
    return [v.name for v in results.study.plain_variants()]



def targets(results: StudyResults, summary: list[dict]) -> list[list[str]]:
    """Rows comparing few-shot models at k ≤ 20 with the issue's targets and the supervised CNN baseline."""
    k20 = [k for k in results.study.k_shots if k <= TARGET_K]
    if not k20:
        return []
    kt = max(k20)
    rows = []
    for r in summary:
        if (r["kind"] != SIAMESE or not at_k(r, kt) or r["k"] is None or r["sweep_key"] is not None
                or r["label_space"] == "binary"):  # the targets are four-class ones
            continue
        cnn = [c for c in summary if c["kind"] == CNN and c["source"] == r["source"] and c["test"] == r["test"]]
        beats = "—"
        if cnn:
            mine = {x["k"]: x["accuracy"].mean for x in summary if (x["model"], x["source"], x["test"]) ==
                    (r["model"], r["source"], r["test"]) and any(k in k20 for k in asked_ks(x))}
            ref = {c["k"]: c["accuracy"].mean for c in cnn}
            ok = all(v > (ref[None] if None in ref else ref.get(k, float("nan"))) for k, v in mine.items())
            beats = "yes" if ok else "no"
        acc, sp = r["accuracy"], r["single_precision"]
        rows.append([r["model"], r["source"], r["test"], str(r["k"]), acc.format(percent=True),
                     "yes" if acc.mean >= ACCURACY_TARGET else "no", sp.format(percent=True),
                     "yes" if (not math.isnan(sp.mean) and sp.mean >= SINGLE_PRECISION_TARGET) else "no",
                     r["single_recall_at_98"].format(percent=True), beats])
    return rows


def binary_targets(results: StudyResults, summary: list[dict]) -> list[list[str]]:
    """Rows comparing the Siamese models on single / not_single tests with the sim-to-real targets (issue 15):
    accuracy ≥ 95 % with ≤ 5 labelled shots per class (the largest k ≤ 5), single-hit precision ≥ 98 % at ≥ 50 %
    single recall (the ratio test's precision and recall where the model has one, else the recall at 98 %
    precision of the best threshold in hindsight), and accuracy above every photon-count and CNN row of the
    same test at every k."""
    plain = set(plain_tests(results))
    rows = []
    for r in summary:
        if r["kind"] != SIAMESE or r["label_space"] != "binary" or r["test"] not in plain or r["k"] is None:
            continue
        same = [x for x in summary if (x["model"], x["source"], x["test"]) == (r["model"], r["source"], r["test"])]
        if r is not max((x for x in same if x["k"] <= BINARY_TARGET_K), key=lambda x: x["k"], default=None):
            continue  # one row per model, source and test: at the largest k <= BINARY_TARGET_K
        acc = r["accuracy"]
        sure = r["answered"].mean < 1.0 if r["answered"].n else False
        prec, rec = ((r["single_precision"], r["single_recall"]) if sure else
                     (None, r["single_recall_at_98"]))
        purity = (f"{prec.format(percent=True)} at recall {rec.format(percent=True)}" if sure else
                  f"recall {rec.format(percent=True)} at {100 * SINGLE_PRECISION_TARGET:g} % (hindsight)")
        met = (prec.mean >= SINGLE_PRECISION_TARGET if sure else True) and rec.mean >= SINGLE_RECALL_TARGET
        others = [x for x in summary if x["test"] == r["test"] and x["kind"] in (PHOTONS, CNN)]
        beats = "—"
        if others:
            ok = True
            for mine in same:
                ref = [x["accuracy"].mean for x in others if x["k"] is None or x["k"] == mine["k"]]
                ok &= all(mine["accuracy"].mean > v for v in ref)
            beats = "yes" if ok else "no"
        rows.append([r["model"], r["source"], r["test"], str(r["k"]), acc.format(percent=True),
                     "yes" if acc.mean >= ACCURACY_TARGET else "no", purity, "yes" if met else "no", beats])
    return rows
