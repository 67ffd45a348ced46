import math

import numpy as np
import pytest

from mldoctor_bench.metrics import classification_metrics, membership_metrics, tpr_at_fpr


def test_membership_metrics_hand_computed():
    labels = [1, 1, 0, 0]
    scores = [0.9, 0.4, 0.6, 0.1]
    preds = [1, 0, 1, 0]
    m = membership_metrics(labels, scores, preds)
    # pairs (member, non-member) ranked right: (.9,.6) (.9,.1) (.4,.1); wrong: (.4,.6) -> 3/4
    assert m["auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)  # tp=1, fp=1
    assert m["recall"] == pytest.approx(0.5)  # tp=1, fn=1
    assert m["f1"] == pytest.approx(0.5)
    # thresholds: >=0.9 gives tpr .5 fpr 0 -> advantage .5; >=0.4 gives 1 - .5 = .5
    assert m["advantage"] == pytest.approx(0.5)
    assert m["tpr_at_fpr_0.001"] == pytest.approx(0.5)
    assert m["n_members"] == 2 and m["n_nonmembers"] == 2


def test_perfect_and_inverted_attacks():
    labels = np.r_[np.ones(50), np.zeros(50)]
    scores = np.r_[np.linspace(0.6, 1, 50), np.linspace(0, 0.4, 50)]
    m = membership_metrics(labels, scores, scores > 0.5)
    assert m["auc"] == 1.0 and m["advantage"] == 1.0 and m["tpr_at_fpr_0.01"] == 1.0
    m = membership_metrics(labels, -scores, -scores > -0.5)
    assert m["auc"] == 0.0 and m["advantage"] == 0.0 and m["accuracy"] == 0.0


def test_tpr_at_fpr_needs_the_threshold_below_the_limit():
    # one non-member scores above every member: any TPR > 0 costs FPR 0.25
    labels = [1, 1, 0, 0, 0, 0]
    scores = [0.8, 0.7, 0.9, 0.1, 0.2, 0.3]
    assert tpr_at_fpr(np.array(labels), np.array(scores), 0.1) == 0.0
    assert tpr_at_fpr(np.array(labels), np.array(scores), 0.25) == 1.0


def test_membership_metrics_reject_one_class():
    with pytest.raises(ValueError, match="both members and non-members"):
        membership_metrics([1, 1], [0.1, 0.2], [1, 1])


def test_classification_metrics_hand_computed():
    m = classification_metrics([0, 0, 0, 1], [0, 0, 1, 1])
    assert m["accuracy"] == 0.75
    assert m["baseline_accuracy"] == 0.75
    # class 0: tp 2 fp 0 fn 1 -> 4/5; class 1: tp 1 fp 1 fn 0 -> 2/3
    assert math.isclose(m["f1"], (0.8 + 2 / 3) / 2)


def test_low_fpr_figures_on_too_few_nonmembers_are_flagged():
    from mldoctor_bench.metrics import too_few_negatives

    assert too_few_negatives("tpr_at_fpr_0.001", 500)
    assert not too_few_negatives("tpr_at_fpr_0.001", 1000)
    assert not too_few_negatives("tpr_at_fpr_0.01", 500)
    assert not too_few_negatives("auc", 10)
