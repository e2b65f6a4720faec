"""Using a run's unlabelled frames: normalisation statistics, and training terms on unlabelled shots.

A network trained on simulated shots meets real frames whose statistics differ (background, noise, the
particles' spread, the detector). Two uses of the run's own frames, which need no labels:

* **AdaBN** (:func:`adapt_batchnorm`, Li et al. 2016): the running mean and variance of every batch-norm layer
  are re-estimated on the run's frames (the network's weights stay as trained). A network without batch-norm
  layers is left as it is. ``spi classify --adapt FILE`` and a study model's ``adapt_bn: true`` use it.
* **Training terms** (:class:`UnlabelledLoss`, configured by :class:`spinet.config.AdaptConfig`): at each step
  of ``spi train`` a batch of unlabelled frames is drawn (``data.unlabelled``), two augmented views of each, and

  - *consistency*: the mean squared embedding distance between the two views of a frame (what the
    augmentations change must not move a real frame in the embedding);
  - *alignment* (domain confusion without an adversary): the maximum mean discrepancy, with Gaussian kernels
    exp(−d / b) on squared embedding distances d, between the embeddings of the labelled (simulated) batch and
    those of the unlabelled (real) views, so that the two clouds cannot be told apart by their kernel means.

  Both are added to the triplet loss with their weights.

Which of these helps is measured on the sim-to-real study (``docs/evaluation.md``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from spisim.cxi import CXIReader
from spisim.errors import InputFileError

from .augment import ShotTransform
from .config import AdaptConfig, Config, UnlabelledConfig
from .data import LazyFile

# ------------------------------------------------------------------------------------------------ AdaBN


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of a network (BatchNorm1d/2d/3d, SyncBatchNorm), in module order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str | None = None
                    ) -> int:
    """AdaBN: replace the running statistics of every batch-norm layer by those of ``batches``.

    The statistics are reset and re-accumulated as a cumulative average over the batches (momentum None), with
    every other layer in eval mode (dropout off); weights and biases are untouched. The model is left in eval
    mode. Frames without data (all-zero images) should be left out by the caller.

    Args:
        model: the network (changed in place).
        batches: input images (b, 1, S, S), e.g. preprocessed frames of the run.
        device: where to run (default: the model's).

    Returns:
        The number of batch-norm layers adapted (0: the model has none and is unchanged).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    device = device or next(model.parameters()).device
    momenta = [bn.momentum for bn in layers]
    model.eval()
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    seen = 0
    try:
        for x in batches:
            if len(x) < 2:
                continue  # a batch of one has no variance
            model(x.to(device))
            seen += len(x)
    finally:
        for bn, m in zip(layers, momenta, strict=True):
            bn.momentum = m
        model.eval()
    if seen == 0:
        raise InputFileError("AdaBN needs at least two frames with data")
    return len(layers)


def image_batches(images: torch.Tensor, batch: int = 256) -> Iterator[torch.Tensor]:
    """``images`` (n, 1, S, S) in batches of ``batch`` (the last one merged into the one before when it would
    hold a single image)."""
    n = len(images)
    starts = list(range(0, n, batch))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else n
        yield images[s:e]


# ------------------------------------------------------------------------------------------------ losses


def consistency_loss(view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
    """Mean squared L2 distance between the embeddings (n, D) of two views of the same n frames."""
    return (view1 - view2).pow(2).sum(dim=1).mean()


def mmd_loss(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.5, 2.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy between two sets of embeddings, (n, D) and (m, D) (biased estimate, ≥ 0).

    The kernel is the mean over ``bandwidths`` b of exp(−‖u − v‖² / b) (squared-distance units; unit
    embeddings have ‖u − v‖² in [0, 4]). MMD² = mean k(x, x′) + mean k(y, y′) − 2 mean k(x, y).
    """
    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(a, b).pow(2)
        return torch.stack([torch.exp(-d / bw) for bw in bandwidths]).mean(dim=0)

    return (kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()).clamp(min=0.0)


class UnlabelledLoss:
    """The adaptation terms of one training step (see the module docstring).

    Args:
        config: weights, batch and kernel bandwidths.
    """

    def __init__(self, config: AdaptConfig) -> None:
        self.config = config
        self.last: dict[str, float] = {}
        """The terms of the last call (unweighted), for the log."""

    def __call__(self, labelled: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the terms.

        Args:
            labelled: (B, D) embeddings of the labelled batch.
            view1, view2: (b, D) embeddings of two augmented views of b unlabelled frames.
        """
        c = self.config
        total = labelled.new_zeros(())
        self.last = {}
        if c.consistency > 0:
            term = consistency_loss(view1, view2)
            self.last["consistency"] = float(term.detach())
            total = total + c.consistency * term
        if c.align > 0:
            term = mmd_loss(labelled, torch.cat([view1, view2]), c.bandwidths)
            self.last["align"] = float(term.detach())
            total = total + c.align * term
        return total


# ------------------------------------------------------------------------------------------------ frames


def read_indices(path: str | Path) -> np.ndarray:
    """Shot indices from a text or CSV file: one per line or the first column; a non-numeric header is skipped."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"no such index file: {p}")
    out = []
    with open(p, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip():
                continue
            try:
                out.append(int(row[0]))
            except ValueError:
                if line_no == 1:
                    continue
                raise InputFileError(f"{p}, line {line_no}: {row[0]!r} is not a shot index") from None
    return np.asarray(out, dtype=np.int64)


class UnlabelledFrames(LazyFile, Dataset):
    """Frames of one file without labels; an item ``(position, seed1, seed2)`` gives two augmented views.

    Args:
        path: the file.
        indices: (n,) shot indices used.
        transform: frame → image, with the training augmentations.
    """

    def __init__(self, path: str | Path, indices: np.ndarray, transform: ShotTransform) -> None:
        self.path = Path(path)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        LazyFile.__init__(self)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        position, s1, s2 = (int(v) for v in key)
        frame = self.reader[int(self.indices[position])]
        return (self.transform(frame, np.random.default_rng(s1)), self.transform(frame, np.random.default_rng(s2)))


class _PairSampler(Sampler):
    """Batches of ``(position, seed1, seed2)`` drawn uniformly (without replacement within a batch) from
    ``n`` frames, from (seed, epoch)."""

    def __init__(self, n: int, batch: int, n_batches: int, seed: int, epoch: int) -> None:
        self.n, self.batch, self.n_batches = n, min(batch, n), n_batches
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch, 0xADA])
        for _ in range(self.n_batches):
            pos = rng.choice(self.n, self.batch, replace=False)
            seeds = rng.integers(0, 2**62, size=(self.batch, 2))
            yield [(int(p), int(a), int(b)) for p, (a, b) in zip(pos, seeds, strict=True)]


def open_unlabelled(cfg: Config, sources: Sequence[UnlabelledConfig]) -> list[UnlabelledFrames]:
    """The unlabelled files of a run, each with its own detector's training transform.

    Raises:
        InputFileError: a missing file, an index beyond the file, or no frame left.
    """
    out = []
    for i, src in enumerate(sources):
        with CXIReader(src.path) as r:
            n = len(r)
            shape, pos, mask = r.frame_shape, r.pixel_position, r.mask
        idx = np.arange(n) if src.indices is None else read_indices(src.indices)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise InputFileError(f"data.unlabelled[{i}]: index {int(idx.max())} is beyond the {n} shots of {src.path}")
        if src.max_shots is not None:
            idx = idx[: src.max_shots]
        if len(idx) < 2:
            raise InputFileError(f"data.unlabelled[{i}]: {src.path} gives fewer than 2 frames")
        t = ShotTransform(cfg.preprocess, cfg.augment, shape, pos, mask)
        out.append(UnlabelledFrames(src.path, idx, t))
    return out


def unlabelled_batches(frames: Sequence[UnlabelledFrames], cfg: Config, epoch: int, n_batches: int
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(view1, view2) batches (b, 1, S, S) of one epoch, cycling over the unlabelled files in turn.

    Draws are from (``train.seed``, epoch, file number), so an epoch replays exactly.
    """
    loaders = []
    for i, ds in enumerate(frames):
        share = n_batches // len(frames) + (1 if i < n_batches % len(frames) else 0)
        if share == 0:
            continue
        sampler = _PairSampler(len(ds), cfg.adapt.batch, share, cfg.train.seed * 1000 + i, epoch)
        loaders.append(iter(DataLoader(ds, batch_sampler=sampler, num_workers=cfg.data.num_workers)))
    while loaders:
        for it in list(loaders):
            try:
                yield next(it)
            except StopIteration:
                loaders.remove(it)


__all__ = [
    "UnlabelledFrames", "UnlabelledLoss", "adapt_batchnorm", "batchnorm_layers", "consistency_loss", "image_batches",
    "mmd_loss", "open_unlabelled", "read_indices", "unlabelled_batches",
]
