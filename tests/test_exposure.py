"""Which examples leak, to which attacks: the exposure table joins the attacks on the example, its
flags and percentiles recompute from the saved scores, planted members sit in every series'
intersection, and on null scores two series share flagged members only as chance would have it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from conftest import TINY
from mldoctor_bench.attacks.reference_models import repeat_agreement
from mldoctor_bench.metrics import threshold_at_fpr
from mldoctor_bench.report.exposure import (
    cross_attack,
    exposure_table,
    flagged_by_every_family,
    pair_metrics,
    percentiles,
)

N = 400  # members and as many non-members


def write_series(cell, attack, scores, labels, index, variant=""):
    folder = cell / attack / "blackbox_shadow"
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "score": scores,
            "label": labels,
            "variant": variant,
            "index": index,
            "role": np.where(labels == 1, "target_train", "target_test"),
            "class": index % 10,
        }
    )
    path = folder / "scores.parquet"
    if path.exists():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    frame.to_parquet(path, index=False)


def fake_cell(tmp_path, planted: int, rng) -> tuple:
    """A cell folder with three membership series (and a table naming their family) over the same
    candidates: null scores, plus ``planted`` members every series scores far above the rest."""
    from mldoctor_bench.results import Cell, Provenance, metric_rows, to_frame, write_table

    cell = tmp_path / "cells" / "d_a_none_seed0_h"
    labels = np.r_[np.ones(N), np.zeros(N)].astype(int)
    index = np.arange(2 * N)
    rows = []
    for attack in ("membership", "membership_metric", "membership_rmia"):
        scores = rng.normal(size=2 * N)
        scores[:planted] += 10
        write_series(cell, attack, scores, labels, index)
        rows += metric_rows(Cell("d", "a", "none", 0), attack, "blackbox_shadow", "", {"auc": 0.5}, family="membership")
    write_table(to_frame(rows, Provenance("r", "h", "c", "t"), 0.0), cell)
    return cell, labels


def test_the_table_joins_series_on_the_example_and_its_numbers_recompute(tmp_path):
    cell, labels = fake_cell(tmp_path, planted=0, rng=np.random.default_rng(0))
    table = exposure_table(cell)
    assert set(table["series"]) == {"membership (B,S)", "membership_metric (B,S)", "membership_rmia (B,S)"}
    for _, rows in table.groupby("series"):
        scores = pd.read_parquet(cell / rows["attack"].iloc[0] / "blackbox_shadow" / "scores.parquet")
        assert len(rows) == len(scores) and (rows["index"].to_numpy() == scores["index"].to_numpy()).all()
        assert np.allclose(rows["percentile"], percentiles(scores["score"].to_numpy()))
        threshold, tpr, _ = threshold_at_fpr(labels, scores["score"].to_numpy(), 0.01)
        assert (rows["flagged_1pct"].to_numpy() == (scores["score"].to_numpy() >= threshold)).all()
        assert rows.loc[rows["member"] == 1, "flagged_1pct"].mean() == pytest.approx(tpr)
        assert rows["flagged_01pct"].isna().all()  # 400 non-members do not measure 0.1% FPR


def test_planted_members_are_flagged_by_every_series_and_sit_in_the_intersection(tmp_path):
    cell, _ = fake_cell(tmp_path, planted=12, rng=np.random.default_rng(1))
    table = exposure_table(cell)
    strongest = "membership_rmia (B,S)"
    every = flagged_by_every_family(table, strongest)
    assert set(range(12)) <= set(every["index"])  # the planted twelve, whatever else chance adds
    cross = dict(cross_attack(table, strongest))
    pair = cross["membership (B,S) | membership_metric (B,S)"]
    # the twelve dominate the flagged sets: far above what independent sets of those sizes share
    assert pair["jaccard_low"] > pair["jaccard_chance"] and pair["jaccard"] > 0.5


def test_on_null_scores_two_series_share_flagged_members_as_chance_has_it():
    # 300 pairs of independent null series of 400 + 400: their Jaccard index averages its chance
    # value ab/M / (a + b - ab/M) (a, b the flagged members, M the members), here about 0.008
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(N), np.zeros(N)].astype(int)
    observed, chance = [], []
    for _ in range(300):
        frames = []
        for _ in range(2):
            scores = rng.normal(size=2 * N)
            threshold, _, _ = threshold_at_fpr(labels, scores, 0.01)
            frames.append(
                pd.DataFrame(
                    {
                        "index": np.arange(2 * N),
                        "role": "r",
                        "member": labels,
                        "score": scores,
                        "flagged_1pct": (scores >= threshold).astype(float),
                    }
                )
            )
        m = pair_metrics(*frames)
        if not np.isnan(m.get("jaccard", np.nan)):
            observed.append(m["jaccard"])
            chance.append(m["jaccard_chance"])
    assert np.mean(observed) == pytest.approx(np.mean(chance), abs=0.01)
    assert np.mean(chance) < 0.03


def test_repeats_agree_by_hand():
    labels = np.r_[np.ones(10), np.zeros(100)].astype(int)
    # the 100 non-members tie at 0, so a threshold at 1% FPR stays above them: the first repeat flags
    # members 1..9, the second the same but its top member
    base = np.r_[np.arange(10.0), np.zeros(100)]
    other = base.copy()
    other[9] = -1.0
    agreement = repeat_agreement([(labels, base), (labels, other)])
    first = set(np.flatnonzero(base[:10] > 0))
    second = set(np.flatnonzero(other[:10] > 0))
    assert agreement["repeats"] == 2
    assert agreement["repeat_jaccard"] == pytest.approx(len(first & second) / len(first | second))
    assert agreement["repeat_stable_share"] == pytest.approx(len(first & second) / len(first))
    # independent draws of 9 and 8 of the 10 members share 7.2 on average: 7.2 / (9 + 8 - 7.2)
    assert agreement["repeat_jaccard_chance"] == pytest.approx(7.2 / 9.8)


@pytest.mark.slow
def test_a_run_writes_the_exposure_of_every_membership_series(run_cli, tmp_path):
    out = tmp_path / "res"
    attacks = "attack=[membership,membership_metric,membership_label_only,membership_rmia,attribute,inversion]"
    proc = run_cli(
        attacks, *[a for a in TINY if not a.startswith("attack=")], f"results_dir={out}", "data.quarter_size=120"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [cell] = list((out / "cells").iterdir())
    table = pd.read_parquet(cell / "exposure.parquet")
    splits = load_file(str(cell / "splits.safetensors"))
    series = set(table.loc[table["family"] == "membership", "series"])
    assert len(series) >= 5
    for name, rows in table[table["family"] == "membership"].groupby("series"):
        for role in ("target_train", "target_test"):
            assert set(rows.loc[rows["role"] == role, "index"]) <= set(splits[role].tolist()), (name, role)
    # every candidate of each series: its saved scores, row for row
    for path in cell.glob("membership*/*/scores.parquet"):
        for variant, scores in pd.read_parquet(path).groupby("variant"):
            rows = table[
                (table["attack"] == path.parent.parent.name)
                & (table["threat_model"] == path.parent.name)
                & (table["variant"] == variant)
            ]
            assert len(rows) == len(scores)
    results = pd.read_parquet(cell / "results.parquet")
    cross = results[results["family"] == "exposure"]
    assert {"spearman", "jaccard", "jaccard_chance"} <= set(cross["metric"])
    assert (results["family"] != "").all()
