"""Labelled shots for training and classification: files, label files, live simulation, class-balanced batches.

* :func:`read_label_file` (from :mod:`spisim.labels`) reads labels given by name: a CSV ``index,label`` (with
  or without a header; the ``index,label,time`` logs of ``spi label`` are replayed, undos included) or an HDF5 file with
  ``index`` and ``label`` datasets (or a CXI ``/entry_1/labels/hit_type``).
* :func:`file_labels` gives the labelled shots of a CXI/HDF5 file, by hit type or by (structure, hit type).
* :class:`FileShots` / :class:`ShotDataset` read frames lazily (each DataLoader worker opens its own
  HDF5 handle) and transform them; several files form one dataset with per-source sampling weights.
* :class:`ClassBalancedBatchSampler` draws batches of m shots per class, each shot with its own
  augmentation seed, reproducibly from (seed, epoch, rank).
* :class:`SimulatedShotStream` streams freshly simulated shots from any object with
  ``simulate_shot(index) -> (frame, labels)`` and ``frame_shape``; :class:`StreamBatcher` turns the
  stream into class-balanced batches.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from spisim.cxi import HIT_TYPES, LABEL_CLASSES, NOT_SINGLE, CXIReader
from spisim.errors import ConfigError, InputFileError
from spisim.labels import LabelNames, read_label_file

from .augment import ShotTransform

UNKNOWN = "unknown"
"""Class name given to shots farther than the unknown-threshold from every class."""


# ------------------------------------------------------------------------------------------------ labels


def order_classes(names: Iterable[str]) -> list[str]:
    """Class names in a stable order: known hit types first (in code order), then the rest sorted, then
    ``not_single`` (the class of a run labelled single vs rest)."""
    found = set(names)
    known = [n for n in HIT_TYPES if n in found]
    rest = sorted(found - set(known) - {NOT_SINGLE})
    return known + rest + ([NOT_SINGLE] if NOT_SINGLE in found else [])


def structure_hit_label(hit_type: str, structures: Sequence[str]) -> str:
    """The (structure, hit type) class name: ``<structure>/<hit type>``; no hits are ``no_hit`` whatever
    the structure, particles of several structures are joined with ``+``."""
    if hit_type == "no_hit" or not len(structures):
        return hit_type
    return f"{'+'.join(sorted(set(structures)))}/{hit_type}"


def label_names_for(mode: str = "hit_type", extra: Iterable[str] = ()) -> LabelNames:
    """The class names a label file may use for ``mode``: :data:`spisim.cxi.LABEL_CLASSES`, ``extra`` (e.g. the
    classes of a config or a model) and, for ``structure_hit_type``, any ``STRUCTURE/HIT_TYPE`` name."""
    return LabelNames([*LABEL_CLASSES, *extra], structure_hit_types=mode == "structure_hit_type")


def file_labels(
    reader: CXIReader,
    mode: str = "hit_type",
    label_file: str | Path | None = None,
    class_names: Sequence[str] | LabelNames | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Labelled shots of a file.

    Args:
        reader: an open file.
        mode: ``hit_type`` or ``structure_hit_type`` (needs the file's own labels).
        label_file: labels by name for this file (real data); None: the file's ``/entry_1/labels``.
        class_names: the names ``label_file`` may use; None: :func:`label_names_for` ``(mode)``.

    Returns:
        (indices (n,) int64 sorted, class names (n,)).
    """
    if label_file is not None:
        allowed = label_names_for(mode) if class_names is None else class_names
        labels = read_label_file(label_file, n_shots=len(reader), class_names=allowed)
        idx = np.array(sorted(labels), dtype=np.int64)
        return idx, [labels[int(i)] for i in idx]
    if not reader.has_labels:
        raise InputFileError(f"{reader.path} has no labels: give a label file (CSV index,label or HDF5)")
    codes = reader.hit_type
    names = reader.class_names
    idx = np.nonzero(codes >= 0)[0].astype(np.int64)
    hit = [names[int(codes[i])] for i in idx]
    if mode == "hit_type":
        return idx, hit
    if mode != "structure_hit_type":
        raise ConfigError(f"data.label must be hit_type or structure_hit_type, got {mode!r}")
    snames = reader.structure_names
    structure = reader.labels("structure")
    out = []
    for i, h in zip(idx, hit, strict=True):
        s = [snames[int(c)] for c in np.asarray(structure[i]).reshape(-1) if c >= 0]
        out.append(structure_hit_label(h, s))
    return idx, out


