"""The verdicts as statistical tests: their null laws, their false-alarm rate on simulated null scores
at the default run's sizes, their power on planted leakage, and the rules on hand-made rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mldoctor_bench.report import significance as sig
from mldoctor_bench.report.evidence import Evidence
from mldoctor_bench.report.intervals import roc_statistics
from mldoctor_bench.report.verdicts import HIGH, LOW, MODERATE, decide, membership_evidence, verdict_lines, verdicts
from mldoctor_bench.results import FAILED, Cell, Provenance, metric_rows, to_frame

# The membership series of the default run (mldoctor-bench with no override) and their members /
# non-members: MemInf (B,S) (B,P) (W,S) (W,P), the four metric attacks under (B,S) and (B,P), the
# three label-only attacks (two of them on 150 + 150) and RMIA offline. "discrete" series score on a
# few levels (correctness is 0/1, augmentation counts agreeing translations): their ties are real.
DEFAULT_SERIES = (
    [(500, False)] * 2
    + [(250, False)] * 2
    + [(500, True)]
    + [(500, False)] * 3
    + [(250, True)]
    + [(250, False)] * 3
    + [(500, True), (150, False), (150, False), (500, False)]
)
REPETITIONS = 1000


def frame(*series, seeds=(0,)):
    """A tidy table of ``(attack, threat_model, variant, metrics)`` series in every seed of ``seeds``."""
    rows = []
    for seed in seeds:
        for attack, tm, variant, metrics in series:
            rows += metric_rows(Cell("d", "a", "none", seed), attack, tm, variant, metrics)
    return to_frame(rows, Provenance("r", "h", "c", "t"), 0.0)


def level(table, fam):
    return {v.family: v for v in verdicts(table)}[fam]


def simulated_levels(rng, planted: int = 0) -> list[str]:
    """The membership verdict of ``REPETITIONS`` simulated default runs with null scores; with
    ``planted``, that many members of the first series score above every non-member."""
    per_series = []
    for i, (n, discrete) in enumerate(DEFAULT_SERIES):
        draw = (lambda size: rng.integers(0, 4, size).astype(float)) if discrete else rng.standard_normal
        scores = draw((REPETITIONS, 2 * n))
        if planted and i == 0:
            scores[:, :planted] = 100.0
        per_series.append((n, roc_statistics(np.r_[np.ones(n), np.zeros(n)], scores)))
    levels = []
    for r in range(REPETITIONS):
        evidence = []
        for i, (n, stats) in enumerate(per_series):
            values = {"n_members": [n], "n_nonmembers": [n], **{m: [float(v[r])] for m, v in stats.items()}}
            evidence += membership_evidence(("membership", "blackbox_shadow", str(i)), values)
        levels.append(decide("membership", evidence).level)
    return levels


def test_the_tpr_test_uses_the_estimators_own_null_law():
    # the number of members above the (floor(xN)+1)-th non-member, simulated, against the law
    rng = np.random.default_rng(0)
    n = 150
    stats = roc_statistics(np.r_[np.ones(n), np.zeros(n)], rng.standard_normal((20000, 2 * n)))
    counts = np.round(stats["tpr_at_fpr_0.01"] * n).astype(int)
    law = sig.null_counts(n, n, 0.01)
    simulated = np.bincount(counts, minlength=n + 1) / len(counts)
    assert np.abs(simulated[:10] - law[:10]).max() < 0.01
    assert counts.mean() / n == pytest.approx(sig.tpr_floor(n, 0.01), rel=0.05)  # (1 + 1) / 151
    assert sig.tpr_floor(500, 0.01) == pytest.approx(6 / 501) and sig.tpr_floor(100, 0.01) == pytest.approx(2 / 101)


def test_a_verdict_of_moderate_on_null_scores_is_rare_and_planted_leakage_is_found():
    # With null scores at the default run's sizes the old rule (strongest series' TPR >= 0.03 or AUC
    # >= 0.60) said "moderate" 40 to 46% of the time; the tests keep false alarms within their level.
    rng = np.random.default_rng(0)
    null = simulated_levels(rng)
    assert null.count(LOW) / REPETITIONS >= 0.95
    # Planted: 25 of the first series' 500 members (5%) score above every non-member, the rest null,
    # a TPR at 1% FPR of about 0.06 (5 times the FPR)
    planted = simulated_levels(rng, planted=25)
    assert sum(level != LOW for level in planted) / REPETITIONS >= 0.90


def test_holm_rejects_step_down():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 against 0.05/4, 0.05/3, 0.05/2, 0.05/1
    assert sig.holm(p).tolist() == [True, False, False, True]
    assert sig.holm([0.001, 0.02, 0.04]).tolist() == [True, True, True]
    assert sig.holm([0.2, 0.001]).tolist() == [False, True]


def test_paired_tests_by_hand():
    # 10 discordant examples all for the attack: 2^-10
    assert sig.mcnemar_pvalue(10, 0) == pytest.approx(2**-10)
    assert sig.mcnemar_pvalue(5, 5) == pytest.approx(0.623046875)  # P(Bin(10, 1/2) >= 5)
    low, high = sig.paired_difference_interval(10, 0, 100)
    assert low > 0 and high == pytest.approx(0.1)  # the interval excludes 0 where the test rejects
    low, high = sig.paired_difference_interval(6, 4, 100)
    assert low < 0 < high
    assert sig.binomial_pvalue(3, 40, 0.1) == pytest.approx(
        1 - sum(math.comb(40, k) * 0.1**k * 0.9 ** (40 - k) for k in range(3))
    )


def membership(tpr, auc, n=500):
    return {"tpr_at_fpr_0.01": tpr, "auc": auc, "n_members": n, "n_nonmembers": n}


@pytest.mark.parametrize(
    "tpr, auc, expected",
    [
        (0.015, 0.57, LOW),  # 1.5 times the FPR: a guess reaches 0.012 with 500 non-members
        (0.030, 0.55, MODERATE),  # 15 members above the 6th non-member: p = 0.0002; 3 times the FPR
        (0.010, 0.60, MODERATE),  # by AUC alone (z = 5.5)
        (0.100, 0.62, HIGH),  # one member in ten at one non-member in a hundred
        (0.020, 0.80, HIGH),
    ],
)
def test_membership_levels_need_the_test_and_the_effect(tpr, auc, expected):
    table = frame(("membership", "blackbox_shadow", "", membership(tpr, auc)))
    assert level(table, "membership").level == expected


def test_numbers_the_old_rule_called_moderate_are_not_evidence_on_few_examples():
    # TPR 0.04 and 0.03 at 1% FPR (the old rule: "moderate", 3 times the FPR or more) on 100 + 100
    few = frame(
        ("membership", "blackbox_shadow", "", membership(0.04, 0.58, n=100)),
        ("membership", "blackbox_partial", "", membership(0.03, 0.57, n=100)),
    )
    v = level(few, "membership")
    p_values = sorted(e.p_value for e, _ in v.judged)
    assert p_values[0] > 0.05 / 4  # Holm's first step over 4 statistics
    assert v.level == LOW and not v.significant and v.tests == 4
    assert "no statistic rejects no leakage at 5% after Holm over 4" in v.evidence
    # below 1/FPR non-members the TPR is not judged at all
    tiny = frame(("membership", "blackbox_shadow", "", membership(0.3, 0.7, n=50)))
    assert [e.statistic for e, _ in level(tiny, "membership").judged] == ["auc"]


def test_membership_rests_on_the_strongest_rejected_statistic_and_pools_seeds():
    table = frame(
        ("membership", "blackbox_shadow", "", membership(0.015, 0.57)),
        ("membership_rmia", "blackbox_shadow", "offline", membership(0.06, 0.61)),
        seeds=(0, 1),
    )
    v = level(table, "membership")
    assert v.level == MODERATE and v.series == "membership_rmia (B,S) offline" and v.significant
    assert v.statistic == "tpr_at_fpr_0.01" and v.tests == 4
    assert "TPR 0.060 at 1.0% FPR (6.0 times the FPR; a guess reaches 0.012), 2 seeds pooled" in v.evidence
    # a failed row says nothing
    failed = frame(("membership", "blackbox_shadow", "", {}))
    failed["status"] = FAILED
    assert verdicts(failed) == []


def paired(
    value, baseline, only_attack, only_baseline, n=500, value_name="accuracy", baseline_name="best_baseline_accuracy"
):
    return {
        value_name: value,
        baseline_name: baseline,
        "only_attack_right": only_attack,
        "only_baseline_right": only_baseline,
        "n_test": n,
    }


def beyond_imputation(member_attack, member_imputation, nonmember_attack, nonmember_imputation, n=250):
    """Attribute rows: per group, (only the attack right, only imputation right) of ``n`` examples."""
    return {
        "member_only_attack_right": member_attack,
        "member_only_imputation_right": member_imputation,
        "nonmember_only_attack_right": nonmember_attack,
        "nonmember_only_imputation_right": nonmember_imputation,
        "n_members_scored": n,
        "n_nonmembers_scored": n,
        "member_accuracy": 0.6 + (member_attack - member_imputation) / n,
        "member_imputation_accuracy": 0.6,
        "nonmember_accuracy": 0.6 + (nonmember_attack - nonmember_imputation) / n,
        "nonmember_imputation_accuracy": 0.6,
        "training_leakage": (member_attack - member_imputation - nonmember_attack + nonmember_imputation) / n,
        "advantage_over_baseline": 0.1,
    }


def test_attribute_is_judged_on_members_against_non_members_beyond_imputation_and_stealing_paired():
    table = frame(
        # members: the attack beats imputation by 60 of 250; non-members by 10: +0.20 beyond imputation
        ("attribute", "whitebox_partial", "", beyond_imputation(70, 10, 20, 10)),
        # better than imputation by as much on members as on non-members: what the distribution gives
        ("attribute", "whitebox_shadow", "", beyond_imputation(40, 10, 40, 10)),
        (
            "stealing",
            "blackbox_shadow",
            "posteriors",
            paired(0.97, 0.95, 14, 4, value_name="agreement", baseline_name="baseline_agreement"),
        ),
    )
    attribute, stealing = level(table, "attribute"), level(table, "stealing")
    assert attribute.level == HIGH and attribute.series == "attribute (W,P)"
    assert attribute.statistic == "training_leakage" and attribute.value == pytest.approx(0.2)
    assert attribute.interval[0] > 0 and attribute.test == "two-sample normal test of paired differences, one-sided"
    shadow = next(e for e, _ in attribute.judged if e.threat_model == "whitebox_shadow")
    assert shadow.value == 0 and shadow.p_value == pytest.approx(0.5)  # distributional inference: not leakage
    # 97% agreement sounds like a stolen model, but labelled data alone gives 95%; 14 against 4
    # discordant examples: p = 0.015, rejected (one statistic)
    assert (
        stealing.level == MODERATE
        and "0.970 against a model trained without queries 0.950 (+0.020)" in stealing.evidence
    )
    close = frame(
        (
            "stealing",
            "blackbox_shadow",
            "posteriors",
            paired(0.97, 0.95, 12, 6, value_name="agreement", baseline_name="baseline_agreement"),
        )
    )
    assert level(close, "stealing").level == LOW  # p = 0.12: the same margin is not evidence here
    untested = frame(("attribute", "whitebox_shadow", "", {"accuracy": 0.86, "advantage_over_baseline": 0.28}))
    v = level(untested, "attribute")
    assert v.level == LOW and "not tested" in v.evidence and "distributional" in v.evidence


def inversion_rows(target_hits, control_hits, per_class=4, chance=0.1):
    """An inversion series from per-class hits of the target-guided and the control-guided search."""
    classes = len(target_hits)
    return {
        "eval_accuracy": sum(target_hits) / (classes * per_class),
        "no_target_eval_accuracy": sum(control_hits) / (classes * per_class),
        "chance_accuracy": chance,
        "reconstructions": classes * per_class,
        "icc": 0.3,
        **{f"target_hits_class_{c}": float(h) for c, h in enumerate(target_hits)},
        **{f"control_hits_class_{c}": float(h) for c, h in enumerate(control_hits)},
    }


@pytest.mark.parametrize(
    "target_hits, control_hits, expected",
    [
        # 0.35 against chance 0.10 (the old "moderate"), and a model that never saw the data does as well
        ([2, 1, 2, 1, 1, 2, 1, 1, 2, 1], [1, 2, 1, 2, 1, 1, 2, 1, 2, 1], LOW),
        # every class better with the target: p = 2^-10; recovers 67% of what the control misses
        ([3, 3, 3, 2, 3, 3, 2, 3, 3, 3], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], HIGH),
        # 11 of 40 against 5 of 40 (McNemar would reject), but 4 classes carry it and 1 goes the other way
        ([4, 4, 2, 1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 1, 0, 0, 0], LOW),
    ],
)
def test_inversion_is_tested_against_the_control_search_over_classes(target_hits, control_hits, expected):
    table = frame(("inversion", "whitebox_none", "miface", inversion_rows(target_hits, control_hits)))
    v = level(table, "inversion")
    assert v.level == expected and v.test == "exact sign-flip permutation over classes, one-sided"
    assert "intra-class correlation 0.30" in v.evidence


def test_correlated_reconstructions_without_leakage_are_judged_moderate_at_most_5_percent_of_the_time():
    """Within a class, reconstructions succeed or fail together (their starts are alike and one evaluator
    judges them); the control search draws from the same per-class rates: no leakage. Counted as 40
    independent trials (McNemar on reconstructions), such data is judged leaky more often."""
    rng = np.random.default_rng(0)
    classes, per_class, repetitions, alarms, naive = 10, 4, 400, 0, 0
    for _ in range(repetitions):
        rates = rng.beta(0.5, 1.5, classes)  # some classes easy for any model, most hard
        hits = []
        for _ in range(2):  # the target's search, then the control's: the same law
            together = rng.random(classes) < 0.6  # a class's reconstructions agree (intra-class correlation)
            shared = rng.random(classes) < rates
            alone = rng.random((classes, per_class)) < rates[:, None]
            hits.append(np.where(together[:, None], shared[:, None], alone).sum(1))
        v = level(frame(("inversion", "whitebox_none", "miface", inversion_rows(*hits))), "inversion")
        alarms += v.level != LOW
        b = int(np.maximum(hits[0] - hits[1], 0).sum())
        c = int(np.maximum(hits[1] - hits[0], 0).sum())
        naive += sig.mcnemar_pvalue(b, c) <= 0.05
    print("false moderate or high over classes:", alarms, "per reconstruction (McNemar):", naive, "of", repetitions)
    assert alarms / repetitions <= 0.05, alarms
    assert naive > alarms, (naive, alarms)  # the per-reconstruction test, for contrast, errs more


def test_the_section_states_each_verdict_and_its_rule():
    table = frame(
        ("membership", "blackbox_shadow", "", membership(0.1, 0.7)),
        ("inversion", "whitebox_shadow", "gmi", inversion_rows([1, 0, 1, 0, 1, 0, 1, 0, 1, 1], [1] * 10)),
    )
    lines = verdict_lines(table)
    assert lines[0] == "## Verdicts" and lines[2] == "d/a/none:"
    assert any(line.startswith("- **membership: high** (membership (B,S): TPR 0.100 at 1.0% FPR") for line in lines)
    assert any(line.startswith("- **inversion: low**") for line in lines)
    assert any(
        line.startswith(
            "- membership: moderate or high only if a statistic rejects no leakage at 5% after Holm's correction"
        )
        for line in lines
    )
    assert "attribute" not in " ".join(lines)  # no row, no verdict
    assert verdict_lines(frame())[2] == "No attack family has a usable row in these results."


def test_several_models_get_one_row_each():
    table = frame(("membership", "blackbox_shadow", "", membership(0.1, 0.7)))
    other = frame(("membership", "blackbox_shadow", "", membership(0.01, 0.5)))
    other["defense"] = "dp_sgd"
    lines = verdict_lines(pd.concat([table, other], ignore_index=True))
    assert "| model | membership |" in lines
    assert "| d/a/dp_sgd | low |" in lines and "| d/a/none | high |" in lines


def test_the_verdict_serialises_with_every_statistic_it_judged():
    table = frame(("membership", "blackbox_shadow", "", membership(0.06, 0.61)))
    data = level(table, "membership").as_dict()
    assert data["level"] == MODERATE and data["correction"] == "Holm" and data["alpha"] == 0.05
    assert {j["statistic"] for j in data["judged"]} == {"auc", "tpr_at_fpr_0.01"}
    assert all(j["rejected"] for j in data["judged"]) and data["tests"] == 2


def test_a_rejected_statistic_below_the_moderate_bar_is_worded_detected_but_small():
    # AUC 0.57 on 500 + 500 rejects no leakage (z about 3.9) but is below 0.60; TPR 0.013 is not rejected
    v = level(frame(("membership", "blackbox_shadow", "", membership(0.013, 0.57))), "membership")
    assert v.level == LOW and v.significant and v.detected_small and v.label == "low (detected, small)"
    assert "leakage detected, but below the bar for moderate" in v.evidence
    data = v.as_dict()
    assert data["detected"] and data["label"] == "low (detected, small)" and not data["incomplete"]
    assert "- **membership: low (detected, small)**" in "\n".join(
        verdict_lines(frame(("membership", "blackbox_shadow", "", membership(0.013, 0.57))))
    )


def test_attacks_that_did_not_run_make_the_family_incomplete_on_the_verdicts_own_line():
    table = frame(
        ("membership", "blackbox_shadow", "", membership(0.06, 0.61)),
        ("membership_lira", "blackbox_shadow", "", {}),
        ("membership_label_only", "blackbox_shadow", "", {}),
    )
    lira = table["attack"] == "membership_lira"
    table.loc[lira, ["status", "reason", "family"]] = ["skipped", "skipped for cost: its 32 model(s) ...", "membership"]
    only = table["attack"] == "membership_label_only"
    reason = "membership_label_only does not support blackbox_shadow; supported: blackbox_label_only"
    table.loc[only, ["status", "reason", "family"]] = ["skipped", reason, "membership"]
    v = level(table, "membership")
    assert v.not_run == [("membership_lira (B,S)", "skipped for cost: its 32 model(s) ...")]  # not the unsupported
    assert v.label == "moderate, incomplete: membership_lira (B,S) not run"
    assert v.as_dict()["incomplete"] and v.as_dict()["not_run"][0]["series"] == "membership_lira (B,S)"
    assert any(
        "- **membership: moderate, incomplete: membership_lira (B,S) not run**" in x for x in verdict_lines(table)
    )


def test_the_gate_fails_a_family_at_its_level_or_incomplete_unless_allowed():
    from mldoctor_bench.report.cell_verdicts import failing

    data = {
        "families": {
            "membership": {"level": "low", "not_run": [{"series": "membership_lira (B,S)", "reason": "cost"}]},
            "stealing": {"level": "moderate", "not_run": []},
        }
    }
    assert failing(data, "high") == [
        "membership incomplete (membership_lira (B,S) not run; assess.allow_incomplete=true to pass it)"
    ]
    assert failing(data, "high", allow_incomplete=True) == []
    assert failing(data, "moderate", allow_incomplete=True) == ["stealing moderate"]


def test_with_no_flagged_non_member_the_rates_use_the_upper_end_of_the_fprs_interval():
    from mldoctor_bench.report.cell_verdicts import risk_statement

    s = risk_statement(1, 150, 0, 150, 0.01, training_examples=1000)
    high = sig.clopper_pearson(0, 150)[1]  # about 0.024
    assert s["fpr_at_bound"] and s["observed_fpr"] == 0 and s["fpr_interval"][1] == pytest.approx(high)
    assert all(p["value"] < 1 for p in s["precision"])  # never the 100% an observed FPR of 0 gives
    assert s["precision"][0]["value"] == pytest.approx((1 / 150) / (1 / 150 + high))
    nothing = risk_statement(0, 150, 0, 150, 0.01, training_examples=1000)
    assert all(math.isnan(p["value"]) for p in nothing["precision"])  # no "member" call, no precision
    found = risk_statement(10, 150, 2, 150, 0.01, training_examples=1000)
    assert not found["fpr_at_bound"] and found["precision"][0]["value"] == pytest.approx(10 / 12)
    # "by chance" is the test's own floor, (floor(0.01 x 150) + 1) / 151 = 2 / 151, not the observed FPR
    for statement in (s, nothing, found):
        assert statement["flagged_without_leakage"] == pytest.approx(1000 * 2 / 151)


def test_the_report_opens_with_the_verdicts(tmp_path):
    from mldoctor_bench.report import build_report
    from mldoctor_bench.results import write_table

    table = frame(("membership", "blackbox_shadow", "", membership(0.04, 0.6)))
    write_table(table, tmp_path / "cells" / "one")
    (tmp_path / "cells" / "one" / "done.json").write_text("{}")
    text = build_report(tmp_path).read_text()
    assert text.index("## Verdicts") < text.index("## Target utility")
    assert "- **membership: moderate**" in text


def test_the_release_gate_errs_at_most_5_percent_over_the_four_families():
    """On a model with nothing to find, each family alone is judged moderate 5% of the time at most; a
    gate failing on any of four would err up to 18.5%. Holm over the families keeps it at 5%."""
    from mldoctor_bench.report.cell_verdicts import failing, gate_pvalues

    rng = np.random.default_rng(0)
    repetitions, per_family_alarms, gate_alarms = 2000, 0, 0
    for _ in range(repetitions):
        found = []
        for fam in ("membership", "inversion", "attribute", "stealing"):
            evidence = [
                Evidence(
                    fam, fam, "tm", str(i), "statistic", 0.1, "", 0.0, (0, 1), float(rng.random()), "t", MODERATE, ""
                )
                for i in range(3)
            ]
            found.append(decide(fam, evidence))
        gate = gate_pvalues(found)
        data = {
            "families": {v.family: {"level": v.level, "not_run": [], "gate_p_value": gate[v.family]} for v in found}
        }
        per_family_alarms += any(v.level != LOW for v in found)
        gate_alarms += bool(failing(data, "moderate"))
    print("false alarms of a gate on any family:", per_family_alarms, "after Holm over the families:", gate_alarms)
    assert per_family_alarms / repetitions > 0.15 and gate_alarms / repetitions <= 0.05
