"""The blind check of a given split: a classifier of the images alone, cross-fitted, tested by
permutation. A random split passes it as often as its level says; a split by a visible property is
caught, and then membership is not judged (whatever the attacks found)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mldoctor_bench.blind_check import blind_check
from mldoctor_bench.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist5k", None)


def split_check(digits, members: torch.Tensor, nonmembers: torch.Tensor, seed: int = 0) -> dict:
    d = digits
    return blind_check(d.images[members], d.labels[members], d.images[nonmembers], d.labels[nonmembers], 10, seed)


@pytest.mark.slow
def test_random_splits_pass_at_most_as_often_as_the_level_says(digits):
    """The permutation test is exact, so a random split is flagged 5% of the time in expectation; 300
    simulated splits (seeds fixed) keep the measured share at or below it: 14 of 300 (4.7%) when
    written. A normal test of the cross-fitted AUC flagged about 10%: its spread is larger than
    Mann-Whitney's law allows."""
    flagged = []
    for r in range(1000, 1300):
        rows = torch.randperm(len(digits), generator=torch.Generator().manual_seed(r))[:400]
        flagged.append(split_check(digits, rows[:200], rows[200:], seed=r)["blind_p_value"] <= 0.05)
    print("random splits flagged:", sum(flagged), "of", len(flagged))
    assert np.mean(flagged) <= 0.05


def test_members_chosen_by_how_much_ink_they_have_are_told_apart_without_the_model(digits):
    rows = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))[:1500]
    ink = digits.images[rows].float().mean((1, 2, 3))
    thick = rows[ink.argsort(descending=True)]
    found = split_check(digits, thick[:500], thick[500:1000])
    assert found["blind_auc"] > 0.9 and found["blind_auc_low"] > 0.5 and found["blind_p_value"] <= 0.05
    # another class balance alone is caught too: members all of digits 0-4, non-members of 5-9
    low, high = rows[digits.labels[rows] < 5][:300], rows[digits.labels[rows] >= 5][:300]
    assert split_check(digits, low, high)["blind_p_value"] <= 0.05


def test_a_split_the_images_tell_apart_leaves_membership_not_judged():
    from mldoctor_bench.report.cell_verdicts import failing
    from mldoctor_bench.report.verdicts import NOT_JUDGED, verdicts
    from test_verdicts import beyond_imputation, frame, membership

    blind = {"blind_auc": 0.81, "blind_auc_low": 0.78, "blind_auc_high": 0.84, "blind_members": 500.0}
    for p_value, expected in ((0.002, NOT_JUDGED), (0.4, "high")):
        table = frame(
            ("membership", "whitebox_partial", "", membership(0.2, 0.81)),
            ("attribute", "whitebox_shadow", "", beyond_imputation(70, 10, 20, 10)),
            ("stealing", "blackbox_shadow", "", {"agreement": 0.9, "baseline_agreement": 0.8}),
            ("target", "none", "", {**blind, "blind_p_value": p_value, "test_accuracy": 0.9}),
        )
        found = {v.family: v for v in verdicts(table)}
        v = found["membership"]
        assert v.level == expected and found["attribute"].level == expected  # both compare members with others
        assert found["stealing"].level != NOT_JUDGED  # compares no members with non-members: judged
    assert "tells them apart (AUC 0.810" in v.evidence or expected == "high"
    data = {"families": {"membership": {"level": NOT_JUDGED, "not_run": []}}}
    assert failing(data, "moderate") == [
        "membership not judged (members and non-members differ without the model; assess.allow_incomplete=true "
        "to pass it)"
    ]
    assert failing(data, "moderate", allow_incomplete=True) == []
