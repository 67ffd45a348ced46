"""Song & Mittal's metric attacks: signals, class-wise thresholds, no peeking, and leakage found."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mldoctor_bench.attacks import ATTACKS, membership_metric
from mldoctor_bench.attacks.membership_metric import metric_signals
from mldoctor_bench.attacks.scoring import best_threshold, classwise_thresholds
from mldoctor_bench.attacks.signals import entropy, modified_entropy


def test_entropies_match_their_definitions():
    torch.manual_seed(0)
    lp = torch.log_softmax(2 * torch.randn(6, 4, dtype=torch.float64), 1)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    p = lp.exp()
    assert torch.allclose(entropy(lp), -(p * p.log()).sum(1), atol=1e-12)
    py = p.gather(1, y.view(-1, 1)).squeeze(1)
    others = torch.where(torch.nn.functional.one_hot(y, 4).bool(), 0.0, p * torch.log1p(-p)).sum(1)
    assert torch.allclose(modified_entropy(lp, y), -(1 - py) * py.log() - others, atol=1e-12)


def test_signals_keep_their_order_where_probabilities_round_to_one():
    # logit margins of 40 and 60: p_y is exactly 1.0 in float64, yet the larger margin is more member-like
    lp = torch.log_softmax(torch.tensor([[40.0, 0, 0], [60.0, 0, 0]], dtype=torch.float64), 1)
    assert lp.exp()[:, 0].tolist() == [1.0, 1.0]
    signals = metric_signals(lp, torch.tensor([0, 0]))
    for variant in ("confidence", "entropy", "modified_entropy"):
        assert signals[variant][1] > signals[variant][0], variant
    assert signals["correctness"].tolist() == [1.0, 1.0]
    # a confident wrong prediction: low entropy, but high modified entropy (a non-member signal)
    wrong = metric_signals(lp, torch.tensor([1, 1]))
    assert wrong["entropy"][0] == signals["entropy"][0]
    assert wrong["modified_entropy"][0] < -70


def test_best_threshold_maximises_balanced_accuracy_by_hand():
    # t=3: TPR 4/4, TNR 2/3 -> 0.833; t=4: TPR 3/4, TNR 3/3 -> 0.875; t=5: 0.75
    t, acc = best_threshold(np.array([3.0, 4, 5, 6]), np.array([1.0, 2, 3.5]))
    assert t == 4.0 and acc == pytest.approx(0.875)
    # tie between t=3 and t=4 (both 5/6): the smallest wins
    assert best_threshold(np.array([3.0, 4, 5]), np.array([1.0, 2, 3.5]))[0] == 3.0


def test_classwise_thresholds_by_hand():
    # class 0 separates at 10, class 1 at 0; class 2 has no non-members -> global threshold
    m_sig = np.array([10.0, 11, 0, 1, 5])
    m_lab = np.array([0, 0, 1, 1, 2])
    n_sig = np.array([8.0, 9, -2, -1])
    n_lab = np.array([0, 0, 1, 1])
    thr = classwise_thresholds(m_sig, m_lab, n_sig, n_lab, num_classes=3)
    assert thr[0] == 10.0 and thr[1] == 0.0
    assert thr[2] == best_threshold(m_sig, n_sig)[0] == 0.0
    with pytest.raises(ValueError, match="both members and non-members"):
        best_threshold(np.array([1.0]), np.array([]))


@pytest.mark.slow
@pytest.mark.parametrize("tm", ["blackbox_shadow", "blackbox_partial"])
def test_thresholds_see_only_the_attackers_data(small_cell, tm, monkeypatch):
    ctx = small_cell.context("membership_metric", tm)
    k = ctx.knowledge
    n = min(len(k.members), len(k.nonmembers))
    source = k.reference if k.reference is not None else ctx.target
    expected_in = membership_metric.signals_of(source, k.members.head(n))
    expected_out = membership_metric.signals_of(source, k.nonmembers.head(n))
    calls = []
    real = membership_metric.fit_thresholds

    def spy(members, member_labels, nonmembers, nonmember_labels, *args):
        calls.append((members, member_labels, nonmembers, nonmember_labels))
        return real(members, member_labels, nonmembers, nonmember_labels, *args)

    monkeypatch.setattr(membership_metric, "fit_thresholds", spy)
    ATTACKS.get("membership_metric")().run(ctx)
    assert len(calls) == 1
    members, member_labels, nonmembers, nonmember_labels = calls[0]
    assert np.array_equal(member_labels, k.members.head(n).labels.numpy())
    assert np.array_equal(nonmember_labels, k.nonmembers.head(n).labels.numpy())
    for v in membership_metric.VARIANTS:
        assert np.array_equal(members[v], expected_in[v]) and np.array_equal(nonmembers[v], expected_out[v])
    # and the attacker's data is disjoint from what the attack is scored on
    seen = {x.numpy().tobytes() for x in torch.cat([k.members.images, k.nonmembers.images])}
    assert not any(
        x.numpy().tobytes() in seen
        for x in torch.cat([ctx.evaluation.members.images, ctx.evaluation.nonmembers.images])
    )


@pytest.mark.planted
@pytest.mark.slow
@pytest.mark.parametrize("tm", ["blackbox_shadow", "blackbox_partial"])
def test_metric_attacks_beat_chance_and_save_their_scores(small_cell, tm):
    # Measured on this cell: AUC 0.63-0.67 (raw-signal AUC 0.65-0.67) for confidence/entropy/modified
    # entropy, 0.56-0.58 for correctness.
    ctx = small_cell.context("membership_metric", tm)
    results = ATTACKS.get("membership_metric")().run(ctx)
    assert set(results) == set(membership_metric.VARIANTS)
    for v in ("confidence", "entropy", "modified_entropy"):
        assert results[v]["auc"] > 0.58 and results[v]["signal_auc"] > 0.58, (v, results[v])
    assert results["correctness"]["auc"] > 0.52
    assert results["correctness"]["accuracy"] == pytest.approx(results["correctness"]["auc"])
    assert results["correctness"]["signal_auc"] == results["correctness"]["auc"]
    scores = pd.read_parquet(ctx.out_dir / "scores.parquet")
    # each score names its example: its pool of the partition, dataset index and class
    assert list(scores.columns) == ["score", "label", "variant", "role", "index", "class"]
    assert ((scores.role == "target_train") == (scores.label == 1)).all()
    for v, rows in scores.groupby("variant"):
        m = results[v]
        assert (rows.label == 1).sum() == m["n_members"] == (rows.label == 0).sum()
        cut = 0.5 if v == "correctness" else 0.0
        assert ((rows.score >= cut) == (rows.label == 1)).mean() == pytest.approx(m["accuracy"])
    thresholds = json.loads((ctx.out_dir / "thresholds.json").read_text())
    assert set(thresholds) == {"confidence", "entropy", "modified_entropy"}
    assert all(len(t) == ctx.num_classes for t in thresholds.values())