def shot_label_name(
    labels: Any, mode: str = "hit_type", structure_names: Sequence[str] = (), class_names: Sequence[str] = HIT_TYPES
) -> str:
    """Class name of one simulated shot's labels (a :class:`spisim.cxi.ShotLabels`, a dict with
    ``hit_type``, an int code or a name)."""
    if isinstance(labels, str):
        return labels
    if isinstance(labels, int | np.integer):
        code, struct = labels, None
    elif isinstance(labels, dict):
        code, struct = labels["hit_type"], labels.get("structure")
    else:
        code, struct = labels.hit_type, getattr(labels, "structure", None)
    hit = code if isinstance(code, str) else class_names[int(code)]
    if mode == "hit_type":
        return hit
    struct = np.asarray([] if struct is None else struct).reshape(-1)
    snames = [structure_names[int(c)] if int(c) < len(structure_names) else str(int(c)) for c in struct if c >= 0]
    return structure_hit_label(hit, snames)


# ------------------------------------------------------------------------------------------------ files


class LazyFile:
    """A CXI/HDF5 file opened on first use, once per process: a pickled copy (a spawned worker) or a forked
    worker reopens it (HDF5 handles must not cross a process boundary). Subclasses set ``self.path`` and call
    ``LazyFile.__init__``."""

    path: Path

    def __init__(self) -> None:
        self._reader: CXIReader | None = None
        self._pid = os.getpid()

    @property
    def reader(self) -> CXIReader:
        """The open file of this process."""
        if self._reader is None or self._pid != os.getpid():
            self._reader = CXIReader(self.path)
            self._pid = os.getpid()
        return self._reader

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reader"] = None
        return state


class FileShots(LazyFile):
    """Labelled shots of one CXI/HDF5 file, opened lazily (a pickled copy reopens the file).

    Args:
        path: the file.
        indices: (n,) shot indices used.
        classes: (n,) int class ids (into the run's class list).
        transform: frame → image.
        weight: sampling weight of this source.
    """

    def __init__(
        self, path: str | Path, indices: np.ndarray, classes: np.ndarray, transform: ShotTransform, weight: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.classes = np.asarray(classes, dtype=np.int64)
        if self.indices.shape != self.classes.shape:
            raise ValueError("indices and classes must have the same length")
        self.transform = transform
        self.weight = float(weight)
        LazyFile.__init__(self)

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, positions: np.ndarray) -> FileShots:
        """The same file restricted to ``positions`` (into this object's indices)."""
        p = np.asarray(positions, dtype=np.int64)
        return FileShots(self.path, self.indices[p], self.classes[p], self.transform, self.weight)

    def image(self, position: int, seed: int | None = None) -> torch.Tensor:
        """(1, S, S) image of shot ``indices[position]``; augmented with ``seed`` when given.

        Raises:
            InputFileError: the frame has no finite unmasked pixel inside the crop the model sees (training on it
                would teach the network an empty image under a class's name).
        """
        index = int(self.indices[position])
        frame = self.reader[index]
        if not self.transform.final.has_data(torch.from_numpy(np.asarray(frame, dtype=np.float32))[None]).item():
            raise InputFileError(f"{self.path}: shot {index} has no finite pixel where the model looks: drop it from "
                                 "the labels (or the file)")
        rng = None if seed is None else np.random.default_rng(seed)
        return self.transform(frame, rng)


