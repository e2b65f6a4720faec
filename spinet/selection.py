"""Choosing a checkpoint, a few-shot rule and a ratio-test threshold with what a user has: a few labelled shots.

On real data a user holds k labelled shots per class (the supports) and the run's unlabelled frames. Simulated
validation accuracy does not tell which checkpoint or rule reads the real run best, so the choice is made on the
supports themselves, never on the shots to be classified:

* :func:`leave_one_out`: each support is classified by the other supports (its own class keeps k − 1); the
  share right estimates the accuracy, with its Wilson score interval (:func:`wilson_interval`) and n stated.
  A support whose class has no other support cannot be scored and is left out (k = 1 gives no estimate).
* :func:`select_candidate`: among candidates (a checkpoint × a rule, each with its own support embeddings) the
  one with the most supports right under leave-one-out; ties go to the earlier candidate, so the caller lists
  its default first and the supports move the choice only with evidence. (Margins were tried as the
  tie-break and dropped: they are not comparable across rules — the nearest support is always nearer than
  the mean of three — and on the sim-to-real stand-in they moved the choice to worse readings.)
* :func:`ratio_from_supports`: a ratio-test threshold R (``min_ratio``) from the supports' leave-one-out
  single-hit scores: the smallest R of a grid at which no non-single support would be answered single, if that
  keeps at least ``min_recall`` of the single supports; otherwise the R of the best leave-one-out precision at
  that recall.
* :func:`cluster_agreement`: a label-free reading of the unlabelled frames: the share of frames that the real
  supports and the simulated labelled shots put in the same class (single vs rest).

Every estimate says how many supports it rests on: with 5 per class the interval spans tens of points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .fewshot import FewShotClassifier, log_distance_ratio
from .metrics import is_single_class

SELECTION_RULES = ("knn", "nearest", "mean", "prototype")
"""The order in which ``rule: auto`` / ``--rule auto`` tries the rules (the first wins ties)."""

RATIO_GRID = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
"""Ratio-test thresholds :func:`ratio_from_supports` chooses from."""


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % for the default z); (nan, nan) for n = 0.

    Args:
        successes: right answers, 0 ≤ successes ≤ n.
        n: trials.
        z: standard-normal quantile of the interval (1.96: 95 %).
    """
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass
class Estimate:
    """An accuracy estimated from n scored supports.

    Attributes:
        correct: supports answered right.
        n: supports scored.
        what: how it was obtained (e.g. ``leave-one-out over 10 supports``).
    """

    correct: int
    n: int
    what: str = "leave-one-out over the supports"

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """95 % Wilson score interval."""
        return wilson_interval(self.correct, self.n)

    def text(self) -> str:
        """``0.900 (9 of 10; 95 % Wilson interval 0.596–0.982)``."""
        if self.n == 0:
            return "no estimate (no support could be scored)"
        lo, hi = self.interval
        return f"{self.accuracy:.3f} ({self.correct} of {self.n}; 95 % Wilson interval {lo:.3f}–{hi:.3f})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (no NaN: ``accuracy`` and the interval are null when no support could be scored)."""
        if self.n == 0:
            return {"accuracy": None, "correct": 0, "n": 0, "interval_95": None, "method": self.what}
        lo, hi = self.interval
        return {"accuracy": self.accuracy, "correct": self.correct, "n": self.n, "interval_95": [lo, hi],
                "method": self.what}


@dataclass
class LooResult:
    """Leave-one-out answers of the supports.

    Attributes:
        scored: (n,) bool, the supports that could be scored (their class has another support).
        pred: (n,) predicted class names in the label space (``unknown`` for the ratio test), "" where not scored.
        truth: (n,) true class names in the label space.
        margin: (n,) ln(d_nearest_other / d_true) under the rule (> 0: right), NaN where not scored.
        single_score: (n,) ln(d_other / d_single) (the single-hit score), NaN where not scored or no single class.
    """

    scored: np.ndarray
    pred: np.ndarray
    truth: np.ndarray
    margin: np.ndarray
    single_score: np.ndarray
    estimate: Estimate = field(default_factory=lambda: Estimate(0, 0))

    @property
    def mean_margin(self) -> float:
        m = self.margin[self.scored]
        return float(np.mean(np.clip(m, -5, 5))) if len(m) else float("nan")


