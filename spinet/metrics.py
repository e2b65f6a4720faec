"""Classification metrics of a hit classifier, and their mean ± spread over repeated runs.

Conventions (the same as scikit-learn's with ``zero_division=0`` where a value is needed for an average):

* ``truth`` and ``pred`` are class ids in [0, C); a prediction of −1 means "unknown" and is always wrong.
* Precision of a class that was never predicted is NaN in the per-class table (undefined) and counts as
  0 in its F1; recall of a class absent from the truth is NaN.
* Macro F1 is the unweighted mean of the per-class F1 over the classes that occur in the truth or in the
  predictions (scikit-learn's default label set).
* Single-hit precision and recall treat the problem as binary: a shot is a *single hit* when its class
  name is ``single`` or ends in ``/single`` (the (structure, hit type) labels); this is what matters for
  a reconstruction, which keeps the shots predicted single.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spisim.jsonutil import json_safe  # re-exported: spinet.report and spinet.labelspace take it from here


def is_single_class(name: str) -> bool:
    """True for the single-hit class names ``single`` and ``<structure>/single``."""
    return name == "single" or name.endswith("/single")


def _as_ids(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class ids")
    return arr.astype(np.int64)


def confusion_matrix(truth: Any, pred: Any, n_classes: int) -> np.ndarray:
    """Counts (C, C + 1): row = true class, column = predicted class; the last column counts "unknown" (−1).

    Args:
        truth: (n,) true class ids in [0, C).
        pred: (n,) predicted class ids in [0, C) or −1.
        n_classes: C.
    """
    t, p = _as_ids(truth, "truth"), _as_ids(pred, "pred")
    if t.shape != p.shape:
        raise ValueError(f"truth and pred differ in length: {t.size} and {p.size}")
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise ValueError(f"true class ids must lie in [0, {n_classes})")
    if p.size and (p.min() < -1 or p.max() >= n_classes):
        raise ValueError(f"predicted class ids must lie in [-1, {n_classes})")
    col = np.where(p < 0, n_classes, p)
    cm = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    np.add.at(cm, (t, col), 1)
    return cm


def confusion_by_group(groups: Sequence[str], truth: Any, pred: Any, n_classes: int) -> dict[str, list[list[int]]]:
    """One confusion matrix (C, C + 1) per group name (e.g. the structure of each shot), as nested lists.

    Args:
        groups: (n,) a name per shot; shots of the same name are counted together.
        truth, pred, n_classes: as :func:`confusion_matrix`.
    """
    g = np.asarray(groups, dtype=object)
    t, p = _as_ids(truth, "truth"), _as_ids(pred, "pred")
    if g.shape != t.shape:
        raise ValueError(f"groups and truth differ in length: {g.size} and {t.size}")
    return {str(name): confusion_matrix(t[g == name], p[g == name], n_classes).tolist()
            for name in sorted(set(g.tolist()), key=str)}


@dataclass
class ClassificationMetrics:
    """Metrics of one classifier on one test set.

    Attributes:
        n: shots scored.
        accuracy: fraction of shots predicted as their true class.
        macro_f1: mean F1 over the classes present in truth or predictions.
        precision, recall, f1: per class name (NaN where undefined, see the module docstring).
        support: true shots per class name.
        single_precision, single_recall: binary single-hit precision and recall (NaN where undefined,
            e.g. no single class among the names).
        confusion: (C, C + 1) counts, last column "unknown".
        class_names: the C names, in id order.
        answered: share of shots given a class (1 − the share answered "unknown").
    """

    n: int
    accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    single_precision: float
    single_recall: float
    confusion: list[list[int]]
    class_names: list[str]
    answered: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN becomes None)."""
        return json_safe(asdict(self))


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def classification_metrics(truth: Any, pred: Any, class_names: Sequence[str]) -> ClassificationMetrics:
    """Accuracy, macro F1, per-class precision/recall/F1, single-hit precision/recall and the confusion matrix.

    Args:
        truth: (n,) true class ids in [0, C).
        pred: (n,) predicted class ids in [0, C), or −1 for "unknown".
        class_names: the C class names.
    """
    names = list(class_names)
    c = len(names)
    cm = confusion_matrix(truth, pred, c)
    n = int(cm.sum())
    tp = np.diag(cm[:, :c]).astype(np.float64)
    true_n = cm.sum(axis=1).astype(np.float64)
    pred_n = cm[:, :c].sum(axis=0).astype(np.float64)
    precision = {names[i]: _div(tp[i], pred_n[i]) for i in range(c)}
    recall = {names[i]: _div(tp[i], true_n[i]) for i in range(c)}
    f1 = {}
    for i in range(c):
        denom = true_n[i] + pred_n[i]
        f1[names[i]] = 2 * tp[i] / denom if denom else float("nan")
    present = [i for i in range(c) if true_n[i] > 0 or pred_n[i] > 0]
    macro = float(np.mean([f1[names[i]] for i in present])) if present else float("nan")
    single = np.array([is_single_class(x) for x in names], dtype=bool)
    if single.any():
        s_tp = float(cm[np.ix_(single, np.append(single, False))].sum())
        s_pred = float(cm[:, :c][:, single].sum())
        s_true = float(cm[single].sum())
        s_prec, s_rec = _div(s_tp, s_pred), _div(s_tp, s_true)
    else:
        s_prec = s_rec = float("nan")
    return ClassificationMetrics(
        n=n,
        accuracy=_div(tp.sum(), n),
        macro_f1=macro,
        precision=precision,
        recall=recall,
        f1=f1,
        support={names[i]: int(true_n[i]) for i in range(c)},
        single_precision=s_prec,
        single_recall=s_rec,
        confusion=cm.tolist(),
        class_names=names,
        answered=_div(cm[:, :c].sum(), n),
    )