class ShotDataset(Dataset):
    """Several :class:`FileShots` as one map-style dataset of (image (1, S, S), class id).

    An item key is a position, or ``(position, seed)`` for an augmented draw (what
    :class:`ClassBalancedBatchSampler` yields).
    """

    def __init__(self, sources: Sequence[FileShots]) -> None:
        self.sources = list(sources)
        sizes = [len(s) for s in self.sources]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.labels = np.concatenate([s.classes for s in self.sources]) if self.sources else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, position: int) -> tuple[int, int]:
        """(source number, position within it)."""
        s = int(np.searchsorted(self.offsets, position, side="right") - 1)
        return s, int(position - self.offsets[s])

    def sample_weights(self) -> np.ndarray:
        """(N,) sampling weights: within a class, each source's share is proportional to its weight."""
        w = np.zeros(len(self), dtype=np.float64)
        for s, src in enumerate(self.sources):
            lo = self.offsets[s]
            for c in np.unique(src.classes):
                sel = np.nonzero(src.classes == c)[0]
                w[lo + sel] = src.weight / len(sel)
        return w

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple | list):
            position, seed = int(key[0]), int(key[1])
        else:
            position, seed = int(key), None
        s, p = self.locate(position)
        src = self.sources[s]
        return src.image(p, seed), int(src.classes[p])


class ClassBalancedBatchSampler(Sampler):
    """Batches of ``m_per_class`` shots from each of ``classes_per_batch`` classes.

    Shots of a class are drawn without replacement where the class has enough (with replacement
    otherwise), with probability proportional to ``weights``. Each entry is ``(position, seed)``: the
    seed drives that draw's augmentation. Everything follows from (seed, epoch, rank), so an epoch can
    be replayed exactly (``set_epoch``).

    Args:
        labels: (N,) class ids.
        m_per_class: shots per class in a batch.
        n_batches: batches per epoch.
        classes_per_batch: classes in each batch (random subset each batch); None: all.
        weights: (N,) non-negative sampling weights; None: uniform.
        seed: base seed.
        rank: this process's rank (different batches per rank).
    """

    def __init__(
        self,
        labels: np.ndarray,
        m_per_class: int,
        n_batches: int,
        *,
        classes_per_batch: int | None = None,
        weights: np.ndarray | None = None,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.m = int(m_per_class)
        self.n_batches = int(n_batches)
        self.classes = np.unique(self.labels)
        if len(self.classes) < 2:
            raise ConfigError(f"training needs shots of at least two classes, found {len(self.classes)}")
        self.cpb = len(self.classes) if classes_per_batch is None else min(int(classes_per_batch), len(self.classes))
        w = np.ones(len(self.labels)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.members = []
        for c in self.classes:
            idx = np.nonzero(self.labels == c)[0]
            p = w[idx] / w[idx].sum()
            self.members.append((idx, p))
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 0x5EED])
        for _ in range(self.n_batches):
            chosen = np.arange(len(self.classes))
            if self.cpb < len(self.classes):
                chosen = np.sort(rng.choice(len(self.classes), self.cpb, replace=False))
            batch = []
            for k in chosen:
                idx, p = self.members[k]
                enough = np.count_nonzero(p) >= self.m
                pick = rng.choice(idx, self.m, replace=not enough, p=p)
                seeds = rng.integers(0, 2**62, size=self.m)
                batch.extend((int(i), int(s)) for i, s in zip(pick, seeds, strict=True))
            yield batch