def _map(name: str, binary: bool) -> str:
    if not binary or name == "unknown":
        return name
    return "single" if is_single_class(name) else "not_single"


def _fair_others(cls: np.ndarray, i: int) -> np.ndarray:
    """(n,) bool: the supports that read support i when it is left out. Every other class with more than one
    support also gives up one (drawn with seed i), so that all classes keep k − 1 supports: otherwise the
    left-out shot's class is the only one short, which flatters the mean and knn rules and penalises nearest
    and prototype (measured on pure noise, 4 classes, k = 2: 0.33 against 0.14 for a true 0.25)."""
    keep = np.arange(len(cls)) != i
    rng = np.random.default_rng(i)
    for c in np.unique(cls):
        if c == cls[i]:
            continue
        members = np.flatnonzero(cls == c)
        if len(members) > 1:
            keep[rng.choice(members)] = False
    return keep


def leave_one_out(embeddings: torch.Tensor | np.ndarray, classes: Sequence[int] | np.ndarray,
                  class_names: Sequence[str], rule: str = "nearest", *, min_ratio: float | None = None,
                  binary: bool = False, evaluate: np.ndarray | None = None) -> LooResult:
    """Classify each support by the others.

    Args:
        embeddings: (n, D) support embeddings.
        classes: (n,) class ids into ``class_names``.
        class_names: C names.
        rule: few-shot rule (:data:`spinet.fewshot.RULES`).
        min_ratio: the ratio test (an unsure answer is ``unknown``, counted wrong).
        binary: score single vs rest (answers and truth mapped to single / not_single).
        evaluate: (n,) bool, the supports to score (default all); the others still serve as supports.

    Returns:
        Per-support answers, margins and single-hit scores, and the accuracy estimate.
    """
    emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    cls = np.asarray(classes, dtype=np.int64)
    names = list(class_names)
    n = len(cls)
    evaluate = np.ones(n, bool) if evaluate is None else np.asarray(evaluate, bool)
    scored = np.zeros(n, bool)
    pred = np.full(n, "", dtype=object)
    truth = np.array([_map(names[c], binary) for c in cls], dtype=object)
    margin = np.full(n, np.nan)
    single_score = np.full(n, np.nan)
    for i in range(n):
        if not evaluate[i]:
            continue
        others = _fair_others(cls, i)
        if not np.any(cls[others] == cls[i]):
            continue  # its class has no other support: cannot be scored
        present = np.unique(cls[others])
        if len(present) < 2:
            continue
        remap = {int(c): j for j, c in enumerate(present)}
        local = [names[c] for c in present]
        groups = [int(is_single_class(c)) for c in local] if binary else None
        if groups is not None and len(set(groups)) < 2:
            groups = None  # one side only: the ratio test compares classes
        clf = FewShotClassifier(emb[others], torch.tensor([remap[int(c)] for c in cls[others]]), local, rule,
                                min_ratio=min_ratio, ratio_groups=groups)
        p, d = clf.predict(emb[i : i + 1])
        d = d.numpy()[0]
        answer = "unknown" if int(p[0]) < 0 else local[int(p[0])]
        pred[i] = _map(answer, binary)
        scored[i] = True
        true_local = remap[int(cls[i])]
        if binary:
            same = np.array([_map(c, True) == truth[i] for c in local])
        else:
            same = np.arange(len(local)) == true_local
        if same.all():
            continue
        d = np.maximum(d, 1e-12)
        margin[i] = float(np.log(d[~same].min()) - np.log(d[same].min()))
        single = np.array([is_single_class(c) for c in local])
        if single.any() and (~single).any():
            single_score[i] = float(log_distance_ratio(d[None], single)[0])
    correct = int(sum(1 for i in np.flatnonzero(scored) if pred[i] == truth[i]))
    est = Estimate(correct, int(scored.sum()), f"leave-one-out over {int(scored.sum())} supports")
    return LooResult(scored, pred, truth, margin, single_score, est)


