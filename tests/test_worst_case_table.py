"""The worst-case defense table and the advice that reads it: a defense is named for membership only
when its canary TPR lies below no defense's after Holm's correction, whatever its average case."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mldoctor_bench.report import tradeoffs
from mldoctor_bench.report import worst_case_table as wc
from mldoctor_bench.report.remedies import remedy_lines, todo_lines


def design(models: int = 16, canaries: int = 80) -> np.ndarray:
    masks = np.zeros((models, canaries), dtype=bool)
    for j in range(canaries):
        masks[np.random.default_rng(j).permutation(models)[: models // 2], j] = True
    return masks


def cell(defense: str, masks: np.ndarray, exposed: float, seed: int, accuracy: float = 0.9, **scores) -> wc.CanaryCell:
    """A cell whose member scores stand out for a share ``exposed`` of the canaries, noise elsewhere."""
    rng = np.random.default_rng(seed)
    found = np.arange(masks.shape[1]) < round(exposed * masks.shape[1])
    lira = rng.normal(size=masks.shape) + 8 * (masks & found)
    return wc.CanaryCell(defense, defense, masks, {"lira": lira, **scores}, accuracy)


def test_the_strongest_variant_counts_and_a_small_drop_is_not_a_lowering():
    masks = design()
    none = cell("none", masks, 1.0, 0)
    weak = np.random.default_rng(9).normal(size=masks.shape)  # a variant that finds nothing
    slightly = cell("relaxloss", masks, 79 / 80, 1, rmia=weak)  # one canary of 80 protected
    much = cell("dp_sgd", masks, 0.2, 2, accuracy=0.895)
    table = wc.at_fpr(wc.summarise([much, none, slightly], resamples=400))
    rows = table.set_index("label")
    assert list(table["label"]) == ["none", "relaxloss", "dp_sgd"]  # the catalog's order
    assert rows.loc["relaxloss", "best_variant"] == "lira"  # the stronger of the two is the row's TPR
    assert rows.loc["relaxloss", "tpr"] == pytest.approx(79 / 80, abs=0.02)
    assert rows.loc["relaxloss", "difference"] < 0 and not rows.loc["relaxloss", "lowered"]
    assert rows.loc["dp_sgd", "lowered"] and rows.loc["dp_sgd", "difference_high"] < 0
    assert (rows["p_holm"].dropna() >= rows["p_value"].dropna()).all()
    assert rows.loc["dp_sgd", "matches"] == "none relaxloss"  # both within 0.01 of its accuracy
    assert 0.001 not in set(table["fpr"])  # 640 non-member scores cannot carry 0.1% FPR
    assert set(wc.summarise([none, much], resamples=100)["fpr"]) == {0.01}


def test_a_planted_null_of_differences_is_rejected_at_most_at_the_level():
    """Two cells with the same exposure: the paired test must not call the difference real."""
    masks = design(models=8, canaries=40)
    false_alarms = 0
    for seed in range(20):
        table = wc.at_fpr(
            wc.summarise([cell("none", masks, 0.5, seed), cell("relaxloss", masks, 0.5, seed + 100)], 200)
        )
        false_alarms += bool(table.set_index("label").loc["relaxloss", "lowered"])
    assert false_alarms <= 3  # 5% of 20 is 1; 3 or more would happen with probability < 0.08 at 5%


def test_cells_on_different_designs_are_refused():
    with pytest.raises(ValueError, match="different canary designs"):
        wc.summarise([cell("none", design(), 1.0, 0), cell("relaxloss", design(canaries=40), 1.0, 1)], 50)


def population(rows: list[tuple]) -> pd.DataFrame:
    """A population trade-off table: (defense, column, mean, (difference, low, high) or None)."""
    out = []
    for defense, column, mean, diff in rows:
        low, high = (None, None) if diff is None else diff[1:]
        out.append(
            dict(
                defense=defense,
                column=column,
                mean=mean,
                low=mean - 0.01,
                high=mean + 0.01,
                seeds=3,
                difference=None if diff is None else diff[0],
                difference_low=low,
                difference_high=high,
            )
        )
    return pd.DataFrame(out)


def test_suggested_defenses_name_only_differences_that_survive_holm():
    tpr, steal, acc = (tradeoffs.FAMILY_COLUMN["membership"], tradeoffs.FAMILY_COLUMN["stealing"], tradeoffs.UTILITY)
    table = population(
        [
            ("none", acc, 0.9, None),
            ("none", tpr, 0.10, None),
            ("none", steal, 0.02, None),
            ("a", acc, 0.85, (-0.05, -0.06, -0.04)),
            ("a", tpr, 0.07, (-0.03, -0.07, 0.01)),  # within noise
            ("a", steal, 0.02, (0.0, -0.01, 0.01)),
            ("b", acc, 0.60, (-0.3, -0.32, -0.28)),
            ("b", tpr, 0.02, (-0.08, -0.10, -0.06)),
            ("b", steal, 0.12, (0.10, 0.08, 0.12)),  # and it makes stealing worse
            ("c", steal, 0.01, None),  # measured, but its difference has no interval
        ]
    )
    text = "\n".join(remedy_lines(table, {"membership": "high", "stealing": "low"}))
    assert (
        "`b` -0.080 [-0.100, -0.060] (the benchmark's digits model reached test accuracy 0.600 with it; "
        "raises stealing (its target is weaker, test accuracy 0.600 against 0.900 undefended, which alone "
        "lowers the no-query model's agreement with it: part of that rise is this))"
    ) in text
    assert "`a`" not in text  # its interval of the difference includes zero
    assert "stealing** (" not in text  # judged low: nothing to suggest
    text = "\n".join(remedy_lines(table, {"stealing": "high"}))
    assert "no defense measured lowered" in text and "without an interval of the difference (too few seeds): c." in text
    # the shipped table, made by the documented sweep, has a row without defense and every family's column
    shipped, meta = tradeoffs.shipped()
    assert "none" in set(shipped["defense"]) and set(tradeoffs.FAMILY_COLUMN.values()) <= set(shipped["column"])
    assert "+experiment=defense_tradeoffs" in meta["command"]
    # every defense the sweep selects, each over 3 seeds, and its notes say so
    seeds = shipped.groupby("defense")["seeds"].max()
    assert set(seeds.index) == set(tradeoffs.ORDER) and (seeds >= 3).all()
    counts = ", ".join(f"{d} {seeds[d]}" for d in tradeoffs.ORDER if d in seeds)
    assert f"Seeds per defense: {counts}." in " ".join(meta["notes"])
    headers, rows = tradeoffs.wide(shipped)
    assert headers[:2] == ["defense", "seeds"] and {r[0]: int(r[1]) for r in rows} == seeds.to_dict()


def test_a_defense_the_worst_case_does_not_support_is_never_named_for_membership():
    tpr, acc = tradeoffs.FAMILY_COLUMN["membership"], tradeoffs.UTILITY
    # on the population, relaxloss lowers the TPR far beyond the noise
    table = population(
        [
            ("none", acc, 0.90, None),
            ("none", tpr, 0.10, None),
            ("relaxloss", acc, 0.89, (-0.01, -0.02, 0.0)),
            ("relaxloss", tpr, 0.02, (-0.08, -0.085, -0.075)),
            ("dp_sgd", acc, 0.60, (-0.3, -0.32, -0.28)),
            ("dp_sgd", tpr, 0.01, (-0.09, -0.10, -0.08)),
        ]
    )
    masks = design()
    worst = wc.summarise(
        [cell("none", masks, 1.0, 0), cell("relaxloss", masks, 79 / 80, 1), cell("dp_sgd", masks, 0.1, 2, 0.6)], 400
    )
    lines = remedy_lines(table, {"membership": "high"}, worst)
    named = next(line for line in lines if line.startswith("- **membership**"))
    assert "in the worst case" in named and "`dp_sgd`" in named and "relaxloss" not in named
    assert "Not lowered beyond the noise in the worst case" in "\n".join(lines) and "`relaxloss`" in "\n".join(lines)
    # without the worst-case table, the average case names it (labelled as such by the table's section)
    assert "`relaxloss`" in "\n".join(remedy_lines(table, {"membership": "high"}))


def test_an_unadjusted_interval_that_excludes_zero_no_longer_names_a_defense():
    """Holm over a column's comparisons: one of six intervals excluding zero just barely is noise."""
    tpr, acc = tradeoffs.FAMILY_COLUMN["stealing"], tradeoffs.UTILITY
    rows = [("none", acc, 0.9, None), ("none", tpr, 0.1, None)]
    rows += [(f"d{i}", tpr, 0.1, (0.0, -0.01, 0.01)) for i in range(5)]
    rows += [("barely", tpr, 0.08, (-0.02, -0.039, -0.001))]  # unadjusted p just under 0.05
    table = population(rows)
    corrected = tradeoffs.corrected(table, tpr).set_index("defense")
    assert corrected.loc["barely", "p_value"] == pytest.approx(0.0455, abs=0.003)
    assert not corrected.loc["barely", "significant"] and corrected.loc["barely", "p_holm"] > 0.05
    assert "`barely`" not in "\n".join(remedy_lines(table, {"stealing": "high"}))


