"""Independent checks against a peer library: IBM's Adversarial Robustness Toolbox (ART).

ART's ``MembershipInferenceBlackBoxRuleBased`` (the correctness / gap attack: "member" iff the
model's prediction is right) is run on the same target's released posteriors, on the same
evaluation examples, as our ``membership_metric`` correctness variant. Both are deterministic
functions of the same outputs, so the tolerance is zero: identical per-example decisions and
identical metrics. ART's low-FPR ROC reading is checked against ours on the saved scores too.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from art.attacks.inference.membership_inference import MembershipInferenceBlackBoxRuleBased
from art.estimators.classification import BlackBoxClassifier

from attack_fixtures import with_settings
from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.metrics import membership_metrics


@pytest.mark.slow
@pytest.mark.parametrize("tm", ["blackbox_shadow", "blackbox_partial"])
def test_correctness_attack_agrees_with_art_rule_based(small_cell, tm):
    ctx = with_settings(small_cell.context("membership_metric", tm), variants=["correctness"])
    ours = ATTACKS.get("membership_metric")().run(ctx)["correctness"]
    saved = pd.read_parquet(ctx.out_dir / "scores.parquet")
    our_decisions = (saved.score.to_numpy() >= 0.5).astype(int)

    ev = ctx.evaluation
    m = min(len(ev.members), len(ev.nonmembers))
    images = torch.cat([ev.members.images[:m], ev.nonmembers.images[:m]])
    labels = torch.cat([ev.members.labels[:m], ev.nonmembers.labels[:m]])
    is_member = np.r_[np.ones(m), np.zeros(m)].astype(int)

    def released_posteriors(x: np.ndarray) -> np.ndarray:
        # ART refuses uint8 input; the float32 copies it hands back hold whole uint8 values
        return ctx.target.posteriors(torch.from_numpy(np.asarray(x)).to(torch.uint8)).numpy()

    peer = BlackBoxClassifier(released_posteriors, tuple(images.shape[1:]), ctx.num_classes)
    one_hot = np.eye(ctx.num_classes)[labels.numpy()]
    art_decisions = MembershipInferenceBlackBoxRuleBased(peer).infer(images.numpy().astype(np.float32), one_hot)

    assert np.array_equal(saved.label.to_numpy(), is_member)
    assert art_decisions.shape == our_decisions.shape == (2 * m,)
    assert np.array_equal(art_decisions, our_decisions)
    theirs = membership_metrics(is_member, art_decisions, art_decisions)
    for key in ("accuracy", "precision", "recall", "f1", "auc", "advantage"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key
    # the check is not vacuous: the attack decides both ways and is right more often than not
    assert 0 < art_decisions.mean() < 1 and ours["accuracy"] > 0.5


@pytest.mark.slow
def test_low_fpr_metrics_agree_with_art(small_cell):
    """Our TPR at 0.1% and 1% FPR of every metric attack equals ART's ``get_roc_for_fpr`` on the
    scores the attack saved (both read the same ROC, so again to the last bit)."""
    from art.metrics.privacy.worst_case_mia_score import get_roc_for_fpr

    ctx = small_cell.context("membership_metric", "blackbox_shadow")
    ours = ATTACKS.get("membership_metric")().run(ctx)
    saved = pd.read_parquet(ctx.out_dir / "scores.parquet")
    for variant, rows in saved.groupby("variant"):
        for fpr in (0.001, 0.01):
            [(_, tpr, _)] = get_roc_for_fpr(rows.score.to_numpy(), rows.label.to_numpy(), targeted_fpr=fpr)
            assert ours[variant][f"tpr_at_fpr_{fpr:g}"] == pytest.approx(tpr, abs=1e-12), (variant, fpr)
