"""Triplet loss on squared L2 distance with online mining, built on pytorch-metric-learning.

Loss of a triplet (anchor a, positive p, negative n): max(0, d(a, p) − d(a, n) + margin) with
d(x, y) = ‖x − y‖² (SpeckleNN's choice); the batch loss is the mean over mined triplets (or over those
with positive loss). Miners:

* ``random_semihard`` (the paper's): for each anchor a random positive, then a random semi-hard
  negative, d(a, p) < d(a, n) < d(a, p) + margin, else a random negative: one triplet per anchor that
  has both a positive and a negative in the batch;
* ``batch_hard``: for each anchor the farthest positive and the nearest negative (Hermans et al. 2017);
* ``batch_all``: every valid triplet (anchor, positive ≠ anchor of its class, negative of another class).

A batch without any valid triplet gives a loss of 0 that still back-propagates (zero gradients).
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import BaseMiner, BatchHardMiner
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

MINERS = ("random_semihard", "batch_hard", "batch_all")


def squared_l2() -> LpDistance:
    """pytorch-metric-learning distance d(x, y) = ‖x − y‖² (no re-normalisation of embeddings)."""
    return LpDistance(normalize_embeddings=False, p=2, power=2)


class RandomSemiHardMiner(BaseMiner):
    """SpeckleNN's random semi-hard mining: one (a, p, n) per anchor, drawn with this miner's generator.

    Args:
        margin: the triplet margin (squared distance units).
        seed: seed of the miner's own ``torch.Generator`` (see :meth:`reseed`).
    """

    def __init__(self, margin: float, seed: int = 0, **kwargs) -> None:
        kwargs.setdefault("distance", squared_l2())
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(seed))

    def reseed(self, seed: int) -> None:
        """Restart the random stream (the trainer does this at each epoch with (seed, epoch))."""
        self.generator.manual_seed(int(seed))

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        n, n_ref = mat.shape
        same = labels[:, None] == ref_labels[None, :]
        pos = same.clone()
        if ref_emb is embeddings:
            pos.fill_diagonal_(False)
        neg = ~same
        r_pos = torch.rand(n, n_ref, generator=self.generator).to(mat.device)
        r_neg = torch.rand(n, n_ref, generator=self.generator).to(mat.device)
        p_idx = torch.where(pos, r_pos, torch.full_like(r_pos, -1.0)).argmax(dim=1)
        d_ap = mat.gather(1, p_idx[:, None])
        semi = neg & (mat > d_ap) & (mat < d_ap + self.margin)
        candidates = torch.where(semi.any(dim=1, keepdim=True), semi, neg)
        n_idx = torch.where(candidates, r_neg, torch.full_like(r_neg, -1.0)).argmax(dim=1)
        keep = pos.any(dim=1) & neg.any(dim=1)
        a_idx = torch.arange(n, device=mat.device)
        return a_idx[keep], p_idx[keep], n_idx[keep]


class BatchAllMiner(BaseMiner):
    """Every valid triplet of the batch (a ≠ p of one class, n of another)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("distance", squared_l2())
        super().__init__(**kwargs)

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        return lmu.get_all_triplets_indices(labels, ref_labels)


def build_miner(name: str, margin: float, seed: int = 0) -> BaseMiner:
    """A miner by name: ``random_semihard``, ``batch_hard`` or ``batch_all``."""
    if name == "random_semihard":
        return RandomSemiHardMiner(margin, seed=seed)
    if name == "batch_hard":
        return BatchHardMiner(distance=squared_l2())
    if name == "batch_all":
        return BatchAllMiner()
    raise ValueError(f"unknown miner {name!r}: use one of {', '.join(MINERS)}")


class TripletCriterion(nn.Module):
    """Mine triplets in a batch and return the triplet loss.

    Args:
        margin: squared-distance margin.
        miner: ``random_semihard``, ``batch_hard`` or ``batch_all``.
        reduction: ``mean`` (over mined triplets) or ``mean_nonzero`` (over triplets with positive loss);
            None: ``mean_nonzero`` for batch_all, ``mean`` otherwise.
        seed: seed of the random miner.
    """

    def __init__(
        self, margin: float = 0.2, miner: str = "random_semihard", reduction: str | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        self.margin = float(margin)
        self.miner_name = miner
        self.miner = build_miner(miner, margin, seed)
        if reduction is None:
            reduction = "mean_nonzero" if miner == "batch_all" else "mean"
        reducer = MeanReducer() if reduction == "mean" else AvgNonZeroReducer()
        self.loss = TripletMarginLoss(margin=self.margin, distance=squared_l2(), reducer=reducer)
        self.last_n_triplets = 0

    def reseed(self, seed: int) -> None:
        """Reseed the random miner (no effect on deterministic miners)."""
        if isinstance(self.miner, RandomSemiHardMiner):
            self.miner.reseed(seed)

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(anchor, positive, negative) index tensors."""
        return self.miner(embeddings, labels)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar loss of embeddings (B, D) with class ids (B,)."""
        triplets = self.mine(embeddings, labels)
        self.last_n_triplets = int(triplets[0].numel())
        if self.last_n_triplets == 0:
            return (embeddings * 0.0).sum()
        return self.loss(embeddings, labels, triplets)
