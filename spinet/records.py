"""What a study produces and its report reads: the records of its runs.

:mod:`spinet.study` makes them (:class:`StudyResults`), :mod:`spinet.report` turns them into tables, figures and
documents; both import this module and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .labelspace import BINARY_CLASSES, LabelSpace
from .metrics import ClassificationMetrics

if TYPE_CHECKING:
    from .study.spec import Study

SIAMESE, CNN, RESNET, CLASSICAL, PHOTONS = "siamese", "cnn", "resnet", "classical", "photons"
"""Names of the model kinds (``kind`` of a record; each is a class of :mod:`spinet.study.kinds`)."""

SUPPORT_SOURCE = "supports"
"""Training source shown for a model fitted on the supports alone (the photon-count baseline)."""

HUMAN_KIND = "human"
"""Kind of the records of a human baseline (``human`` key of a study)."""

HUMAN_SOURCE = "—"
"""Training source shown for a human baseline."""

NEUTRAL_SWEEP_VALUES = {"fluence_scale": 1.0, "missing_fraction": 0.0}
"""Sweep values that leave the test data as they are."""


@dataclass(frozen=True)
class Perturbation:
    """A change applied to test (and support) shots: ``fluence_scale`` or ``missing_fraction``, or none."""

    key: str | None = None
    value: float | None = None

    @property
    def neutral(self) -> bool:
        """True when the test shots are left as they are (no change, fluence × 1, nothing missing)."""
        return self.key is None or float(self.value) == NEUTRAL_SWEEP_VALUES.get(self.key, float("nan"))

    def __str__(self) -> str:
        if self.key is None:
            return ""
        if self.key == "fluence_scale":
            return f"fluence ×{self.value:g}"
        return f"missing {self.value:g}"


@dataclass
class RunRecord:
    """The scores of one trained model on one test variant with one k (None for models without supports).

    ``k`` is the number of shots per class really used (supports, or training shots of a ``per_class: k``
    source); ``k_asked`` the study's k values this record stands for, when they differ from ``k`` (a pool
    held fewer shots of a class than asked: the draws of those k values are the same shots). The metrics are
    in the label space of the test labels (``metrics.class_names``: the study's classes, or single /
    not_single for a test labelled single vs rest).
    """

    model: str
    kind: str
    source: str
    test: str
    test_base: str
    sweep_key: str | None
    sweep_value: float | None
    k: int | None
    seed: int
    metrics: ClassificationMetrics
    n_train: int
    train_seconds: float
    by_structure: dict[str, list[list[int]]] | None = None
    single_recall_at_98: float = float("nan")
    k_asked: list[int] = field(default_factory=list)
    estimate: dict[str, Any] | None = None
    """What the supports alone say (models that use supports): ``accuracy``, ``correct``, ``n``,
    ``interval_95`` (Wilson) of the leave-one-out reading of the supports, and what was chosen with them
    (``checkpoint``, ``rule``, ``min_ratio``, ``rule_text`` for the photon baseline)."""

    @property
    def asked(self) -> tuple[int, ...]:
        """The study's k values this record answers (``(k,)`` when nothing was capped; () without k)."""
        if self.k_asked:
            return tuple(self.k_asked)
        return () if self.k is None else (self.k,)

    def at_k(self, k: int) -> bool:
        """True for a record without k, or one that answers the study's k value ``k``."""
        return self.k is None or k in self.asked

    @property
    def label_space(self) -> str:
        """``binary`` (single / not_single) or ``N classes``."""
        return label_space_name(self.metrics.class_names)

    def row(self) -> dict[str, Any]:
        """A flat row for CSV and JSON."""
        m = self.metrics
        out = {"model": self.model, "kind": self.kind, "source": self.source, "test": self.test,
               "test_base": self.test_base, "sweep_key": self.sweep_key, "sweep_value": self.sweep_value,
               "k": self.k, "k_asked": list(self.asked) if self.k_asked else None, "seed": self.seed,
               "label_space": self.label_space, "n_test": m.n, "n_train": self.n_train,
               "train_seconds": round(self.train_seconds, 3), "accuracy": m.accuracy, "macro_f1": m.macro_f1,
               "single_precision": m.single_precision, "single_recall": m.single_recall,
               "single_recall_at_98": self.single_recall_at_98, "answered": m.answered}
        e = self.estimate or {}
        out.update({"est_accuracy": e.get("accuracy"), "est_n": e.get("n"),
                    "est_low": (e.get("interval_95") or [None, None])[0],
                    "est_high": (e.get("interval_95") or [None, None])[1],
                    "chosen_checkpoint": e.get("checkpoint"), "chosen_rule": e.get("rule"),
                    "chosen_min_ratio": e.get("min_ratio")})
        for c in m.class_names:
            out[f"precision[{c}]"] = m.precision[c]
            out[f"recall[{c}]"] = m.recall[c]
        return out


@dataclass
class Prediction:
    """Predictions kept for plots: truth, predicted ids, single-hit scores (n,), and for Siamese models the
    query and support embeddings (n, D) and support class ids."""

    truth: np.ndarray
    pred: np.ndarray
    single_score: np.ndarray | None
    embeddings: np.ndarray | None = None
    support_embeddings: np.ndarray | None = None
    support_classes: np.ndarray | None = None
    structure: np.ndarray | None = None
    class_names: list[str] | None = None
    """Names of the ids in truth, pred and support_classes (None: the study's classes)."""
    k: int | None = None
    """The k really used (supports or training shots per class), as in the record."""
    estimate: dict[str, Any] | None = None
    """The supports' own reading (leave-one-out) and what was chosen with them (see ``RunRecord.estimate``)."""


@dataclass
class ThroughputRecord:
    """Inference speed of one model (from raw frames in memory to predicted classes)."""

    model: str
    kind: str
    source: str
    device: str
    threads: int
    shots_per_s: float
    seconds_per_batch: float
    batch_size: int
    n_shots: int


@dataclass
class StudyResults:
    """Everything a report needs."""

    study: Study
    classes: list[str]
    records: list[RunRecord]
    predictions: dict[tuple, Prediction]
    throughput: list[ThroughputRecord]
    datasets: list[dict]
    train_logs: dict[str, list[dict]]
    seconds: float
    device: str
    created: str
    notes: list[str] = field(default_factory=list)
    """Warnings about the runs (k values a pool could not supply), shown in the report."""


def label_space_name(class_names: Sequence[str]) -> str:
    """``binary`` for single / not_single, else ``N classes``."""
    space = LabelSpace(tuple(class_names), tuple(class_names) == BINARY_CLASSES)
    return space.name


__all__ = ["CLASSICAL", "CNN", "HUMAN_KIND", "HUMAN_SOURCE", "NEUTRAL_SWEEP_VALUES", "PHOTONS", "RESNET", "SIAMESE",
           "SUPPORT_SOURCE", "Perturbation", "Prediction", "RunRecord", "StudyResults", "ThroughputRecord",
           "label_space_name"]