@dataclass
class PRCurve:
    """Single-hit precision–recall curve: precision (m,), recall (m,), thresholds (m − 1,) on the score,
    and the average precision (area under the step curve)."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    average_precision: float


def single_hit_pr_curve(truth: Any, scores: Any, class_names: Sequence[str]) -> PRCurve | None:
    """Precision–recall curve of "single hit" against a per-shot single-hit score.

    Args:
        truth: (n,) true class ids.
        scores: (n,) higher = more likely a single hit (e.g. a probability, or minus a distance).
        class_names: class names (single-hit classes per :func:`is_single_class`).

    Returns:
        The curve, or None when the truth has no single hit or only single hits.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    t = _as_ids(truth, "truth")
    s = np.asarray(scores, dtype=np.float64)
    single = np.array([is_single_class(x) for x in class_names], dtype=bool)
    y = single[t] if t.size else np.zeros(0, bool)
    if y.size == 0 or y.all() or not y.any():
        return None
    p, r, th = precision_recall_curve(y, s)
    return PRCurve(p, r, th, float(average_precision_score(y, s)))


SINGLE_PRECISION_TARGET = 0.98
"""The project's single-hit precision target (what a reconstruction needs of a single-hit set)."""


def recall_at_precision(curve: PRCurve | None, target: float = SINGLE_PRECISION_TARGET) -> float:
    """The largest single-hit recall at which the precision is still ≥ ``target`` (0 when no threshold
    reaches it; NaN without a curve): how many true single hits a threshold on the score can keep at that
    purity. It reads the curve of the scored shots themselves, so it is the best such threshold, not one
    chosen in advance."""
    if curve is None:
        return float("nan")
    ok = curve.precision >= target
    return float(curve.recall[ok].max()) if ok.any() else 0.0


@dataclass
class Throughput:
    """Inference speed: shots per second over ``n_shots`` in batches of ``batch_size`` (after a warm-up
    batch), and the mean seconds per batch."""

    shots_per_s: float
    seconds_per_batch: float
    batch_size: int
    n_shots: int

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def measure_throughput(predict: Callable[[Any], Any], batches: Sequence[Any], sizes: Sequence[int] | None = None,
                       warmup: int = 1, min_seconds: float = 0.0) -> Throughput:
    """Time ``predict`` over ``batches`` (wall clock, after ``warmup`` untimed calls on the first batch).

    Args:
        predict: called with one batch; its result is discarded.
        batches: the inputs, e.g. frames (B, M, SS, FS) per batch.
        sizes: shots in each batch; default ``len(batch)``.
        warmup: untimed calls before timing.
        min_seconds: repeat the pass over all batches until at least this long has been timed.
    """
    if not len(batches):
        raise ValueError("no batches to time")
    sizes = [len(b) for b in batches] if sizes is None else list(sizes)
    for _ in range(warmup):
        predict(batches[0])
    n_shots = n_batches = 0
    t0 = time.perf_counter()
    while True:
        for b, n in zip(batches, sizes, strict=True):
            predict(b)
            n_shots += int(n)
            n_batches += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    elapsed = max(elapsed, 1e-9)
    return Throughput(n_shots / elapsed, elapsed / n_batches, int(max(sizes)), n_shots)


@dataclass
class Spread:
    """Mean ± spread of one figure over repeated runs (seeds): sample standard deviation (ddof 1; NaN for
    one run), minimum, maximum, and the number of finite values."""

    mean: float
    std: float
    min: float
    max: float
    n: int

    def format(self, digits: int = 3, percent: bool = False) -> str:
        """``0.953 ± 0.012`` (or ``95.3 ± 1.2 %``); ``—`` when there is no value."""
        if self.n == 0 or math.isnan(self.mean):
            return "—"
        scale, unit = (100.0, " %") if percent else (1.0, "")
        d = max(digits - 2, 0) if percent else digits
        m = f"{self.mean * scale:.{d}f}"
        if self.n < 2 or math.isnan(self.std):
            return m + unit
        return f"{m} ± {self.std * scale:.{d}f}{unit}"

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def spread(values: Sequence[float]) -> Spread:
    """:class:`Spread` of the finite values among ``values``."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        nan = float("nan")
        return Spread(nan, nan, nan, nan, 0)
    std = float(np.std(v, ddof=1)) if v.size > 1 else float("nan")
    return Spread(float(v.mean()), std, float(v.min()), float(v.max()), int(v.size))



