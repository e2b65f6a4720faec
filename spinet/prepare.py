"""The training data of a run: sources opened and labelled, the class list fixed, validation split off, validation
and support images loaded (what :func:`spinet.train.train` does before the run folder is made).

A file source gives :class:`spinet.data.FileShots` (training shots, augmented; the same shots un-augmented to draw
validation supports from; held-out validation shots); a live-simulation source gives a :class:`StreamSource`,
whose validation and support shots are simulated at fixed shot indices (:data:`STREAM_VAL_BASE`,
:data:`STREAM_SUPPORT_BASE`) never used for training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spisim.cxi import CXIReader
from spisim.errors import ConfigError, InputFileError

from .augment import ShotTransform
from .config import Config, SourceConfig
from .data import (
    EvalSet,
    FileShots,
    ShotDataset,
    SimulatedShotStream,
    as_shot_source,
    collect_stream,
    file_labels,
    label_names_for,
    open_simulator,
    order_classes,
    pick_per_class,
    simulator_geometry,
    stack_images,
    stratified_split,
)
from .distributed import DistInfo
from .preprocess import Preprocessor, geometry_key

STREAM_EPOCH_STRIDE = 1 << 30
"""Live simulation: epoch e trains on shot indices from e × STREAM_EPOCH_STRIDE on."""
STREAM_VAL_BASE = 1 << 40
"""Live simulation: validation shots are indices from here on (never used for training)."""
STREAM_SUPPORT_BASE = 1 << 41
"""Live simulation: support shots for validation are indices from here on."""


@dataclass
class StreamSource:
    """A live-simulation training source."""

    simulator: Any
    train_transform: ShotTransform
    eval_transform: ShotTransform
    weight: float


@dataclass
class PreparedData:
    """Everything the loop needs: classes, training shots, validation and support images."""

    class_names: list[str]
    train: ShotDataset | None
    stream: StreamSource | None
    val: EvalSet | None
    support: EvalSet | None
    preprocessor: Preprocessor
    geometry: str
    summary: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_val(self) -> int:
        """Validation shots (0 without validation)."""
        return 0 if self.val is None else len(self.val)


@dataclass
class _Parts:
    """Shots of the file sources, as they are gathered: training (augmented), the same un-augmented (supports
    are drawn from them), held-out validation; the first detector's preprocessing and geometry key."""

    train: list[FileShots] = field(default_factory=list)
    eval: list[FileShots] = field(default_factory=list)
    val: list[FileShots] = field(default_factory=list)
    first: tuple[Preprocessor, str] | None = None
    summary: list[str] = field(default_factory=list)


def _file_source(cfg: Config, src: SourceConfig) -> tuple[CXIReader, np.ndarray, list[str]]:
    reader = CXIReader(src.path)
    try:
        idx, names = file_labels(reader, cfg.data.label, src.labels, class_names=label_names_for(
            cfg.data.label, cfg.data.classes or ()))
    except BaseException:
        reader.close()
        raise
    if src.max_shots is not None:
        idx, names = idx[: src.max_shots], names[: src.max_shots]
    if src.binary:
        from spisim.cxi import NOT_SINGLE

        from .metrics import is_single_class

        names = ["single" if is_single_class(n) else NOT_SINGLE for n in names]
    return reader, idx, names


def _transforms(cfg: Config, frame_shape, pixel_position, mask) -> tuple[ShotTransform, ShotTransform]:
    pre = Preprocessor.from_geometry(cfg.preprocess, frame_shape, pixel_position, mask)
    train_t = ShotTransform(cfg.preprocess, cfg.augment, frame_shape, pixel_position, mask, preprocessor=pre)
    eval_t = ShotTransform(cfg.preprocess, None, frame_shape, pixel_position, mask, preprocessor=pre)
    return train_t, eval_t


