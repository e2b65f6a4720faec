"""Metrics against hand-computed cases and against scikit-learn's independent implementation."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from spinet.metrics import (
    classification_metrics,
    confusion_by_group,
    confusion_matrix,
    is_single_class,
    json_safe,
    measure_throughput,
    recall_at_precision,
    single_hit_pr_curve,
    spread,
)

NAMES = ["no_hit", "single", "multi", "unintended"]


def test_confusion_matrix_by_hand():
    truth = [0, 0, 1, 1, 1, 2, 3, 3]
    pred = [0, 1, 1, 1, -1, 3, 3, 2]
    cm = confusion_matrix(truth, pred, 4)
    expected = np.array([
        [1, 1, 0, 0, 0],
        [0, 2, 0, 0, 1],
        [0, 0, 0, 1, 0],
        [0, 0, 1, 1, 0],
    ])
    np.testing.assert_array_equal(cm, expected)
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match="true class ids"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="predicted class ids"):
        confusion_matrix([0, 1], [0, -2], 2)


def test_metrics_by_hand():
    # 10 shots; hand-computed: correct = 0,0,1,1,2,3 -> 6/10
    truth = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    pred = [0, 0, 1, 1, 1, 2, 2, 0, 3, -1]
    m = classification_metrics(truth, pred, NAMES)
    assert m.n == 10
    assert m.accuracy == pytest.approx(0.6)
    # no_hit: TP 2, predicted 3 (0,0,0 at index 7) -> P 2/3, R 2/3
    assert m.precision["no_hit"] == pytest.approx(2 / 3)
    assert m.recall["no_hit"] == pytest.approx(2 / 3)
    # single: TP 2, predicted 3, true 3 -> 2/3, 2/3
    assert m.precision["single"] == pytest.approx(2 / 3)
    # multi: TP 1, predicted 2, true 2 -> 1/2, 1/2
    assert m.precision["multi"] == pytest.approx(0.5) and m.recall["multi"] == pytest.approx(0.5)
    # unintended: TP 1, predicted 1, true 2 (one "unknown") -> P 1, R 1/2, F1 2/3
    assert m.precision["unintended"] == pytest.approx(1.0)
    assert m.recall["unintended"] == pytest.approx(0.5)
    assert m.f1["unintended"] == pytest.approx(2 / 3)
    assert m.macro_f1 == pytest.approx(np.mean([2 / 3, 2 / 3, 0.5, 2 / 3]))
    # single hits as binary: predicted single 3 (idx 2, 3, 4), of which true single 2; true single 3
    assert m.single_precision == pytest.approx(2 / 3)
    assert m.single_recall == pytest.approx(2 / 3)
    assert m.support == {"no_hit": 3, "single": 3, "multi": 2, "unintended": 2}
    assert m.confusion[3][4] == 1  # the unknown
    assert m.answered == pytest.approx(0.9)


def test_undefined_precision_is_nan_and_f1_zero():
    truth = [0, 0, 1, 1]
    pred = [0, 0, 0, 0]  # class 1 never predicted
    m = classification_metrics(truth, pred, ["no_hit", "single"])
    assert math.isnan(m.precision["single"])
    assert m.recall["single"] == 0.0
    assert m.f1["single"] == 0.0
    assert math.isnan(m.single_precision) and m.single_recall == 0.0
    # a class that never occurs and is never predicted is left out of macro F1 (sklearn's default labels)
    m3 = classification_metrics(truth, pred, ["no_hit", "single", "multi"])
    assert math.isnan(m3.f1["multi"])
    assert m3.macro_f1 == pytest.approx(m.macro_f1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.6, truth, rng.integers(0, 4, 200))
    m = classification_metrics(truth, pred, NAMES)
    assert m.accuracy == pytest.approx(np.mean(truth == pred))
    assert m.macro_f1 == pytest.approx(f1_score(truth, pred, average="macro"))
    p = precision_score(truth, pred, average=None, labels=range(4), zero_division=0)
    r = recall_score(truth, pred, average=None, labels=range(4), zero_division=0)
    for i, name in enumerate(NAMES):
        assert m.precision[name] == pytest.approx(p[i])
        assert m.recall[name] == pytest.approx(r[i])
    binary_t, binary_p = truth == 1, pred == 1
    assert m.single_precision == pytest.approx(precision_score(binary_t, binary_p))
    assert m.single_recall == pytest.approx(recall_score(binary_t, binary_p))


def test_single_hits_of_structure_classes_are_merged():
    names = ["no_hit", "a/single", "b/single", "a/multi"]
    assert [is_single_class(n) for n in names] == [False, True, True, False]
    truth = [1, 2, 1, 3, 0]
    pred = [2, 2, 3, 1, 0]  # a/single -> b/single still counts as a single hit
    m = classification_metrics(truth, pred, names)
    # predicted single: idx 0, 1, 3 -> true single at 0, 1 -> precision 2/3; true single 0, 1, 2 -> recall 2/3
    assert m.single_precision == pytest.approx(2 / 3)
    assert m.single_recall == pytest.approx(2 / 3)
    assert m.accuracy == pytest.approx(2 / 5)
    assert math.isnan(classification_metrics([0, 1], [0, 1], ["no_hit", "multi"]).single_precision)


def test_pr_curve_by_hand():
    names = ["no_hit", "single"]
    truth = np.array([1, 0, 1, 0])
    score = np.array([0.9, 0.8, 0.7, 0.1])
    c = single_hit_pr_curve(truth, score, names)
    assert c is not None
    # score >= 0.1: P 2/4 R 1; >= 0.7: P 2/3 R 1; >= 0.8: P 1/2 R 1/2; >= 0.9: P 1 R 1/2; then (1, 0)
    np.testing.assert_allclose(c.precision, [0.5, 2 / 3, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(c.recall, [1.0, 1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(c.thresholds, [0.1, 0.7, 0.8, 0.9])
    assert c.average_precision == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)  # sum of (R_n - R_n+1) P_n
    assert single_hit_pr_curve(np.array([0, 0]), np.array([0.1, 0.2]), names) is None
    assert single_hit_pr_curve(np.array([0, 1]), np.array([0.1, 0.2]), ["no_hit", "multi"]) is None


def test_recall_at_precision_by_hand():
    names = ["no_hit", "single"]
    # scores in falling order: S S S N S N S S; thresholds keep the top 1..8 shots
    truth = np.array([1, 1, 1, 0, 1, 0, 1, 1])
    score = np.arange(8, 0, -1, dtype=float)
    c = single_hit_pr_curve(truth, score, names)
    # top 3: P 1, R 3/6; top 5: P 4/5, R 4/6; all 8: P 6/8, R 1
    assert recall_at_precision(c, 0.98) == pytest.approx(3 / 6)
    assert recall_at_precision(c, 0.8) == pytest.approx(4 / 6)
    assert recall_at_precision(c, 0.75) == pytest.approx(1.0)
    # a non-single scored highest: no threshold reaches 98 %, but the curve's end point (P 1, R 0) gives 0
    worst = single_hit_pr_curve(np.array([0, 1, 1]), np.array([3.0, 2.0, 1.0]), names)
    assert recall_at_precision(worst, 0.98) == 0.0
    assert math.isnan(recall_at_precision(None))


def test_spread_and_format():
    s = spread([0.9, 0.95, 1.0, float("nan"), None])
    assert s.n == 3
    assert s.mean == pytest.approx(0.95)
    assert s.std == pytest.approx(np.std([0.9, 0.95, 1.0], ddof=1))
    assert (s.min, s.max) == (0.9, 1.0)
    assert s.format() == "0.950 ± 0.050"
    assert s.format(percent=True) == "95.0 ± 5.0 %"
    one = spread([0.5])
    assert math.isnan(one.std) and one.format() == "0.500"
    assert spread([]).format() == "—"
    assert json_safe(s.to_dict())["n"] == 3
    assert json_safe({"a": float("nan"), "b": [np.float32(1.5), np.int64(2)]}) == {"a": None, "b": [1.5, 2]}


def test_throughput_counts_shots_and_time():
    calls = []

    def predict(batch):
        calls.append(len(batch))
        time.sleep(0.01)

    batches = [np.zeros((8, 1)), np.zeros((8, 1)), np.zeros((4, 1))]
    t = measure_throughput(predict, batches, warmup=1)
    assert calls[0] == 8 and len(calls) == 4  # one warm-up call, then the three batches
    assert t.n_shots == 20 and t.batch_size == 8
    assert 20 / 0.03 * 0.3 < t.shots_per_s <= 20 / 0.03 * 1.05
    assert t.seconds_per_batch == pytest.approx(20 / t.shots_per_s / 3)
    with pytest.raises(ValueError):
        measure_throughput(predict, [])


def test_confusion_by_group_splits_the_matrix():
    groups = ["a", "b", "a", "", "b", "a"]
    truth = [1, 1, 2, 0, 2, 1]
    pred = [1, 2, 1, 0, 2, -1]
    by = confusion_by_group(groups, truth, pred, 3)
    assert list(by) == ["", "a", "b"]
    np.testing.assert_array_equal(by["a"], [[0, 0, 0, 0], [0, 1, 0, 1], [0, 1, 0, 0]])
    np.testing.assert_array_equal(by["b"], [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(by[""], [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    total = sum(np.array(m) for m in by.values())
    np.testing.assert_array_equal(total, confusion_matrix(truth, pred, 3))
    with pytest.raises(ValueError, match="differ in length"):
        confusion_by_group(["a"], [0, 1], [0, 1], 2)


def test_per_structure_summary_sums_seeds_at_the_plot_k():
    from spinet.report import per_structure_summary
    from spinet.study import RunRecord

    names = ["no_hit", "single", "multi"]

    def record(seed, k, truth, pred, groups, sweep=(None, None)):
        m = classification_metrics(truth, pred, names)
        return RunRecord("siamese", "siamese", "sim", "t", "t", sweep[0], sweep[1], k, seed, m, 10, 1.0,
                         by_structure=confusion_by_group(groups, truth, pred, 3))

    records = [
        record(0, 5, [1, 1, 2, 0], [1, 2, 2, 0], ["cap", "cap", "cap", ""]),
        record(1, 5, [1, 1, 2, 0], [1, 1, 1, 0], ["cap", "rib", "cap", ""]),
        record(0, 1, [1, 1, 2, 0], [0, 0, 0, 0], ["cap", "cap", "cap", ""]),  # another k: left out
        record(0, 5, [1], [2], ["cap"], sweep=("fluence_scale", 0.1)),  # a perturbed sweep point: left out
    ]
    rows = {(r["structure"], r["class"]): r for r in per_structure_summary(records, names, plot_k=5)}
    assert set(rows) == {("cap", "single"), ("cap", "multi"), ("rib", "single"), ("(none)", "no_hit")}
    cap_single = rows[("cap", "single")]
    assert (cap_single["shots"], cap_single["correct"]) == (3, 2)
    assert cap_single["recall"] == pytest.approx(2 / 3) and cap_single["read_as"] == {"single": 2, "multi": 1}
    assert rows[("cap", "multi")]["read_as"] == {"multi": 1, "single": 1}
    assert rows[("rib", "single")]["correct"] == 1
