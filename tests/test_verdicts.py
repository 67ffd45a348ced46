"""The report's verdict rules on hand-made rows: each family's level, the series it rests on, and
that every verdict compares with what needs no leakage."""

from __future__ import annotations

import pandas as pd
import pytest

from mldoctor_bench.report.verdicts import HIGH, LOW, MODERATE, verdict_lines, verdicts
from mldoctor_bench.results import FAILED, Cell, Provenance, metric_rows, to_frame


def frame(*series, seeds=(0,)):
    """A tidy table of ``(attack, threat_model, variant, metrics)`` series in every seed of ``seeds``."""
    rows = []
    for seed in seeds:
        for attack, tm, variant, metrics in series:
            rows += metric_rows(Cell("d", "a", "none", seed), attack, tm, variant, metrics)
    return to_frame(rows, Provenance("r", "h", "c", "t"), 0.0)


def level(table, fam):
    return {v.family: v for v in verdicts(table)}[fam]


@pytest.mark.parametrize("tpr, auc, expected", [
    (0.015, 0.57, LOW),       # 1.5 times the FPR: barely above what a guess would accuse
    (0.029, 0.59, LOW),
    (0.030, 0.55, MODERATE),  # 3 times
    (0.010, 0.60, MODERATE),  # by AUC alone
    (0.100, 0.62, HIGH),      # one member in ten at one non-member in a hundred
    (0.020, 0.80, HIGH),
])
def test_membership_by_tpr_at_one_percent_fpr_and_auc(tpr, auc, expected):
    table = frame(("membership", "blackbox_shadow", "", {"tpr_at_fpr_0.01": tpr, "auc": auc}))
    assert level(table, "membership").level == expected


def test_membership_rests_on_the_strongest_attack_and_averages_seeds():
    table = frame(("membership", "blackbox_shadow", "", {"tpr_at_fpr_0.01": 0.015, "auc": 0.57}),
                  ("membership_rmia", "blackbox_shadow", "offline", {"tpr_at_fpr_0.01": 0.06, "auc": 0.61}),
                  seeds=(0, 1))
    v = level(table, "membership")
    assert v.level == MODERATE and v.series == "membership_rmia (B,S) offline"
    assert "TPR 0.060 at 1% FPR (6.0 times the FPR), AUC 0.610" in v.evidence
    # a failed row says nothing
    failed = frame(("membership", "blackbox_shadow", "", {}))
    failed["status"] = FAILED
    assert verdicts(failed) == []


@pytest.mark.parametrize("accuracy, chance, expected", [
    (0.15, 0.10, LOW), (0.20, 0.10, MODERATE), (0.45, 0.10, MODERATE), (0.50, 0.10, HIGH),
    (0.60, 0.50, LOW),  # two classes: 60% is close to a coin
])
def test_inversion_against_chance(accuracy, chance, expected):
    table = frame(("inversion", "whitebox_shadow", "gmi", {"eval_accuracy": accuracy, "chance_accuracy": chance}))
    assert level(table, "inversion").level == expected


def test_attribute_and_stealing_against_what_needs_no_leakage():
    table = frame(
        ("attribute", "whitebox_shadow", "", {"accuracy": 0.86, "best_baseline_accuracy": 0.58,
                                              "advantage_over_baseline": 0.28}),
        ("attribute", "whitebox_partial", "", {"accuracy": 0.60, "best_baseline_accuracy": 0.59,
                                               "advantage_over_baseline": 0.01}),
        ("stealing", "blackbox_shadow", "posteriors", {"agreement": 0.97, "baseline_agreement": 0.95,
                                                       "agreement_over_baseline": 0.02}),
    )
    attribute, stealing = level(table, "attribute"), level(table, "stealing")
    assert attribute.level == HIGH and attribute.series == "attribute (W,S)"
    # 97% agreement sounds like a stolen model, but labelled data alone gives 95%
    assert stealing.level == MODERATE and "0.970 against 0.950 without queries (+0.020)" in stealing.evidence
    low = frame(("stealing", "blackbox_shadow", "posteriors", {"agreement": 0.96, "baseline_agreement": 0.955,
                                                              "agreement_over_baseline": 0.005}))
    assert level(low, "stealing").level == LOW


def test_the_section_states_each_verdict_and_its_rule():
    table = frame(("membership", "blackbox_shadow", "", {"tpr_at_fpr_0.01": 0.1, "auc": 0.7}),
                  ("inversion", "whitebox_shadow", "gmi", {"eval_accuracy": 0.15, "chance_accuracy": 0.1}))
    lines = verdict_lines(table)
    assert lines[0] == "## Verdicts" and lines[2] == "d/a/none:"
    assert "- **membership: high** (membership (B,S): TPR 0.100 at 1% FPR (10.0 times the FPR), AUC 0.700)." in lines
    assert any(line.startswith("- **inversion: low**") for line in lines)
    assert any(line.startswith("- membership: high if TPR at 1% FPR is at least 10 times") for line in lines)
    assert "attribute" not in " ".join(lines)  # no row, no verdict
    assert verdict_lines(frame())[2] == "No attack family has a usable row in these results."


def test_several_models_get_one_row_each():
    table = frame(("membership", "blackbox_shadow", "", {"tpr_at_fpr_0.01": 0.1, "auc": 0.7}))
    other = frame(("membership", "blackbox_shadow", "", {"tpr_at_fpr_0.01": 0.01, "auc": 0.5}))
    other["defense"] = "dp_sgd"
    lines = verdict_lines(pd.concat([table, other], ignore_index=True))
    assert "| model | membership |" in lines
    assert "| d/a/dp_sgd | low |" in lines and "| d/a/none | high |" in lines


def test_the_report_opens_with_the_verdicts(tmp_path):
    from mldoctor_bench.report import build_report
    from mldoctor_bench.results import write_table

    table = frame(("membership", "blackbox_shadow", "", {"tpr_at_fpr_0.01": 0.03, "auc": 0.6}))
    write_table(table, tmp_path / "cells" / "one")
    (tmp_path / "cells" / "one" / "done.json").write_text("{}")
    text = build_report(tmp_path).read_text()
    assert text.index("## Verdicts") < text.index("## Target utility")
    assert "- **membership: moderate**" in text
