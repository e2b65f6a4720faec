"""Triplet loss and miners against hand computations in plain Python on tiny batches."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from spinet.losses import BatchAllMiner, RandomSemiHardMiner, TripletCriterion, build_miner


def sqdist(x: list[float], y: list[float]) -> float:
    return sum((a - b) ** 2 for a, b in zip(x, y, strict=True))


def batch(seed: int = 0, n: int = 7, dim: int = 3, labels: list[int] | None = None):
    rnd = random.Random(seed)
    emb = [[rnd.uniform(-1, 1) for _ in range(dim)] for _ in range(n)]
    labels = labels or [rnd.randrange(3) for _ in range(n)]
    return emb, labels


def hand_loss(emb, triplets, margin, nonzero=False):
    losses = [max(0.0, sqdist(emb[a], emb[p]) - sqdist(emb[a], emb[n]) + margin) for a, p, n in triplets]
    if nonzero:
        losses = [v for v in losses if v > 0]
    return sum(losses) / len(losses) if losses else 0.0


def all_triplets(labels):
    n = len(labels)
    return [
        (a, p, q)
        for a, p, q in itertools.product(range(n), repeat=3)
        if a != p and labels[a] == labels[p] and labels[q] != labels[a]
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_all_matches_hand_computation(dtype, seed):
    emb, labels = batch(seed, labels=[0, 0, 1, 1, 2, 0, 1])
    e, y = torch.tensor(emb, dtype=dtype), torch.tensor(labels)
    a, p, n = BatchAllMiner()(e, y)
    mined = sorted(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert mined == sorted(all_triplets(labels))
    margin = 0.7
    for reduction, nonzero in (("mean_nonzero", True), ("mean", False)):
        crit = TripletCriterion(margin, "batch_all", reduction)
        got = float(crit(e, y))
        assert got == pytest.approx(hand_loss(emb, all_triplets(labels), margin, nonzero), rel=1e-5, abs=1e-6)
        assert crit.last_n_triplets == len(all_triplets(labels))


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_batch_hard_matches_hand_computation(seed):
    emb, labels = batch(seed, n=8, labels=[0, 1, 0, 2, 1, 2, 0, 1])
    triplets = []
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [q for q in range(len(labels)) if labels[q] != labels[a]]
        p = max(pos, key=lambda j: sqdist(emb[a], emb[j]))
        q = min(neg, key=lambda j: sqdist(emb[a], emb[j]))
        triplets.append((a, p, q))
    e, y = torch.tensor(emb, dtype=torch.float64), torch.tensor(labels)
    a, p, n = build_miner("batch_hard", 0.2)(e, y)
    assert sorted(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == sorted(triplets)
    crit = TripletCriterion(0.2, "batch_hard")
    assert float(crit(e, y)) == pytest.approx(hand_loss(emb, triplets, 0.2), rel=1e-9)


def test_random_semihard_follows_the_paper_rule():
    margin = 0.5
    emb, labels = batch(5, n=10, dim=2, labels=[0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    e, y = torch.tensor(emb, dtype=torch.float64), torch.tensor(labels)
    miner = RandomSemiHardMiner(margin, seed=0)
    seen_pos: dict[int, set] = {a: set() for a in range(10)}
    seen_neg: dict[tuple, set] = {}
    for s in range(300):
        miner.reseed(s)
        a, p, n = miner(e, y)
        assert sorted(a.tolist()) == list(range(10))  # every anchor has a positive and a negative
        for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist(), strict=True):
            assert pi != ai and labels[pi] == labels[ai] and labels[ni] != labels[ai]
            d_ap = sqdist(emb[ai], emb[pi])
            negs = [q for q in range(10) if labels[q] != labels[ai]]
            semi = [q for q in negs if d_ap < sqdist(emb[ai], emb[q]) < d_ap + margin]
            assert ni in (semi if semi else negs)
            seen_pos[ai].add(pi)
            seen_neg.setdefault((ai, pi), set()).add(ni)
    # random, not fixed: every positive gets drawn, and every semi-hard negative of a pair gets drawn
    for ai in range(10):
        assert seen_pos[ai] == {p for p in range(10) if p != ai and labels[p] == labels[ai]}
    for (ai, pi), got in seen_neg.items():
        d_ap = sqdist(emb[ai], emb[pi])
        negs = [q for q in range(10) if labels[q] != labels[ai]]
        semi = [q for q in negs if d_ap < sqdist(emb[ai], emb[q]) < d_ap + margin]
        if len(semi) > 1:
            assert len(got) >= 2


def test_random_semihard_exact_small_case_and_fallback():
    # anchor 0, its only positive 1 at d = 1; negatives: 2 at d = 1.25 (semi-hard for margin 0.5), 3 at d = 4
    emb = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.118033988749895], [0.0, 2.0]]
    labels = [0, 0, 1, 2]
    e, y = torch.tensor(emb, dtype=torch.float64), torch.tensor(labels)
    for s in range(20):
        a, p, n = RandomSemiHardMiner(0.5, seed=s)(e, y)
        trip = dict(zip(a.tolist(), zip(p.tolist(), n.tolist(), strict=True), strict=True))
        assert trip[0] == (1, 2)
        assert set(trip) == {0, 1}  # anchors 2 and 3 have no positive
    # margin so small that nothing is semi-hard: a random negative instead (both get drawn)
    drawn = {RandomSemiHardMiner(1e-3, seed=s)(e, y)[2][0].item() for s in range(40)}
    assert drawn == {2, 3}
    # the criterion's loss is the hand loss of the triplets its miner draws (same seed, same draw)
    crit = TripletCriterion(0.5, "random_semihard")
    crit.reseed(7)
    got = float(crit(e, y))
    crit.reseed(7)
    a, p, n = crit.mine(e, y)
    triplets = list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert (0, 1, 2) in triplets and len(triplets) == 2
    assert got == pytest.approx(hand_loss(emb, triplets, 0.5), rel=1e-12)


@pytest.mark.parametrize("miner", ["random_semihard", "batch_hard", "batch_all"])
@pytest.mark.parametrize("labels", [[1, 1, 1, 1], [0, 1, 2, 3]])
def test_no_valid_triplets_gives_zero_loss_with_zero_gradient(miner, labels):
    e = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    crit = TripletCriterion(0.2, miner)
    loss = crit(e, torch.tensor(labels))
    assert crit.last_n_triplets == 0
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert e.grad is not None and torch.count_nonzero(e.grad) == 0


def test_loss_gradient_pulls_positive_in_and_pushes_negative_out():
    e = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]], requires_grad=True)
    crit = TripletCriterion(1.0, "batch_all", "mean")
    loss = crit(e, torch.tensor([0, 0, 1]))
    loss.backward()
    # anchor 0: d_ap = 1, d_an = 0.25 -> violating; gradient on the positive points towards the anchor
    assert float(loss.detach()) > 0
    assert e.grad[1, 0] > 0  # descending moves point 1 towards -x, i.e. towards the anchor
