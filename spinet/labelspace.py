"""Label spaces: the set of classes that answers, truth labels and every summary are given in.

A model knows the classes of its supports (or of its training data), e.g. the four hit types; a real run
may be labelled only ``single`` / ``not_single``. Two label spaces:

* **full**: the classes as they are (every support class and every truth class, in
  :func:`spinet.data.order_classes` order);
* **binary**: ``single`` / ``not_single``. A class is single when :func:`spinet.metrics.is_single_class`
  says so (``single``, ``STRUCTURE/single``); every other class (``no_hit``, ``multi``, ``unintended``,
  ``not_single`` ...) is ``not_single``. A 4-class model thereby answers single-vs-rest.

:func:`choose_label_space` picks the space: binary when asked, else binary when the truth labels (or, without
truth labels, the supports) are only ``single`` / ``not_single``, else full. ``unknown`` (the ratio test or the
threshold) and ``invalid`` (a frame with no finite pixel) are answers outside every space: an unknown answer
is scored as wrong, an invalid shot is not scored at all.

:func:`score` scores names against names in a space (accuracy, single-hit precision and recall, the confusion
matrix, with the number of shots); :class:`Summary` adds what was left out and writes text and JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spisim.cxi import NOT_SINGLE
from spisim.jsonutil import json_safe

from .data import UNKNOWN, order_classes
from .metrics import ClassificationMetrics, classification_metrics, is_single_class

SINGLE = "single"
BINARY_CLASSES: tuple[str, str] = (SINGLE, NOT_SINGLE)
"""The classes of the binary label space, in this order."""

INVALID = "invalid"
"""Label of a frame with no finite pixel where the model looks: never given a class, never scored."""


@dataclass(frozen=True)
class LabelSpace:
    """A set of classes answers are given in.

    Attributes:
        classes: the class names, in order (``single``, ``not_single`` for the binary space).
        binary: True for the single / not_single space.
    """

    classes: tuple[str, ...]
    binary: bool = False

    @classmethod
    def make_binary(cls) -> LabelSpace:
        return cls(BINARY_CLASSES, True)

    @classmethod
    def full(cls, classes: Iterable[str]) -> LabelSpace:
        return cls(tuple(order_classes(classes)), False)

    def map(self, name: str) -> str:
        """A class name in this space (``unknown`` and ``invalid`` stay as they are)."""
        if not self.binary or name in (UNKNOWN, INVALID):
            return name
        return SINGLE if is_single_class(name) else NOT_SINGLE

    def map_all(self, names: Iterable[str]) -> list[str]:
        return [self.map(n) for n in names]

    def map_ids(self, ids: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Class ids into ``names`` (−1 = unknown) → ids into :attr:`classes` (−1 stays −1)."""
        index = {c: i for i, c in enumerate(self.classes)}
        table = np.array([index[self.map(n)] for n in names] + [-1], dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64)
        return table[np.where(ids < 0, len(names), ids)]

    @property
    def name(self) -> str:
        """``binary`` or ``N classes``."""
        return "binary" if self.binary else f"{len(self.classes)} classes"

    def describe(self) -> str:
        """E.g. ``binary (single / not_single)`` or ``4 classes (no_hit, single, multi, unintended)``."""
        sep = " / " if self.binary else ", "
        return f"{self.name} ({sep.join(self.classes)})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "binary": self.binary, "classes": list(self.classes)}


def is_binary_names(names: Iterable[str]) -> bool:
    """True when ``names`` hold ``not_single`` and nothing but ``single`` besides (labels of a single-vs-rest run)."""
    found = set(names)
    return NOT_SINGLE in found and found <= set(BINARY_CLASSES)


def choose_label_space(truth: Iterable[str] | None, support: Iterable[str], binary: bool | None = None) -> LabelSpace:
    """The label space of a classification.

    Args:
        truth: the truth labels given (names; None or empty: none).
        support: the support class names.
        binary: True: single / not_single whatever the labels; False: the full space; None: binary when the
            truth labels, or without any the supports, are only single / not_single.
    """
    truth = list(truth or [])
    support = list(support)
    if binary is None:
        binary = is_binary_names(truth) if truth else is_binary_names(support)
    if binary:
        return LabelSpace.make_binary()
    return LabelSpace.full([*support, *truth])


