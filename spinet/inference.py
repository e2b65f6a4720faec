"""Embed and classify whole files in batches with a trained model (what ``spi classify`` runs).

The support set defines the classes: a labelled file (all its labelled shots), or k shots per class
drawn from a labelled dataset. Shots are read, preprocessed and embedded ``batch_size`` at a time, so
files of any size stream through in constant memory.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spisim.cxi import CXIReader
from spisim.errors import InputFileError

from .checkpoint import ModelBundle
from .data import UNKNOWN, file_labels, order_classes, pick_per_class
from .export import inference_module
from .fewshot import FewShotClassifier


def iter_embeddings(
    bundle: ModelBundle,
    reader: CXIReader,
    indices: np.ndarray | None = None,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (shot indices (b,), embeddings (b, D) on CPU) batch by batch.

    Args:
        bundle: the trained model.
        reader: the data file.
        indices: shots to embed (default: all, in order).
        batch_size: shots per batch.
        on_batch: called with the number of shots after each batch (progress).
    """
    idx = np.arange(len(reader)) if indices is None else np.asarray(indices, dtype=np.int64)
    pre = bundle.preprocessor_for(reader.frame_shape, reader.pixel_position, reader.mask).to(bundle.device)
    module = inference_module(bundle, pre)
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            sel = idx[start : start + batch_size]
            frames = torch.from_numpy(reader.frames(sel)).to(bundle.device)
            yield sel, module(frames).cpu()
            if on_batch is not None:
                on_batch(len(sel))


@dataclass
class SupportSet:
    """Support embeddings (n, D), class ids (n,), class names, and where they came from."""

    embeddings: torch.Tensor
    classes: torch.Tensor
    class_names: list[str]
    source: str

    def counts(self) -> dict[str, int]:
        c = torch.bincount(self.classes, minlength=len(self.class_names))
        return {n: int(c[i]) for i, n in enumerate(self.class_names)}


def build_support(
    bundle: ModelBundle,
    path: str | Path,
    *,
    labels: str | Path | None = None,
    k: int | None = None,
    seed: int = 0,
    label_mode: str = "hit_type",
    batch_size: int = 256,
) -> SupportSet:
    """Embed a support set from a labelled file.

    Args:
        bundle: the trained model.
        path: CXI/HDF5 file with labels inside or with ``labels``.
        labels: label file for ``path`` (CSV or HDF5), for real data.
        k: shots per class drawn at random (seeded); None: every labelled shot.
        seed: seed of that draw.
        label_mode: ``hit_type`` or ``structure_hit_type``.
    """
    with CXIReader(path) as reader:
        idx, names = file_labels(reader, label_mode, labels)
        if len(idx) == 0:
            raise InputFileError(f"{path}: no labelled shots for the support set")
        class_names = order_classes(names)
        cls = np.array([class_names.index(n) for n in names], dtype=np.int64)
        if k is not None:
            sel = pick_per_class(cls, k, seed)
            idx, cls = idx[sel], cls[sel]
        order = np.argsort(idx, kind="stable")
        emb = torch.cat([e for _, e in iter_embeddings(bundle, reader, idx[order], batch_size)])
    return SupportSet(emb, torch.from_numpy(cls[order]), class_names, str(path))


@dataclass
class ClassifyResult:
    """Predictions of a file."""

    n_shots: int
    counts: dict[str, int]
    accuracy: float | None
    output: Path | None


def classify_file(
    bundle: ModelBundle,
    path: str | Path,
    support: SupportSet,
    *,
    rule: str = "mean",
    threshold: float | None = None,
    min_ratio: float | None = None,
    output: str | Path | None = None,
    batch_size: int = 256,
    truth_labels: str | Path | None = None,
    label_mode: str = "hit_type",
    on_batch: Callable[[int], None] | None = None,
) -> ClassifyResult:
    """Classify every shot of ``path`` against ``support``; write ``output`` CSV when given.

    The CSV has one row per shot: ``index,label,distance_<class>...`` (squared embedding distances under
    the rule), plus ``truth`` where the file has labels (or ``truth_labels`` is given). ``threshold`` and
    ``min_ratio`` answer "unknown" as in :class:`spinet.fewshot.FewShotClassifier`.
    """
    clf = FewShotClassifier(support.embeddings, support.classes, support.class_names, rule, threshold,
                            min_ratio=min_ratio)
    names = support.class_names
    counts = {n: 0 for n in names}
    if threshold is not None or (min_ratio is not None and min_ratio > 1):
        counts[UNKNOWN] = 0
    with CXIReader(path) as reader:
        truth: dict[int, str] | None = None
        if truth_labels is not None or reader.has_labels:
            tidx, tnames = file_labels(reader, label_mode, truth_labels)
            truth = {int(i): n for i, n in zip(tidx, tnames, strict=True)}
        correct = judged = 0
        writer = fh = None
        if output is not None:
            fh = open(output, "w", newline="", encoding="utf-8")
            writer = csv.writer(fh)
            writer.writerow(
                ["index", "label", *(f"distance_{n}" for n in names), *(["truth"] if truth is not None else [])]
            )
        try:
            n_shots = 0
            for sel, emb in iter_embeddings(bundle, reader, None, batch_size, on_batch):
                pred, dist = clf.predict(emb)
                for i, p, drow in zip(sel, pred.tolist(), dist.numpy(), strict=True):
                    label = UNKNOWN if p < 0 else names[p]
                    counts[label] += 1
                    t = truth.get(int(i)) if truth is not None else None
                    if t is not None:
                        judged += 1
                        correct += int(t == label)
                    if writer is not None:
                        writer.writerow(
                            [int(i), label, *(f"{v:.6g}" for v in drow), *([t or ""] if truth is not None else [])]
                        )
                n_shots += len(sel)
        finally:
            if fh is not None:
                fh.close()
    acc = correct / judged if judged else None
    return ClassifyResult(n_shots, counts, acc, None if output is None else Path(output))
