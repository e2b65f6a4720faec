"""Few-shot rules against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinet.fewshot import FewShotClassifier, accuracy, log_distance_ratio
from spisim.errors import ConfigError


def sq(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


SUPPORT = [[0.0, 0.0], [4.0, 0.0], [2.5, 0.0], [2.5, 0.2]]
CLASSES = [0, 0, 1, 1]
QUERIES = [[2.0, 0.0], [-1.0, 0.5], [2.6, 0.1], [9.0, -3.0]]


def hand(rule):
    out = []
    for q in QUERIES:
        row = []
        for c in (0, 1):
            sup = [s for s, k in zip(SUPPORT, CLASSES, strict=True) if k == c]
            dists = sorted(sq(q, s) for s in sup)
            if rule == "mean":
                row.append(sum(dists) / len(sup))
            elif rule == "nearest":
                row.append(dists[0])
            elif rule == "knn":  # 3 nearest, or all where the class has fewer
                row.append(sum(dists[:3]) / len(dists[:3]))
            else:
                proto = [sum(s[d] for s in sup) / len(sup) for d in range(2)]
                row.append(sq(q, proto))
        out.append(row)
    return out


@pytest.mark.parametrize("rule", ["mean", "prototype", "nearest", "knn"])
def test_rules_match_hand_computation(rule):
    clf = FewShotClassifier(torch.tensor(SUPPORT), torch.tensor(CLASSES), ["a", "b"], rule)
    pred, dist = clf.predict(torch.tensor(QUERIES))
    ref = hand(rule)
    assert dist.flatten().tolist() == pytest.approx([v for r in ref for v in r], rel=1e-5)
    assert pred.tolist() == [min((0, 1), key=lambda c, r=r: r[c]) for r in ref]


def test_rules_differ_where_they_should():
    # the first query sits on class a's prototype but is nearer to b's supports on average
    mean = FewShotClassifier(torch.tensor(SUPPORT), torch.tensor(CLASSES), ["a", "b"], "mean")
    proto = FewShotClassifier(torch.tensor(SUPPORT), torch.tensor(CLASSES), ["a", "b"], "prototype")
    q = torch.tensor([QUERIES[0]])
    assert mean.predict(q)[0].item() == 1 and proto.predict(q)[0].item() == 0


def test_neighbour_rules_handle_a_class_with_two_modes():
    # class 0 is a mixture of two tight clusters (like droplets and salt among unintended hits), class 1 one
    # broad cluster between them; a query right on one mode of class 0
    support = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 0.0], [10.1, 0.0], [10.0, 0.1],
                            [3.0, 0.0], [4.0, 0.0], [5.0, 0.0]])
    classes = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1])
    q = torch.tensor([[0.05, 0.05]])
    pred = {rule: FewShotClassifier(support, classes, ["mixed", "broad"], rule).predict(q)[0].item()
            for rule in ("mean", "nearest", "knn")}
    assert pred == {"mean": 1, "nearest": 0, "knn": 0}  # the mean over both modes pulls the shot away
    two = FewShotClassifier(support, classes, ["mixed", "broad"], "knn", neighbours=2).distances(q)
    d = ((support - q) ** 2).sum(dim=1)
    assert two[0, 0].item() == pytest.approx(float(d[:3].sort().values[:2].mean()), rel=1e-5)
    assert two[0, 1].item() == pytest.approx(float(d[6:].sort().values[:2].mean()), rel=1e-5)
    with pytest.raises(ConfigError, match="neighbours"):
        FewShotClassifier(support, classes, ["mixed", "broad"], "knn", neighbours=0)


def test_unknown_threshold_and_errors():
    clf = FewShotClassifier(torch.tensor(SUPPORT), torch.tensor(CLASSES), ["a", "b"], "prototype", threshold=1.0)
    pred, dist = clf.predict(torch.tensor(QUERIES))
    assert pred.tolist()[3] == -1  # far from everything
    assert pred.tolist()[2] == 1
    truth = [1, 0, 1, 1]
    assert accuracy(pred, torch.tensor(truth)) == pytest.approx(
        sum(p == t for p, t in zip(pred.tolist(), truth, strict=True)) / 4
    )
    assert accuracy(pred, torch.tensor(truth)) < 1.0  # unknown counts as wrong
    with pytest.raises(ConfigError, match="no support shots of class c"):
        FewShotClassifier(torch.tensor(SUPPORT), torch.tensor(CLASSES), ["a", "b", "c"])
    with pytest.raises(ConfigError, match="rule"):
        FewShotClassifier(torch.tensor(SUPPORT), torch.tensor(CLASSES), ["a", "b"], "median")


def test_ratio_test_by_hand():
    # nearest rule on SUPPORT: query 0 (2, 0) is 0.25 from class 1 and 4 from class 0 (ratio 16); query 2
    # (2.6, 0.1) is 0.02 from class 1 and 1.97 from class 0 (98.5); query 1 (-1, 0.5) is 1.25 from class 0
    # and 12.34 from class 1 (9.872).
    support, classes, q = torch.tensor(SUPPORT), torch.tensor(CLASSES), torch.tensor(QUERIES[:3])
    plain, dist = FewShotClassifier(support, classes, ["a", "b"], "nearest").predict(q)
    assert plain.tolist() == [1, 0, 1]
    ratio = (dist.max(dim=1).values / dist.min(dim=1).values).tolist()
    assert ratio == pytest.approx([16.0, 12.34 / 1.25, 98.5], rel=1e-4)
    for r, want in ((1.0, [1, 0, 1]), (12.0, [1, -1, 1]), (20.0, [-1, -1, 1]), (100.0, [-1, -1, -1])):
        pred, _ = FewShotClassifier(support, classes, ["a", "b"], "nearest", min_ratio=r).predict(q)
        assert pred.tolist() == want, r
    # with three classes the test compares the two nearest: a third class far away changes nothing
    far = torch.cat([support, torch.tensor([[100.0, 100.0]])])
    pred, _ = FewShotClassifier(far, torch.tensor([*CLASSES, 2]), ["a", "b", "c"], "nearest",
                                min_ratio=12.0).predict(q)
    assert pred.tolist() == [1, -1, 1]
    with pytest.raises(ConfigError, match="min_ratio must be >= 1"):
        FewShotClassifier(support, classes, ["a", "b"], "nearest", min_ratio=0.5)


def test_log_distance_ratio():
    d = np.array([[4.0, 1.0, 2.0], [1.0, 3.0, 9.0], [0.0, 0.0, 5.0]])
    positive = np.array([False, True, False])
    got = log_distance_ratio(d, positive)
    assert got[0] == pytest.approx(np.log(2.0 / 1.0))  # nearest negative 2, positive 1
    assert got[1] == pytest.approx(np.log(1.0 / 3.0))  # a negative class nearest: < 0
    assert np.isfinite(got[2]) and got[2] == pytest.approx(0.0)  # both zero: floored, a tie
    # scale-free: the same ranking whatever the units of the embedding distances
    assert log_distance_ratio(7.5 * d, positive) == pytest.approx(got)
    with pytest.raises(ValueError, match="positive and one negative"):
        log_distance_ratio(d, np.ones(3, dtype=bool))
