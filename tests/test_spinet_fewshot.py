"""Few-shot rules against hand computations."""

from __future__ import annotations

import pytest
import torch

from spinet.fewshot import FewShotClassifier, accuracy
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
            if rule == "mean":
                row.append(sum(sq(q, s) for s in sup) / len(sup))
            else:
                proto = [sum(s[d] for s in sup) / len(sup) for d in range(2)]
                row.append(sq(q, proto))
        out.append(row)
    return out


@pytest.mark.parametrize("rule", ["mean", "prototype"])
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
        FewShotClassifier(torch.tensor(SUPPORT), torch.tensor(CLASSES), ["a", "b"], "knn")
