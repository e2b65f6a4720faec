"""Human baselines of a study (``human``): the results of ``spi label --game`` read, checked and scored as records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spisim.errors import ConfigError
from spisim.schema import did_you_mean

from ..metrics import classification_metrics
from ..records import HUMAN_KIND, HUMAN_SOURCE, RunRecord
from .spec import HumanSpec, Study, TestSpec

if TYPE_CHECKING:
    from .sections import HumanEntry


def parse_human(e: HumanEntry, base_dir: Path, tests: dict[str, TestSpec], where: str) -> HumanSpec:
    """One ``human`` entry (built from its declaration): its test found, the game's results file read and checked
    (ConfigError for any fault)."""
    name, test = e.name, e.test.strip()
    if test not in tests:
        raise ConfigError(f"{where}.test: no test set {test!r}{did_you_mean(test, list(tests))}; "
                          f"tests: {', '.join(tests)}")
    given = Path(e.results.strip()).expanduser()
    path = given if given.is_absolute() else base_dir / given
    if not path.is_file():
        raise ConfigError(f"{where}.results: no such file {str(given)!r} (looked in {path.parent})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}.results: {path} is not valid JSON ({exc})") from None
    names = doc.get("class_names") if isinstance(doc, dict) else None
    conf = doc.get("confusion") if isinstance(doc, dict) else None
    if (not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names)
            or len(set(names)) != len(names)):
        raise ConfigError(f"{where}.results: {path} has no list of class_names (not a spi label --game results file)")
    try:
        cm = np.asarray(conf, dtype=np.float64)
    except (TypeError, ValueError):
        cm = np.zeros(0)
    c = len(names)
    if cm.shape != (c, c) or not np.all(cm >= 0) or not np.all(cm == np.round(cm)):
        raise ConfigError(f"{where}.results: {path} needs confusion, a {c}×{c} matrix of counts "
                          "(not a spi label --game results file)")
    if cm.sum() == 0:
        raise ConfigError(f"{where}.results: {path} scores no shots (the game was finished before any label)")
    return HumanSpec(name, path.resolve(), test, list(names), cm.astype(np.int64))


def human_records(study: Study, classes: Sequence[str]) -> list[RunRecord]:
    """Records of the study's human baselines, scored on the study's classes.

    Accuracy, macro F1, per-class and single-hit precision/recall are recomputed with
    :func:`spinet.metrics.classification_metrics` from the game's confusion matrix (one shot per count);
    k is None, one seed, no training.

    Args:
        study: the study (its ``human`` entries).
        classes: the study's class names (C,); every class the person saw or gave must be one of them.
    """
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for i, h in enumerate(study.human):
        used = h.confusion.sum(axis=1) + h.confusion.sum(axis=0)
        for c, name in enumerate(h.class_names):
            if used[c] and name not in index:
                raise ConfigError(f"human[{i}] ({h.name}): class {name!r} of {h.path.name} is not a class of the "
                                  f"study ({', '.join(classes)})")
        t_idx, p_idx = np.nonzero(h.confusion)
        counts = h.confusion[t_idx, p_idx]
        truth = np.repeat([index[h.class_names[t]] for t in t_idx], counts).astype(np.int64)
        guess = np.repeat([index[h.class_names[p]] for p in p_idx], counts).astype(np.int64)
        metrics = classification_metrics(truth, guess, list(classes))
        out.append(RunRecord(h.name, HUMAN_KIND, HUMAN_SOURCE, h.test, h.test, None, None, None, study.seeds[0],
                             metrics, 0, 0.0))
    return out

