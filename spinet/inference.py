"""Embed and classify whole files in batches with a trained model (what ``spi classify`` runs).

The support set defines the classes: one or more labelled files (:class:`SupportSpec`: all labelled shots of
a file, or k per class drawn at random), each with its own labels; the classes are the union of theirs, so a
simulated 4-class support and a real support labelled single / not_single can be used together. Shots are
read, preprocessed and embedded ``batch_size`` at a time, so files of any size stream through in constant
memory.

What is scored (:func:`classify_file`): every shot of the data file that has a truth label, is not itself a
support shot (same file, same index) and has a finite pixel where the model looks. Answers and the summary
are in one label space (:mod:`spinet.labelspace`): the truth labels' (binary for single / not_single labels),
or binary when asked. The predictions CSV and its JSON summary are written under temporary names and renamed
when complete; existing outputs are replaced only with ``overwrite``.

With few labelled real shots, :func:`adapt_bundle` re-estimates a model's batch-norm statistics on the run's
frames (AdaBN, ``spi classify --adapt``), :func:`select_reading` chooses among checkpoints and rules by
leave-one-out over the supports and :func:`support_estimate` gives that estimate of the accuracy with its n
and Wilson interval (:mod:`spinet.selection`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spisim.cxi import CXIReader
from spisim.errors import ConfigError, InputFileError, OutputFileError

from .checkpoint import ModelBundle
from .data import UNKNOWN, file_labels, label_names_for, order_classes, pick_per_class
from .fewshot import FewShotClassifier
from .labelspace import (
    INVALID,
    LabelSpace,
    Summary,
    choose_label_space,
    class_counts_text,
    is_binary_names,
    score,
)
from .metrics import is_single_class

# ------------------------------------------------------------------------------------------------ embedding


def embed_batches(
    bundle: ModelBundle,
    reader: CXIReader,
    indices: np.ndarray | None = None,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor, np.ndarray]]:
    """Yield (shot indices (b,), embeddings (b, D) on CPU, valid (b,) bool) batch by batch.

    A shot is invalid when its frame has no finite unmasked pixel inside the crop the model sees
    (:meth:`spinet.preprocess.Preprocessor.has_data`); its embedding is that of an empty image and must not
    be given a class.

    Args:
        bundle: the trained model.
        reader: the data file.
        indices: shots to embed (default: all, in order).
        batch_size: shots per batch.
        on_batch: called with the number of shots after each batch (progress).
    """
    model = bundle.model.eval()
    with torch.no_grad():
        for sel, images, ok in iter_images(bundle, reader, indices, batch_size):
            yield sel, model(images).cpu(), ok
            if on_batch is not None:
                on_batch(len(sel))


def iter_images(
    bundle: ModelBundle, reader: CXIReader, indices: np.ndarray | None = None, batch_size: int = 256
) -> Iterator[tuple[np.ndarray, torch.Tensor, np.ndarray]]:
    """Yield (shot indices (b,), network inputs (b, 1, S, S) on the model's device, valid (b,) bool) batch by
    batch: the model's preprocessing for the file's detector (see :func:`embed_batches`)."""
    idx = np.arange(len(reader)) if indices is None else np.asarray(indices, dtype=np.int64)
    pre = bundle.preprocessor_for(reader.frame_shape, reader.pixel_position, reader.mask).to(bundle.device)
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            sel = idx[start : start + batch_size]
            frames = torch.from_numpy(reader.frames(sel)).to(bundle.device)
            img, valid = pre.assemble_valid(frames)  # one pass: the same as inference_module(bundle, pre)(frames)
            yield sel, pre.normalise(img, valid), valid.flatten(1).any(dim=1).cpu().numpy()


def require_data(bundle: ModelBundle, path: str | Path) -> int:
    """Check that some frame of ``path`` has a finite unmasked pixel where the model looks, reading frames one by
    one until the first that has (in a usable file: the first frame).

    Returns:
        the number of shots in the file.

    Raises:
        InputFileError: the file holds no shot, or no frame with a finite pixel (nothing to classify).
    """
    with CXIReader(path) as reader:
        n = len(reader)
        pre = bundle.preprocessor_for(reader.frame_shape, reader.pixel_position, reader.mask).to(bundle.device)
        with torch.no_grad():
            for i in range(n):
                if bool(pre.has_data(torch.from_numpy(reader.frames([i])).to(bundle.device)).any()):
                    return n
    raise InputFileError(f"{path}: no shot has a finite pixel where the model looks ({n} shots): nothing to classify")


def adapt_bundle(bundle: ModelBundle, path: str | Path, *, max_shots: int | None = 2000, batch_size: int = 256
                 ) -> tuple[ModelBundle, int]:
    """AdaBN on a run: a copy of ``bundle`` whose batch-norm statistics are re-estimated on the frames of ``path``
    (labels unused; at most ``max_shots`` frames spread evenly over the file; frames without data left out).

    Returns:
        (the adapted copy, the number of frames used). A network without batch-norm layers comes back unchanged
        (with the number of frames 0).
    """
    import copy
    from dataclasses import replace

    from .adapt import adapt_batchnorm, batchnorm_layers

    if not batchnorm_layers(bundle.model):
        return bundle, 0
    with CXIReader(path) as reader:
        n = len(reader)
        idx = np.arange(n)
        if max_shots is not None and n > max_shots:
            idx = np.unique(np.linspace(0, n - 1, max_shots).round().astype(np.int64))
        used = [0]

        def batches() -> Iterator[torch.Tensor]:
            for _, images, ok in iter_images(bundle, reader, idx, batch_size):
                used[0] += int(ok.sum())
                yield images[torch.from_numpy(ok).to(images.device)]

        net = copy.deepcopy(bundle.model)
        adapt_batchnorm(net, batches(), bundle.device)
    return replace(bundle, model=net), used[0]


def iter_embeddings(
    bundle: ModelBundle,
    reader: CXIReader,
    indices: np.ndarray | None = None,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (shot indices (b,), embeddings (b, D) on CPU) batch by batch (:func:`embed_batches` without the
    validity; an invalid frame's embedding is that of an empty image)."""
    for sel, emb, _ in embed_batches(bundle, reader, indices, batch_size, on_batch):
        yield sel, emb


# ------------------------------------------------------------------------------------------------ supports


SUPPORT_KEYS = ("labels", "k", "seed")
"""The keys of a ``--support FILE[,labels=LABELS][,k=K][,seed=S]`` value."""


@dataclass(frozen=True)
class SupportSpec:
    """One labelled support file: ``path``, its label file (None: labels inside), ``k`` shots per class drawn
    with ``seed`` (None: every labelled shot)."""

    path: Path
    labels: Path | None = None
    k: int | None = None
    seed: int = 0

    @classmethod
    def parse(cls, text: str, labels: str | Path | None = None, k: int | None = None, seed: int = 0) -> SupportSpec:
        """One ``--support`` value, ``FILE[,labels=LABELS][,k=K][,seed=S]`` (``spi classify``, ``spi stream``).

        Args:
            text: the value. A path that exists with commas in its name is taken whole.
            labels, k, seed: defaults for the keys the value does not give (``--support-labels``, ``-k``,
                ``--seed``).

        Raises:
            ConfigError: an empty file name, an unknown or repeated key, a k or seed that is not an integer, k < 1,
                or a label file given both in the value and in ``labels``.
        """
        usage = "use FILE[,labels=LABELS][,k=K][,seed=S]"
        if Path(text).exists() or "," not in text:
            head, rest = text, []
        else:
            head, *rest = text.split(",")
        if not head:
            raise ConfigError(f"--support {text!r}: empty file name; {usage}")
        given: dict[str, str] = {}
        for part in rest:
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in SUPPORT_KEYS or key in given:
                what = "repeated" if key in given else "bad"
                raise ConfigError(f"--support {text!r}: {what} option {part!r}; {usage}")
            given[key] = value.strip()
        if "labels" in given and labels is not None:
            raise ConfigError(f"--support {text!r}: give the support's label file once: in FILE,labels=L or "
                              "--support-labels")
        values: dict[str, Any] = {"k": k, "seed": seed}
        for key in ("k", "seed"):
            if key in given:
                try:
                    values[key] = int(given[key])
                except ValueError:
                    raise ConfigError(f"--support {text!r}: {key} must be an integer, got {given[key]!r}") from None
        if "k" in given and values["k"] < 1:
            raise ConfigError(f"--support {text!r}: k must be >= 1, got {given['k']}")
        lab = given.get("labels", labels)
        return cls(Path(head), None if lab is None else Path(lab), values["k"], values["seed"])

    def describe(self) -> str:
        opts = [f"labels={self.labels}"] if self.labels else []
        opts += [f"k={self.k}", f"seed={self.seed}"] if self.k is not None else []
        return ",".join([str(self.path), *opts])


@dataclass
class SupportSet:
    """Support embeddings (n, D), class ids (n,), class names, and where they came from.

    Attributes:
        members: resolved file path → sorted file indices of the shots used as supports (never scored).
        parts: one dict per support file: path, labels, k, seed, counts per class.
    """

    embeddings: torch.Tensor
    classes: torch.Tensor
    class_names: list[str]
    source: str
    members: dict[str, np.ndarray] = field(default_factory=dict)
    parts: list[dict] = field(default_factory=list)
    files: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    """(n,) resolved path of the file each support comes from."""

    def counts(self) -> dict[str, int]:
        c = torch.bincount(self.classes, minlength=len(self.class_names))
        return {n: int(c[i]) for i, n in enumerate(self.class_names)}

    def is_member(self, path: str | Path, indices: np.ndarray) -> np.ndarray:
        """(n,) bool: which shots ``indices`` of file ``path`` are support shots."""
        own = self.members.get(_key(path))
        if own is None:
            return np.zeros(len(indices), dtype=bool)
        return np.isin(np.asarray(indices, dtype=np.int64), own)


def _key(path: str | Path) -> str:
    return str(Path(path).resolve())


def build_support(
    bundle: ModelBundle,
    path: str | Path,
    *,
    labels: str | Path | None = None,
    k: int | None = None,
    seed: int = 0,
    label_mode: str = "hit_type",
    batch_size: int = 256,
    class_names: Sequence[str] | None = None,
) -> SupportSet:
    """Embed a support set from one labelled file.

    Args:
        bundle: the trained model.
        path: CXI/HDF5 file with labels inside or with ``labels``.
        labels: label file for ``path`` (CSV or HDF5), for real data.
        k: shots per class drawn at random (seeded); None: every labelled shot. Must not exceed what the
            smallest class holds (InputFileError naming each class's count).
        seed: seed of that draw.
        label_mode: ``hit_type`` or ``structure_hit_type``.
        class_names: names ``labels`` may use besides :data:`spisim.cxi.LABEL_CLASSES` (default: the model's).

    Raises:
        InputFileError: no labelled shot, k too large, or a support frame without a finite pixel.
    """
    allowed = label_names_for(label_mode, bundle.class_names if class_names is None else class_names)
    with CXIReader(path) as reader:
        idx, names = file_labels(reader, label_mode, labels, class_names=allowed)
        if len(idx) == 0:
            raise InputFileError(f"{path}: no labelled shots for the support set")
        found = order_classes(names)
        cls = np.array([found.index(n) for n in names], dtype=np.int64)
        have = {n: int(c) for n, c in zip(found, np.bincount(cls, minlength=len(found)), strict=True)}
        if k is not None:
            if k > min(have.values()):
                raise InputFileError(f"{path}: k = {k} supports per class is more than its labelled shots hold "
                                     f"({class_counts_text(have)}): give k <= {min(have.values())}")
            sel = pick_per_class(cls, k, seed)
            idx, cls = idx[sel], cls[sel]
        order = np.argsort(idx, kind="stable")
        idx, cls = idx[order], cls[order]
        embs = []
        for sel, emb, valid in embed_batches(bundle, reader, idx, batch_size):
            if not valid.all():
                bad = int(sel[~valid][0])
                raise InputFileError(f"{path}: support shot {bad} ({found[int(cls[np.searchsorted(idx, bad)])]}) "
                                     "has no finite pixel where the model looks: drop it from the support labels")
            embs.append(emb)
    counts = {n: int(c) for n, c in zip(found, np.bincount(cls, minlength=len(found)), strict=True)}
    part = {"path": str(path), "labels": None if labels is None else str(labels), "k": k, "seed": seed,
            "counts": counts}
    return SupportSet(torch.cat(embs), torch.from_numpy(cls), found, str(path), {_key(path): idx.copy()}, [part],
                      np.full(len(idx), _key(path), dtype=object))


def merge_supports(supports: Sequence[SupportSet]) -> SupportSet:
    """One support set of several: the classes are the union of theirs (:func:`spinet.data.order_classes`)."""
    if not supports:
        raise ValueError("no support sets to merge")
    if len(supports) == 1:
        return supports[0]
    names = order_classes(n for s in supports for n in s.class_names)
    embs, cls = [], []
    members: dict[str, np.ndarray] = {}
    for s in supports:
        for key, idx in s.members.items():
            twice = np.intersect1d(members.get(key, np.zeros(0, np.int64)), idx)
            if len(twice):  # a shot twice among the supports would read itself in leave-one-out (distance 0)
                raise InputFileError(f"{key}: shot {int(twice[0])} is drawn by two --support sets ({len(twice)} "
                                     "shots in both): give the file once with a larger k, or other shots")
            members[key] = np.union1d(members.get(key, np.zeros(0, np.int64)), idx)
        remap = torch.tensor([names.index(n) for n in s.class_names], dtype=torch.int64)
        embs.append(s.embeddings)
        cls.append(remap[s.classes])
    return SupportSet(torch.cat(embs), torch.cat(cls), names, " + ".join(s.source for s in supports), members,
                      [p for s in supports for p in s.parts], np.concatenate([s.files for s in supports]))


def build_supports(
    bundle: ModelBundle,
    specs: Sequence[SupportSpec],
    *,
    label_mode: str = "hit_type",
    batch_size: int = 256,
    class_names: Sequence[str] | None = None,
) -> SupportSet:
    """Embed every support file (each with its own labels, k and seed) and merge them (:func:`merge_supports`)."""
    return merge_supports([
        build_support(bundle, s.path, labels=s.labels, k=s.k, seed=s.seed, label_mode=label_mode,
                      batch_size=batch_size, class_names=class_names)
        for s in specs
    ])


# ------------------------------------------------------------------------------------------------ selection


def estimate_mask(support: SupportSet, data: str | Path | None) -> np.ndarray:
    """(n,) bool: the supports an estimate is read from: those of the data file itself (the run being
    classified) when there are any, else all."""
    if data is not None:
        own = support.files == _key(data)
        if own.any():
            return own
    return np.ones(len(support.classes), dtype=bool)


def support_estimate(support: SupportSet, rule: str, *, min_ratio: float | None = None, binary: bool = False,
                     data: str | Path | None = None):
    """Leave-one-out over the supports (:func:`spinet.selection.leave_one_out`): the accuracy they give the rule,
    with its n and Wilson interval, read on the supports of ``data`` when it has some (:func:`estimate_mask`).

    Returns:
        :class:`spinet.selection.LooResult` (``.estimate`` is the :class:`spinet.selection.Estimate`).
    """
    from .selection import leave_one_out

    return leave_one_out(support.embeddings, support.classes.numpy(), support.class_names, rule,
                         min_ratio=min_ratio, binary=binary, evaluate=estimate_mask(support, data))


def select_reading(readings: Sequence[tuple[str, ModelBundle, SupportSet]], rules: Sequence[str], *,
                   binary: bool = False, data: str | Path | None = None, min_ratio: float | None = None):
    """Choose a checkpoint and a rule by leave-one-out over the supports (:func:`spinet.selection.select_candidate`).

    Args:
        readings: (name, model, its support set) per checkpoint; the support sets hold the same shots in the same
            order (the same files, labels, k and seeds).
        rules: the rules tried with every checkpoint.
        binary: score single vs rest.
        data: the file to classify (the estimate is read on its supports when it has some).
        min_ratio: ratio test applied while scoring.

    Returns:
        (the :class:`spinet.selection.Selection`, index into ``readings`` of the chosen checkpoint).
    """
    from .selection import Candidate, select_candidate

    cands, which = [], []
    for i, (name, _, sup) in enumerate(readings):
        for rule in rules:
            cands.append(Candidate(name, sup.embeddings, rule))
            which.append(i)
    first = readings[0][2]
    sel = select_candidate(cands, first.classes.numpy(), first.class_names, binary=binary,
                           evaluate=estimate_mask(first, data), min_ratio=min_ratio)
    return sel, which[sel.best]


def truth_is_binary(path: str | Path, truth_labels: str | Path | None, label_mode: str,
                    class_names: Sequence[str]) -> bool | None:
    """True / False when the truth labels of ``path`` (its own or ``truth_labels``) are / are not only single and
    not_single; None without truth labels."""
    with CXIReader(path) as reader:
        if truth_labels is None and not reader.has_labels:
            return None
        _, names = file_labels(reader, label_mode, truth_labels, class_names=label_names_for(label_mode, class_names))
    return is_binary_names(names) if names else None


# ------------------------------------------------------------------------------------------------ outputs


def summary_path_for(output: str | Path) -> Path:
    """Where the JSON summary of a predictions CSV goes: ``predictions.csv`` → ``predictions.summary.json``."""
    out = Path(output)
    return out.with_name(out.stem + ".summary.json")


def check_outputs(output: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Check, before any work, that the predictions CSV and its summary can be written.

    Returns:
        (CSV path, summary JSON path).

    Raises:
        OutputFileError: no such folder, a folder that cannot be written, an output that is a folder, or an
            existing output without ``overwrite``.
    """
    out = Path(output)
    summary = summary_path_for(out)
    folder = out.parent
    if not folder.is_dir():
        raise OutputFileError(f"cannot write {out}: no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputFileError(f"cannot write {out}: folder {folder} is not writable")
    for p in (out, summary):
        if p.is_dir():
            raise OutputFileError(f"cannot write {p}: it is a folder")
        if p.exists() and not overwrite:
            raise OutputFileError(f"{p} exists: give --overwrite to replace it, or another -o")
    return out, summary


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


# ------------------------------------------------------------------------------------------------ classify


@dataclass
class ClassifyResult:
    """Predictions of a file.

    Attributes:
        n_shots: shots in the file (all of them get a row).
        counts: answers per class of the label space over every shot, ``unknown`` and ``invalid`` included.
        accuracy: of the scored shots (None: none scored).
        output: the predictions CSV, or None.
        space: the label space of the answers.
        summary: the scored shots' summary (None without truth labels).
        n_support: shots of the file that are support shots.
        n_invalid: shots without a finite pixel where the model looks (label ``invalid``).
        summary_path: the JSON summary beside the CSV, or None.
    """

    n_shots: int
    counts: dict[str, int]
    accuracy: float | None
    output: Path | None
    space: LabelSpace | None = None
    summary: Summary | None = None
    n_support: int = 0
    n_invalid: int = 0
    summary_path: Path | None = None


def ratio_groups(class_names: Sequence[str], binary: bool) -> list[int] | None:
    """The ratio test's class groups (:class:`spinet.fewshot.FewShotClassifier`): for answers given single vs
    rest, single classes against the others (1 / 0); otherwise None (each class against every other)."""
    return [int(is_single_class(n)) for n in class_names] if binary else None


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
    binary: bool | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> ClassifyResult:
    """Classify every shot of ``path`` against ``support``; write ``output`` CSV (and its JSON summary) when given.

    The CSV has one row per shot: ``index,label,support`` (1 for a support shot), ``class`` (the support class
    before mapping, binary space only), ``distance_<class>...`` (squared embedding distances under the rule,
    empty for an invalid frame), and ``truth`` (in the label space) where the file has labels or
    ``truth_labels`` is given. ``label`` is the answer in the label space, ``unknown`` (``threshold``,
    ``min_ratio``, as in :class:`spinet.fewshot.FewShotClassifier`) or ``invalid`` (no finite pixel).
    The summary JSON (:func:`summary_path_for`) holds the label space, the counts, the supports and, with
    truth labels, :meth:`spinet.labelspace.Summary.to_dict` plus ``extra``.

    Args:
        binary: True: answer single / not_single; False: the support classes; None: binary when the truth
            labels (or, without any, the supports) are only single / not_single.
        overwrite: replace existing outputs (else OutputFileError, raised before any work).

    Raises:
        InputFileError: no frame of ``path`` has a finite pixel where the model looks (nothing is written).
    """
    out = summary_out = None
    if output is not None:
        out, summary_out = check_outputs(output, overwrite)
    allowed = label_names_for(label_mode, [*bundle.class_names, *support.class_names])
    with CXIReader(path) as reader:
        truth: dict[int, str] | None = None
        if truth_labels is not None or reader.has_labels:
            tidx, tnames = file_labels(reader, label_mode, truth_labels, class_names=allowed)
            truth = {int(i): n for i, n in zip(tidx, tnames, strict=True)}
        space = choose_label_space(None if truth is None else truth.values(), support.class_names, binary)
        clf = FewShotClassifier(support.embeddings, support.classes, support.class_names, rule, threshold,
                                min_ratio=min_ratio, ratio_groups=ratio_groups(support.class_names, space.binary))
        tally = _Tally(space, support.class_names, truth,
                       unknown=threshold is not None or (min_ratio is not None and min_ratio > 1))
        with _PredictionsCSV(out, tally) as writer:
            for sel, emb, valid in embed_batches(bundle, reader, None, batch_size, on_batch):
                pred, dist = clf.predict(emb)
                member = support.is_member(path, sel)
                for i, p, drow, ok, sup in zip(sel.tolist(), pred.tolist(), dist.numpy(), valid, member, strict=True):
                    writer.row(i, drow, *tally.add(i, p, bool(ok), bool(sup)))
            if tally.n_shots and tally.n_invalid == tally.n_shots:
                raise InputFileError(f"{path}: no shot has a finite pixel where the model looks ({tally.n_shots} "
                                     "shots): nothing to classify")
            summary = tally.summary()
            if summary_out is not None:
                doc = {"data": str(path), "predictions": out.name, **(extra or {}), "rule": rule,
                       "min_ratio": min_ratio, "unknown_threshold": threshold, "supports": support.parts,
                       "support_classes": support.class_names, "label_space": tally.space.to_dict(),
                       "n_shots": tally.n_shots, "n_support_shots": tally.n_support, "n_invalid": tally.n_invalid,
                       "counts": tally.counts, "summary": None if summary is None else summary.to_dict()}
                writer.commit(summary_out, doc)
    accuracy = None if summary is None or summary.n == 0 else summary.metrics.accuracy
    return ClassifyResult(tally.n_shots, tally.counts, accuracy, out, tally.space, summary, tally.n_support,
                          tally.n_invalid, summary_out)


class _Tally:
    """The answers of a file as they come: counts per answer, what is scored and what is left out (support,
    invalid, unlabelled shots).

    Args:
        space: the label space of the answers.
        names: the support classes (class id → name).
        truth: shot index → truth label, or None.
        unknown: the rule can answer ``unknown`` (counted from 0).
    """

    def __init__(self, space: LabelSpace, names: list[str], truth: dict[int, str] | None, unknown: bool) -> None:
        self.space, self.names, self.truth = space, names, truth
        self.counts = dict.fromkeys(space.classes, 0)
        if unknown:
            self.counts[UNKNOWN] = 0
        self.counts[INVALID] = 0
        self.scored_truth: list[str] = []
        self.scored_pred: list[str] = []
        self.left_out = {"support": 0, "invalid": 0, "unlabelled": 0}
        self.n_shots = self.n_support = self.n_invalid = 0

    def add(self, index: int, pred: int, valid: bool, support: bool) -> tuple[str, str, bool, str | None]:
        """Count shot ``index`` (class id ``pred``, −1 unknown): (its raw answer, its answer in the label space,
        whether it is a support, its truth label or None)."""
        raw = INVALID if not valid else (UNKNOWN if pred < 0 else self.names[pred])
        label = self.space.map(raw)
        self.counts[label] = self.counts.get(label, 0) + 1
        self.n_shots += 1
        self.n_support += int(support)
        self.n_invalid += int(not valid)
        t = self.truth.get(index) if self.truth is not None else None
        reason = "unlabelled" if t is None else ("support" if support else ("invalid" if not valid else None))
        if reason is None:
            self.scored_truth.append(t)
            self.scored_pred.append(raw)
        else:
            self.left_out[reason] += 1
        return raw, label, support, t

    def summary(self) -> Summary | None:
        """The scored shots' summary (None without truth labels)."""
        if self.truth is None:
            return None
        return Summary(self.space, score(self.scored_truth, self.scored_pred, self.space), self.left_out)


class _PredictionsCSV:
    """The predictions CSV, written under a temporary name and renamed (with its JSON summary) by :meth:`commit`;
    removed when the block ends without a commit. ``out`` None: writes nothing."""

    def __init__(self, out: Path | None, tally: _Tally) -> None:
        self.out, self.tally = out, tally
        self.tmp = None if out is None else _tmp(out)
        self.fh: Any = None
        self.writer: Any = None

    def __enter__(self) -> _PredictionsCSV:
        if self.tmp is not None:
            t = self.tally
            self.fh = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in __exit__/commit
            self.writer = csv.writer(self.fh)
            self.writer.writerow(["index", "label", "support", *(["class"] if t.space.binary else []),
                                  *(f"distance_{n}" for n in t.names), *(["truth"] if t.truth is not None else [])])
        return self

    def row(self, index: int, distances: np.ndarray, raw: str, label: str, support: bool, truth: str | None) -> None:
        """One shot's row (distances left empty for an invalid frame)."""
        if self.writer is None:
            return
        t = self.tally
        cells = [""] * len(t.names) if raw == INVALID else [f"{v:.6g}" for v in distances]
        self.writer.writerow([index, label, int(support), *([raw] if t.space.binary else []), *cells,
                              *([t.space.map(truth) if truth else ""] if t.truth is not None else [])])

    def commit(self, summary_out: Path, doc: dict) -> None:
        """Write the summary JSON beside the CSV, then rename both into place."""
        assert self.fh is not None and self.tmp is not None and self.out is not None
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        jtmp = _tmp(summary_out)
        try:
            jtmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        except BaseException:
            jtmp.unlink(missing_ok=True)
            raise
        os.replace(self.tmp, self.out)
        os.replace(jtmp, summary_out)
        self.tmp = None

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