def stratified_split(classes: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into (train, held out), holding out ``round(fraction × n_c)`` of each class
    (at least one where a class has two or more shots and fraction > 0).

    Returns:
        (train positions, held-out positions), each sorted.
    """
    classes = np.asarray(classes)
    rng = np.random.default_rng([seed, 0x5A17])
    train, held = [], []
    for c in np.unique(classes):
        idx = np.nonzero(classes == c)[0]
        idx = idx[rng.permutation(len(idx))]
        n = int(round(fraction * len(idx)))
        if fraction > 0 and n == 0 and len(idx) >= 2:
            n = 1
        held.append(idx[:n])
        train.append(idx[n:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def pick_per_class(classes: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Positions of ``k`` random shots of each class (all of a class that has fewer), sorted by class."""
    classes = np.asarray(classes)
    rng = np.random.default_rng([seed, 0x5099])
    out = []
    for c in np.unique(classes):
        idx = np.nonzero(classes == c)[0]
        out.append(np.sort(rng.choice(idx, min(k, len(idx)), replace=False)))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def stack_images(
    dataset: Dataset, positions: Sequence[int], batch: int = 256, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed (un-augmented) images and class ids of ``positions``: ((n, 1, S, S), (n,))."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(
        Subset(dataset, [int(p) for p in positions]), batch_size=batch, shuffle=False, num_workers=num_workers
    )
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ConfigError("no shots to evaluate")
    return torch.cat(xs), torch.cat(ys).to(torch.int64)


# ------------------------------------------------------------------------------------------- simulation


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def simulator_geometry(simulator: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(pixel_position (M, SS, FS, 3) m or None, mask (M, SS, FS) bool or None) of a simulator, looked up as
    attributes ``pixel_position``/``pixel_positions``/``mask`` of it or of its ``detector``."""
    for owner in (simulator, getattr(simulator, "detector", None)):
        if owner is None:
            continue
        pos = None
        for name in ("pixel_position", "pixel_positions"):
            v = getattr(owner, name, None)
            if v is not None:
                pos = np.asarray(v() if callable(v) else v)
                break
        mask = getattr(owner, "mask", None)
        mask = None if mask is None else np.asarray(mask() if callable(mask) else mask, dtype=bool)
        if pos is not None or mask is not None:
            return pos, mask
    return None, None


class SimulatedShotStream(IterableDataset):
    """Freshly simulated shots, straight from a simulator, no file in between.

    Yields ``(image (1, S, S), class id, shot index)``. Shot indices ``start, start + 1, ... < stop`` are
    dealt round-robin to DataLoader workers and distributed ranks (the rank and world size in force when
    the stream is made), so a DataLoader with w workers delivers them in index order. Shots whose class
    is not in ``class_index`` come out with class −1 (:class:`StreamBatcher` drops them), which keeps
    that order.

    Args:
        simulator: any object with ``simulate_shot(index) -> (frame (M, SS, FS), labels)`` and
            ``frame_shape``; labels a :class:`spisim.cxi.ShotLabels`, a dict with ``hit_type`` (code or name)
            or a code.
        transform: frame → image (with augmentations for training).
        class_index: class name → id.
        start, stop: shot index range (stop None: endless).
        augment_seed: augmentation of shot i uses ``default_rng([augment_seed, i])``; None: no augmentation.
        label: ``hit_type`` or ``structure_hit_type``.
    """

    def __init__(
        self,
        simulator: Any,
        transform: ShotTransform,
        class_index: dict[str, int],
        *,
        start: int = 0,
        stop: int | None = None,
        augment_seed: int | None = 0,
        label: str = "hit_type",
    ) -> None:
        super().__init__()
        self.simulator = as_shot_source(simulator)
        simulator = self.simulator
        self.transform = transform
        self.class_index = dict(class_index)
        self.start = int(start)
        self.stop = None if stop is None else int(stop)
        self.augment_seed = augment_seed
        self.label = label
        self.rank, self.world = _rank_world()  # captured here: worker processes need not see the process group
        self.structure_names = list(
            getattr(simulator, "structure_names", None) or getattr(simulator, "structures", None) or []
        )
        self.hit_names = list(getattr(simulator, "class_names", None) or HIT_TYPES)

    def shot(self, index: int) -> tuple[torch.Tensor, int]:
        """Simulate and transform shot ``index``: (image (1, S, S), class id or −1)."""
        frame, labels = self.simulator.simulate_shot(int(index))
        name = shot_label_name(labels, self.label, self.structure_names, self.hit_names)
        rng = None if self.augment_seed is None else np.random.default_rng([int(self.augment_seed), int(index)])
        return self.transform(np.asarray(frame, dtype=np.float32), rng), self.class_index.get(name, -1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int]]:
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        k = self.rank * nw + wid
        stride = nw * self.world
        i = self.start + k
        while self.stop is None or i < self.stop:
            x, y = self.shot(i)
            yield x, y, i
            i += stride


class StreamBatcher:
    """Class-balanced batches from a stream of (image, class id, index) items.

    Items wait in one queue per class (the oldest are dropped beyond ``buffer`` per class); as soon as
    ``classes_per_batch`` classes hold ``m_per_class`` items, a batch takes m items of each of them (the
    classes with the most waiting, ties by id) and returns ``(images (B, 1, S, S), class ids (B,))``.
    Each simulated shot is used at most once. Items with class −1 are skipped.
    """

    def __init__(
        self,
        items: Iterable,
        n_classes: int,
        m_per_class: int,
        classes_per_batch: int | None = None,
        buffer: int | None = None,
    ) -> None:
        self.items = items
        self.n_classes = int(n_classes)
        self.m = int(m_per_class)
        self.cpb = self.n_classes if classes_per_batch is None else min(int(classes_per_batch), self.n_classes)
        self.buffer = buffer or 8 * self.m
        self.seen = np.zeros(self.n_classes, dtype=np.int64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        queues = [deque(maxlen=self.buffer) for _ in range(self.n_classes)]
        for x, y, _ in self.items:
            y = int(y)
            if y < 0:
                continue
            self.seen[y] += 1
            queues[y].append(x)
            ready = [c for c in range(self.n_classes) if len(queues[c]) >= self.m]
            if len(ready) >= self.cpb:
                ready.sort(key=lambda c: (-len(queues[c]), c))
                take = sorted(ready[: self.cpb])
                xs = [queues[c].popleft() for c in take for _ in range(self.m)]
                ys = [c for c in take for _ in range(self.m)]
                yield torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def collect_stream(
    stream: SimulatedShotStream, per_class: int | None, total: int | None, max_shots: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate shots from ``stream.start`` on until ``per_class`` of every class (or ``total`` shots) are in hand.

    Returns:
        (images (n, 1, S, S), class ids (n,)).
    """
    n_classes = len(set(stream.class_index.values()))
    buckets: list[list[torch.Tensor]] = [[] for _ in range(n_classes)]
    got = 0
    i = stream.start
    for _ in range(max_shots):
        x, y = stream.shot(i)
        i += 1
        if y < 0 or (per_class is not None and len(buckets[y]) >= per_class):
            continue
        buckets[y].append(x)
        got += 1
        if total is not None and got >= total:
            break
        if per_class is not None and all(len(b) >= per_class for b in buckets):
            break
    xs = [x for b in buckets for x in b]
    ys = [c for c, b in enumerate(buckets) for _ in b]
    if not xs:
        raise ConfigError(f"no shot of a known class in {max_shots} simulated shots")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


class SpisimShots:
    """Adapter giving a :class:`spisim.simulator.Simulator` the stream interface: ``simulate_shot(index)``,
    ``frame_shape``, ``pixel_position``, ``mask``, ``structure_names``."""

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator
        self.frame_shape = tuple(int(v) for v in simulator.shape)
        self.pixel_position = np.asarray(simulator.detector.pixel_positions)
        self.mask = np.asarray(simulator.effects.mask, dtype=bool)
        self.structure_names = list(simulator.spec.structure_names)
        self.class_names = list(HIT_TYPES)

    def simulate_shot(self, index: int) -> tuple[np.ndarray, Any]:
        return self.simulator.shot(int(index))


def as_shot_source(obj: Any) -> Any:
    """``obj`` itself when it has ``simulate_shot`` and ``frame_shape``; a :class:`SpisimShots` adapter
    for a :class:`spisim.simulator.Simulator` (``shot``, ``shape``)."""
    if hasattr(obj, "simulate_shot") and hasattr(obj, "frame_shape"):
        return obj
    if hasattr(obj, "shot") and hasattr(obj, "shape") and hasattr(obj, "detector"):
        return SpisimShots(obj)
    raise TypeError(f"{type(obj).__name__} is not a shot source (needs simulate_shot(index) and frame_shape)")


def open_simulator(manifest: str | Path, device: str = "cpu") -> Any:
    """A live shot source for a simulation manifest (a :class:`spisim.simulator.Simulator` behind
    :class:`SpisimShots`); ``default`` is the built-in default manifest. Particles are prepared at once,
    so that worker processes share them."""
    from spisim.manifest import load_manifest
    from spisim.simulator import Simulator

    path = None if str(manifest) == "default" else manifest
    return SpisimShots(Simulator(load_manifest(path), device=device).prepare())


@dataclass
class EvalSet:
    """Images held in memory for evaluation: images (n, 1, S, S), class ids (n,)."""

    images: torch.Tensor
    classes: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])