@dataclass
class Candidate:
    """One way to read the supports: a name (e.g. ``epoch-008.pt, rule nearest``), the support embeddings
    (n, D) under that checkpoint, and the rule."""

    name: str
    embeddings: torch.Tensor | np.ndarray
    rule: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Selection:
    """The chosen candidate and the leave-one-out result of every candidate (same order as given)."""

    best: int
    candidates: list[Candidate]
    results: list[LooResult]

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.best]

    @property
    def estimate(self) -> Estimate:
        return self.results[self.best].estimate

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate: name, rule, LOO accuracy, interval, n, mean margin, chosen."""
        rows = []
        for i, (c, r) in enumerate(zip(self.candidates, self.results, strict=True)):
            lo, hi = r.estimate.interval
            rows.append({"candidate": c.name, "rule": c.rule, "loo_accuracy": r.estimate.accuracy,
                         "correct": r.estimate.correct, "n": r.estimate.n, "interval_95": [lo, hi],
                         "mean_margin": r.mean_margin, "chosen": i == self.best, **c.info})
        return rows


def select_candidate(candidates: Sequence[Candidate], classes: Sequence[int] | np.ndarray, class_names: Sequence[str],
                     *, binary: bool = False, evaluate: np.ndarray | None = None,
                     min_ratio: float | None = None) -> Selection:
    """The candidate with the most supports right under leave-one-out (ties: the earlier candidate).

    Args:
        candidates: at least one; each with support embeddings in the same support order.
        classes: (n,) support class ids into ``class_names``.
        binary: score single vs rest.
        evaluate: (n,) bool, the supports scored (default all).
        min_ratio: ratio test applied while scoring (None: plain rule).
    """
    if not candidates:
        raise ValueError("no candidates to select from")
    results = [leave_one_out(c.embeddings, classes, class_names, c.rule, min_ratio=min_ratio, binary=binary,
                             evaluate=evaluate) for c in candidates]

    best = max(range(len(candidates)), key=lambda i: (results[i].estimate.correct, -i))
    return Selection(best, list(candidates), results)


def ratio_from_supports(single_score: np.ndarray, is_single: np.ndarray, *, min_recall: float = 0.5,
                        grid: Sequence[float] = RATIO_GRID) -> float | None:
    """A ratio-test threshold from the supports' leave-one-out single-hit scores s = ln(d_other / d_single).

    A support is answered single when s ≥ ln R. The smallest R of ``grid`` at which no non-single support is
    answered single, provided at least ``min_recall`` of the single supports still are; when no R gets there,
    the R with the best precision at that recall (ties: the smaller R). None when the supports give no score
    (no single or no non-single support scored).

    Args:
        single_score: (n,) scores, NaN where a support was not scored.
        is_single: (n,) bool, the true single supports.
        min_recall: share of single supports the threshold must keep.
        grid: candidate thresholds R ≥ 1, ascending.
    """
    s = np.asarray(single_score, dtype=np.float64)
    y = np.asarray(is_single, bool)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    if not y.any() or y.all():
        return None
    best: tuple[float, float] | None = None
    for r in sorted(grid):
        answered = s >= math.log(r)
        recall = float(answered[y].mean())
        if recall < min_recall:
            break
        tp, fp = int((answered & y).sum()), int((answered & ~y).sum())
        if fp == 0:
            return float(r)
        precision = tp / (tp + fp)
        if best is None or precision > best[1]:
            best = (float(r), precision)
    return None if best is None else best[0]


def nested_estimate(candidates: Sequence[Candidate], classes: Sequence[int] | np.ndarray,
                    class_names: Sequence[str], *, binary: bool = False, evaluate: np.ndarray | None = None,
                    min_ratio: float | str | None = None) -> Estimate:
    """The accuracy a choice made with the supports gives, estimated without the winner's curse: each support is
    answered by the candidate that :func:`select_candidate` chooses from the *other* supports, with (for
    ``min_ratio="auto"``) the ratio test :func:`ratio_from_supports` fits on the other supports' leave-one-out
    scores. The best of several leave-one-out scores is biased upwards (on pure noise, 4 classes, k = 5, 20
    candidates: 0.43 for a true 0.25); this one is not.

    Args:
        candidates: as for :func:`select_candidate` (one is fine: then only the ratio is chosen).
        classes: (n,) support class ids into ``class_names``.
        binary: score single vs rest.
        evaluate: (n,) bool, the supports scored (default all); all serve as supports.
        min_ratio: a fixed ratio test, ``"auto"`` (fitted as above), or None.
    """
    cls = np.asarray(classes, dtype=np.int64)
    names = list(class_names)
    n = len(cls)
    evaluate = np.ones(n, bool) if evaluate is None else np.asarray(evaluate, bool)
    correct = scored = 0
    for i in np.flatnonzero(evaluate):
        keep = np.arange(n) != i
        sub_eval = evaluate[keep] if evaluate[keep].any() else None
        best = 0
        if len(candidates) > 1:
            sub = [Candidate(c.name, np.asarray(c.embeddings)[keep], c.rule) for c in candidates]
            best = select_candidate(sub, cls[keep], names, binary=binary, evaluate=sub_eval,
                                    min_ratio=None if min_ratio == "auto" else min_ratio).best
        c = candidates[best]
        ratio = min_ratio
        if min_ratio == "auto":
            inner = leave_one_out(np.asarray(c.embeddings)[keep], cls[keep], names, c.rule, binary=binary)
            ratio = ratio_from_supports(inner.single_score, np.array([is_single_class(t) for t in inner.truth]))
            ratio = ratio if (ratio is not None and ratio > 1) else None
        one = np.zeros(n, bool)
        one[i] = True
        res = leave_one_out(c.embeddings, cls, names, c.rule, min_ratio=ratio, binary=binary, evaluate=one)
        if res.scored[i]:
            scored += 1
            correct += int(res.pred[i] == res.truth[i])
    what = [f"nested leave-one-out over {scored} supports"]
    if len(candidates) > 1:
        what.append(f"the choice among {len(candidates)} readings made without the support scored")
    if min_ratio == "auto":
        what.append("the ratio test fitted without it")
    return Estimate(correct, scored, "; ".join(what))


def fitted_ratio(loo: LooResult) -> float | None:
    """``min_ratio="auto"``: the ratio test :func:`ratio_from_supports` fits on all the supports' leave-one-out
    single-hit scores (None: no ratio test)."""
    ratio = ratio_from_supports(loo.single_score, np.array([is_single_class(t) for t in loo.truth]))
    return ratio if (ratio is not None and ratio > 1) else None


def cluster_agreement(frames: torch.Tensor | np.ndarray, real: tuple[Any, Any, Sequence[str]],
                      sim: tuple[Any, Any, Sequence[str]], rule: str = "nearest") -> float:
    """Share of unlabelled frames given the same single-vs-rest answer by the real supports and by simulated
    labelled shots (a label-free check that the simulated classes sit where the real ones do).

    Args:
        frames: (n, D) embeddings of unlabelled frames of the run.
        real: (embeddings (a, D), class ids (a,), class names) of the real supports.
        sim: the same for simulated labelled shots.
        rule: few-shot rule of both readings.
    """
    answers = []
    for emb, cls, names in (real, sim):
        clf = FewShotClassifier(torch.as_tensor(np.asarray(emb), dtype=torch.float32),
                                torch.as_tensor(np.asarray(cls), dtype=torch.int64), list(names), rule)
        p, _ = clf.predict(torch.as_tensor(np.asarray(frames), dtype=torch.float32))
        answers.append(np.array([is_single_class(names[int(i)]) for i in p.numpy()]))
    return float(np.mean(answers[0] == answers[1])) if len(answers[0]) else float("nan")


__all__ = [
    "RATIO_GRID", "Candidate", "Estimate", "LooResult", "Selection", "cluster_agreement", "fitted_ratio",
    "leave_one_out", "nested_estimate", "ratio_from_supports", "select_candidate", "wilson_interval",
]
