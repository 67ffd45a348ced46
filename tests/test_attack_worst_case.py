"""The canary leave-one-out evaluation (Aerni et al., CCS 2024): the pooled metrics and their canary
bootstrap by hand; on a trained cell, memorised canaries found and a planted null not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mldoctor_bench.attacks.worst_case import WorstCaseEvaluation, canary_bootstrap, pooled_metrics


def test_pooled_metrics_report_a_tpr_only_where_enough_non_members_support_it():
    masks = np.zeros((4, 60), dtype=bool)
    masks[:2, :30] = masks[2:, 30:] = True
    scores = np.where(masks, 1.0, 0.0) + np.arange(60) * 1e-3  # members above every non-member
    out = pooled_metrics(masks, scores, resamples=200, seed=0)
    assert out["n_nonmembers"] == out["n_members"] == 120
    assert out["tpr_at_fpr_0.01"] == out["interval_low_at_fpr_0.01"] == out["interval_high_at_fpr_0.01"] == 1.0
    assert "tpr_at_fpr_0.001" not in out and out["auc"] == 1.0  # 120 non-member scores cannot carry 0.1% FPR


def test_the_bootstrap_resamples_canaries_with_all_their_copies():
    rng = np.random.default_rng(0)
    masks = np.tile(np.array([True, False] * 100), (8, 1))
    masks[1::2] = ~masks[::2]
    # one canary in three is found by every copy that trained on it; the rest are noise
    found = (np.arange(200) % 3 == 0) & masks
    scores = rng.normal(size=masks.shape) + 10 * found
    low, high = canary_bootstrap(masks, scores, 0.01, 300, seed=1)
    tpr = pooled_metrics(masks, scores, 300, 1)["tpr_at_fpr_0.01"]
    assert low <= tpr <= high and 0.2 < low < high < 0.5  # about a third of the member scores


@pytest.mark.slow
@pytest.mark.planted
def test_memorised_canaries_are_found_and_a_planted_null_stays_at_the_fpr(tmp_path):
    from attack_fixtures import prepared_cell

    cell = prepared_cell(
        tmp_path,
        "attack=worst_case",
        "threat_model=auditor",
        "attack.worst_case.models=8",
        "attack.worst_case.canaries=100",
    )
    ctx = cell.context("worst_case", "auditor")
    found = WorstCaseEvaluation().run(ctx)
    null_ctx = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, planted_null=True))
    null = WorstCaseEvaluation().run(null_ctx)
    for variant in ("lira_online_fixed_var", "rmia_online"):
        assert found[variant]["n_nonmembers"] == 400
        assert found[variant]["interval_low_at_fpr_0.01"] > 0.1, found[variant]  # far above the 1% FPR
        assert null[variant]["interval_low_at_fpr_0.01"] <= 0.01, null[variant]  # no leakage where none was trained
        assert abs(null[variant]["auc"] - 0.5) < 0.15, null[variant]
    assert (ctx.out_dir / "canary_scores.parquet").is_file()


def test_the_summary_puts_each_defense_beside_its_population_number(tmp_path, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    from mldoctor_bench.results import Cell, Provenance, metric_rows, to_frame, write_table

    script = Path(__file__).resolve().parents[1] / "scripts" / "worst_case.py"
    spec = importlib.util.spec_from_file_location("worst_case_summary", script)
    summary = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = summary
    spec.loader.exec_module(summary)
    for defense, tpr in (("none", 0.6), ("relaxloss", 0.3)):
        metrics = {
            "tpr_at_fpr_0.01": tpr,
            "interval_low_at_fpr_0.01": tpr - 0.1,
            "interval_high_at_fpr_0.01": tpr + 0.1,
            "auc": 0.9,
            "n_nonmembers": 400.0,
            "n_members": 400.0,
            "test_accuracy": 0.9,
            "models": 16.0,
            "canaries": 50.0,
        }
        rows = metric_rows(Cell("mnist5k", "simple_cnn", defense, 0), "worst_case", "auditor", "rmia_online", metrics)
        cell = tmp_path / "cells" / f"mnist5k_simple_cnn_{defense}_seed0_x"
        write_table(to_frame(rows, Provenance("r", "h", "v", "2026-01-01T00:00:00"), 1.0), cell)
        (cell / "done.json").write_text("{}")
    summary.main([str(tmp_path)])
    text = (tmp_path / "worst_case.md").read_text()
    assert "| none | rmia_online | 0 | 0.600 [0.500, 0.700] | n/a (400 non-member scores) |" in text
    assert text.index("| none |") < text.index("| relaxloss |")  # the catalog's order
    shipped = summary.tradeoffs.shipped()[0]
    population = shipped[shipped["column"] == summary.POPULATION].set_index("defense")["mean"]
    assert f"| {population['none']:.3f} |" in text.splitlines()[2]


@pytest.mark.slow
def test_train_only_stores_one_copy_and_the_attack_then_finds_it(tmp_path):
    from attack_fixtures import prepared_cell
    from mldoctor_bench.attacks.base import AttackSkipped

    cell = prepared_cell(
        tmp_path,
        "attack=worst_case",
        "threat_model=auditor",
        "attack.worst_case.models=4",
        "attack.worst_case.canaries=8",
        "attack.worst_case.train_only=2",
        "train.epochs=2",
    )
    ctx = cell.context("worst_case", "auditor")
    with pytest.raises(AttackSkipped, match="copy 2 of 4 is in the model store"):
        WorstCaseEvaluation().run(ctx)
    *_, requests = WorstCaseEvaluation().design(ctx)
    models = cell.models  # without a defense a copy's key is the plain spec's

    def stored() -> list[bool]:
        return [models.store.holds(models.store.key(models.request_spec(r).store_key(models.shop))) for r in requests]

    assert stored() == [False, False, True, False]
    full = dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, train_only=None))
    assert "auc" in WorstCaseEvaluation().run(full)["rmia_online"]
    assert stored() == [True] * 4 and {a["role"] for a in ctx.models.asked} == {r.role for r in requests}


def test_blank_canaries_are_one_colour_each_and_need_no_pool_rows():
    import torch

    from mldoctor_bench.attacks.canaries import blank_canaries
    from mldoctor_bench.attacks.worst_case import WorstCaseSettings

    images, labels = blank_canaries(40, (3, 8, 8), 10, torch.Generator().manual_seed(0))
    assert images.shape == (40, 3, 8, 8) and images.dtype == torch.uint8
    flat = images.flatten(2)
    assert (flat == flat[:, :, :1]).all()  # one colour per channel
    assert len({tuple(c) for c in flat[:, :, 0].tolist()}) > 30  # and different canaries differ
    assert labels.min() >= 0 and labels.max() < 10 and len(set(labels.tolist())) > 3
    blank = WorstCaseSettings(canaries=40, canary_type="blank")
    assert WorstCaseEvaluation().pool_sizes(blank) == {"canary": 0}
    assert WorstCaseEvaluation().pool_sizes(dataclasses.replace(blank, canary_type="mislabeled")) == {"canary": 40}