def score(truth: Sequence[str], pred: Sequence[str], space: LabelSpace) -> ClassificationMetrics:
    """Metrics of predicted names against true names, both mapped into ``space``.

    Args:
        truth: (n,) true class names (any class of the space before mapping).
        pred: (n,) predicted class names, or ``unknown`` (counted wrong, the last confusion column).
        space: the label space.
    """
    if len(truth) != len(pred):
        raise ValueError(f"truth and pred differ in length: {len(truth)} and {len(pred)}")
    index = {c: i for i, c in enumerate(space.classes)}
    t = np.array([index[space.map(n)] for n in truth], dtype=np.int64)
    p = np.array([-1 if n == UNKNOWN else index[space.map(n)] for n in pred], dtype=np.int64)
    return classification_metrics(t, p, list(space.classes))


def class_counts_text(counts: dict[str, int]) -> str:
    """Shots per class in words: ``single 12, not_single 7``."""
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def _count(num: float, den: float) -> str:
    return f"{int(num)} of {int(den)}"


@dataclass
class Summary:
    """A scored classification: the label space, the metrics of the scored shots, and what was not scored.

    Attributes:
        space: the label space of the answers and the truth.
        metrics: of the scored shots (``metrics.n`` of them).
        left_out: shots not scored, by reason (``support``: a support shot itself; ``invalid``: no finite
            pixel; ``unlabelled``: no truth label).
    """

    space: LabelSpace
    metrics: ClassificationMetrics
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.metrics.n

    def single_counts(self) -> tuple[int, int, int]:
        """(true single hits predicted single, shots predicted single, true single hits)."""
        names = self.metrics.class_names
        cm = np.asarray(self.metrics.confusion)
        single = np.array([is_single_class(c) for c in names], dtype=bool)
        if not single.any():
            return 0, 0, 0
        c = len(names)
        tp = int(cm[np.ix_(single, np.append(single, False))].sum())
        return tp, int(cm[:, :c][:, single].sum()), int(cm[single].sum())

    def headline(self) -> str:
        """One line: label space, number of scored shots, accuracy, single-hit precision and recall."""
        m = self.metrics
        if m.n == 0:
            return f"no shot scored ({self.space.describe()})" + self._left_out_text()
        tp, pp, tt = self.single_counts()
        parts = [f"accuracy {m.accuracy:.3f} ({_count(round(m.accuracy * m.n), m.n)})"]
        parts.append("single precision " + ("—" if pp == 0 else f"{m.single_precision:.3f} ({_count(tp, pp)})"))
        parts.append("single recall " + ("—" if tt == 0 else f"{m.single_recall:.3f} ({_count(tp, tt)})"))
        return f"{self.space.describe()}, n = {m.n} scored shots: " + ", ".join(parts) + self._left_out_text()

    def _left_out_text(self) -> str:
        out = [f"{n} {why}" for why, n in self.left_out.items() if n]
        return f"; not scored: {', '.join(out)}" if out else ""

    def confusion_rows(self) -> tuple[list[str], list[list[str]]]:
        """(header, rows) of the confusion matrix: one row per true class, one column per predicted class
        (``unknown`` only where some shot got it)."""
        names = self.metrics.class_names
        cm = np.asarray(self.metrics.confusion, dtype=np.int64)
        c = len(names)
        unknown = bool(cm[:, c].sum()) if cm.size else False
        cols = names + ([UNKNOWN] if unknown else [])
        header = ["true \\ predicted", *cols, "shots"]
        rows = []
        for i, name in enumerate(names):
            counts = cm[i, : c + (1 if unknown else 0)]
            rows.append([name, *(str(int(v)) for v in counts), str(int(cm[i].sum()))])
        return header, rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: label space, n, accuracy, single precision/recall (with counts), per class, confusion."""
        m = self.metrics
        tp, pp, tt = self.single_counts()
        names = m.class_names
        return json_safe({
            "label_space": self.space.to_dict(),
            "n_scored": m.n,
            "not_scored": dict(self.left_out),
            "accuracy": m.accuracy,
            "single_precision": m.single_precision,
            "single_recall": m.single_recall,
            "single_counts": {"predicted_single_and_single": tp, "predicted_single": pp, "single": tt},
            "macro_f1": m.macro_f1,
            "precision": m.precision,
            "recall": m.recall,
            "support": m.support,
            "answered": m.answered,
            "confusion": {"true": names, "predicted": [*names, UNKNOWN], "counts": m.confusion},
        })


__all__ = [
    "BINARY_CLASSES", "INVALID", "SINGLE", "UNKNOWN", "LabelSpace", "Summary", "choose_label_space",
    "class_counts_text", "is_binary_names", "score",
]