def test_the_shipped_tables_advice_names_only_what_the_worst_case_supports():
    worst, meta = wc.shipped()
    rows = wc.at_fpr(worst)
    assert "none" in set(rows["defense"]) and meta["command"] == "make worst-case"
    lowered = rows[rows["lowered"]]
    assert (lowered["p_holm"] < 0.05).all() and (lowered["difference"] < 0).all()
    text = "\n".join(todo_lines({"membership": "high"}))
    named = next(line for line in text.splitlines() if line.startswith("- **membership**"))
    for _, row in rows[(rows["defense"] != "none") & ~rows["lowered"]].iterrows():
        assert f"`{row['label']}`" not in named


def load_script(name: str):
    script = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_dp_match_search_takes_the_most_noise_within_the_tolerance(tmp_path):
    """``tune_dp.py --match-accuracy`` on a stand-in trainer whose accuracy falls with the noise."""
    from types import SimpleNamespace

    from mldoctor_bench.training import Recipe

    tune_dp = load_script("tune_dp")
    trained = []

    def trial(batch, epochs, lr, clip, stage, noise=None):
        noise = 2.0 if noise is None else noise
        accuracy = 0.95 - 0.2 * noise - (0.1 if lr != 0.1 else 0.0)  # lr 0.1 is the best step
        trained.append((lr, clip, noise))
        return {"val_accuracy": accuracy, "noise_multiplier": noise, "epsilon": 8 / noise, "lr": lr,
                "max_grad_norm": clip, "seconds": 1.0}  # fmt: skip

    args = SimpleNamespace(match_accuracy=0.85, tolerance=0.01, steps=8, match_lrs=[0.01, 0.1], match_clips=[1.0])
    tune_dp.match(args, Recipe(epochs=1, batch_size=8, lr=0.01), 1.0, trial, tmp_path)
    overrides = (tmp_path / "match.overrides").read_text().split()
    chosen = float(next(o for o in overrides if o.startswith("defense.noise_multiplier=")).split("=")[1])
    assert "defense.lr=0.1" in overrides and "defense.target_epsilon=null" in overrides
    assert abs(0.95 - 0.2 * chosen - 0.85) <= 0.01  # within the tolerance of the goal
    bisected = [n for lr, _, n in trained[3:]]
    assert chosen == pytest.approx(max(n for n in bisected if abs(0.95 - 0.2 * n - 0.85) <= 0.01), rel=1e-3)


def test_cells_with_other_canaries_are_refused_too():
    import dataclasses

    masks = design()
    blank = dataclasses.replace(cell("relaxloss", masks, 1.0, 1), canary_type="blank")
    with pytest.raises(ValueError, match="types blank and mislabeled"):
        wc.summarise([cell("none", masks, 1.0, 0), blank], 50)