def _known(names: list[str], class_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(keep (n,) bool: the names that are classes of the run, their class ids (kept,))."""
    keep = np.array([n in class_index for n in names], dtype=bool)
    return keep, np.array([class_index[n] for n, k in zip(names, keep, strict=True) if k], dtype=np.int64)


def _add_training_file(cfg: Config, parts: _Parts, src: SourceConfig, reader: CXIReader, idx: np.ndarray,
                       names: list[str], classes: list[str]) -> None:
    """A training file's shots: split (stratified) into training and held-out validation shots."""
    d = cfg.data
    keep, cls = _known(names, {n: i for i, n in enumerate(classes)})
    idx = idx[keep]
    if len(idx) == 0:
        raise InputFileError(f"{src.path}: no labelled shot of the classes {', '.join(classes)}")
    pos, mask = reader.pixel_position, reader.mask
    train_t, eval_t = _transforms(cfg, reader.frame_shape, pos, mask)
    if parts.first is None:
        parts.first = (train_t.final, geometry_key(reader.frame_shape, pos, mask))
    if d.validation or d.val_fraction == 0:
        tr, held = np.arange(len(idx)), np.zeros(0, np.int64)
    else:
        tr, held = stratified_split(cls, d.val_fraction, cfg.train.seed)
    parts.train.append(FileShots(src.path, idx, cls, train_t, src.weight).subset(tr))
    parts.eval.append(FileShots(src.path, idx[tr], cls[tr], eval_t, src.weight))
    if len(held):
        parts.val.append(FileShots(src.path, idx[held], cls[held], eval_t))
    counts = np.bincount(cls[tr], minlength=len(classes))
    parts.summary.append(f"{src.path}: {len(tr)} training shots "
                         f"({', '.join(f'{classes[c]} {n}' for c, n in enumerate(counts) if n)}), "
                         f"{len(held)} held out")


def _classes(cfg: Config, names_seen: list[str], simulator: Any) -> list[str]:
    """The run's classes: ``data.classes``, else every name seen in the files (and the simulator's hit types)."""
    d = cfg.data
    if d.classes is not None:
        return list(d.classes)
    if simulator is not None:
        if d.label != "hit_type":
            raise ConfigError("with live simulation and label structure_hit_type, list data.classes")
        names_seen = names_seen + list(getattr(simulator, "class_names", None)
                                       or ["no_hit", "single", "multi", "unintended"])
    return order_classes(names_seen)


def _open_sources(cfg: Config) -> tuple[list, list, list[SourceConfig]]:
    """(opened training files, opened validation files: (source, reader, indices, names) each; the live-simulation
    sources)."""
    d = cfg.data
    if not d.sources:
        raise ConfigError("no training data: give data.sources (files or a simulation manifest)")
    sim_srcs = [s for s in d.sources if s.simulate is not None]
    if len(sim_srcs) > 1:
        raise ConfigError("at most one live-simulation source per run (mix several structures in one manifest)")
    if any(s.simulate is not None for s in d.validation):
        raise ConfigError("data.validation takes files; live-simulation validation comes from the training manifest")
    opened: list = []
    try:
        for s in [*(s for s in d.sources if s.path is not None), *(s for s in d.validation if s.path is not None)]:
            opened.append((s, *_file_source(cfg, s)))
    except BaseException:
        for _, reader, _, _ in opened:
            reader.close()
        raise
    n_train = sum(s.path is not None for s in d.sources)
    return opened[:n_train], opened[n_train:], sim_srcs


def prepare_data(cfg: Config, dist: DistInfo | None = None, simulator: Any = None) -> PreparedData:
    """Open the sources, fix the class list, split off validation, load validation and support images.

    ``simulator``: a shot source used for the ``simulate`` source instead of opening its manifest.

    Raises:
        ConfigError: no sources, several simulation sources, a class without support shots; InputFileError: a
            file that cannot be read or labelled, no shot of the classes in a file, a validation or support frame
            without a finite pixel (:meth:`spinet.data.FileShots.image`).
    """
    dist = dist or DistInfo()
    d = cfg.data
    opened, val_opened, sim_srcs = _open_sources(cfg)
    try:
        simulator = None if not sim_srcs else (as_shot_source(simulator) if simulator is not None
                                               else open_simulator(sim_srcs[0].simulate))
        classes = _classes(cfg, [n for *_, names in opened + val_opened for n in names], simulator)
        class_index = {n: i for i, n in enumerate(classes)}
        parts = _Parts(summary=[f"classes: {', '.join(classes)}"])
        for src, reader, idx, names in opened:
            _add_training_file(cfg, parts, src, reader, idx, names, classes)
        for src, reader, idx, names in val_opened:
            keep, cls = _known(names, class_index)
            _, eval_t = _transforms(cfg, reader.frame_shape, reader.pixel_position, reader.mask)
            parts.val.append(FileShots(src.path, idx[keep], cls, eval_t))
            parts.summary.append(f"{src.path}: {int(keep.sum())} validation shots")
    finally:
        for _, reader, _, _ in opened + val_opened:
            reader.close()
    stream = None
    if simulator is not None:
        frame_shape = tuple(int(v) for v in simulator.frame_shape)
        pos, mask = simulator_geometry(simulator)
        train_t, eval_t = _transforms(cfg, frame_shape, pos, mask)
        if parts.first is None:
            parts.first = (train_t.final, geometry_key(frame_shape, pos, mask))
        stream = StreamSource(simulator, train_t, eval_t, sim_srcs[0].weight)
        parts.summary.append(f"live simulation from {sim_srcs[0].simulate}: about {d.stream_shots_per_epoch} shots "
                             "per epoch")
    assert parts.first is not None
    train_ds = ShotDataset(parts.train) if parts.train else None
    warnings = [] if stream is not None else few_shot_warnings(
        classes, np.bincount(train_ds.labels, minlength=len(classes)) if train_ds is not None else None)
    val, support = _eval_sets(cfg, classes, parts, stream) if dist.is_main else (None, None)
    return PreparedData(classes, train_ds, stream, val, support, parts.first[0], parts.first[1], parts.summary,
                        warnings)


def _eval_sets(cfg: Config, classes: list[str], parts: _Parts, stream: StreamSource | None
               ) -> tuple[EvalSet | None, EvalSet | None]:
    """(validation images, support images for validation), from the files and, where they fall short, simulated."""
    d = cfg.data
    val_parts, sup_parts = [], []
    if parts.val:
        vds = ShotDataset(parts.val)
        rng = np.random.default_rng([cfg.train.seed, 0x7A1])
        sel = np.sort(rng.choice(len(vds), min(len(vds), d.max_val_shots), replace=False))
        val_parts.append(stack_images(vds, sel))
    if parts.eval:
        eds = ShotDataset(parts.eval)
        sup_parts.append(stack_images(eds, pick_per_class(eds.labels, d.support_k, cfg.train.seed)))
    if stream is not None:
        class_index = {n: i for i, n in enumerate(classes)}

        def mk(start: int) -> SimulatedShotStream:
            return SimulatedShotStream(stream.simulator, stream.eval_transform, class_index, start=start,
                                       augment_seed=None, label=d.label)

        if not parts.val:
            val_parts.append(collect_stream(mk(STREAM_VAL_BASE), None, d.max_val_shots, 50 * d.max_val_shots))
        have = set(sup_parts[0][1].tolist()) if sup_parts else set()
        if len(have) < len(classes):
            xs, ys = collect_stream(mk(STREAM_SUPPORT_BASE), d.support_k, None, 1000 * d.support_k * len(classes))
            sel = torch.tensor([int(y) not in have for y in ys])
            sup_parts.append((xs[sel], ys[sel]))
    val = EvalSet(torch.cat([v[0] for v in val_parts]), torch.cat([v[1] for v in val_parts])) if val_parts else None
    support = (EvalSet(torch.cat([s[0] for s in sup_parts]), torch.cat([s[1] for s in sup_parts])) if sup_parts
               else None)
    if val is not None and support is not None:
        missing = sorted(set(val.classes.tolist()) - set(support.classes.tolist()))
        if missing:
            raise ConfigError(f"no training shots of class {classes[missing[0]]} to serve as support")
    return val, support


def few_shot_warnings(classes: list[str], counts: np.ndarray | None) -> list[str]:
    """Warnings for classes with fewer than 2 training shots: a triplet needs an anchor and a positive of the
    same class, so such a class is never an anchor (0 shots: never seen at all).

    Args:
        classes: the C class names.
        counts: (C,) training shots per class (after the validation split), or None.
    """
    if counts is None:
        return []
    out = []
    for name, n in zip(classes, counts.tolist(), strict=True):
        if n == 0:
            out.append(f"class {name} has no training shots: the network never sees it")
        elif n < 2:
            out.append(f"class {name} has only {n} training shot: triplets need 2 shots of a class (an anchor and "
                       "a positive), so it is never an anchor; label more shots of it")
    return out
