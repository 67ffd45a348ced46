"""Membership power per second of compute: each series' cost from a cell's timings, the Pareto
frontier by hand, and the report's section on cells written as a run writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mldoctor_bench.report import build_report
from mldoctor_bench.report.frontier import cell_series, frontier, frontier_of, pareto
from mldoctor_bench.results import Cell, Provenance, metric_rows, to_frame, write_table


def model(role: str, seconds: float, reused: bool = False) -> dict:
    return {"role": role, "reused": reused, "train_seconds": seconds, "trained_together": 1}


def phase(name: str, kind: str, self_s: float, models=(), asked=None) -> dict:
    info = {"models": models} if asked is None else {"asked": asked}
    return {"name": name, "kind": kind, "seconds": self_s, "self_s": self_s, "parent": None, "info": info}


def asked(roles, series=None) -> list[dict]:
    """What an attack's phase records of the models it asked for (``mldoctor_bench.timings.ASKED``)."""
    return [{"role": r, "series": series} for r in roles]


def timings(seed: int) -> dict:
    """Target and shadow trained together; RMIA's 2 offline references, LiRA's 4 online (one of them
    reused from the store) and 4 offline ones; QMIA's regressor trained inside its attack's phase. Each
    attack's phase records the models it asked for, and the variants they serve. Seed 1 pays twice as
    much for its models."""
    k = 1 + seed
    return {
        "total_s": 0.0,
        "phases": [
            phase("train target+shadow", "model", 40 * k, [model("target", 20 * k), model("shadow", 20 * k)]),
            phase(
                "train references",
                "model",
                60 * k,
                [model(f"reference-offline-{i}-of-2", 5 * k) for i in range(2)]
                + [model(f"reference-online-{i}-of-4", 10 * k, reused=i == 0) for i in range(4)]
                + [model(f"reference-offline-{i}-of-4", 6 * k) for i in range(4)],
            ),
            phase("attack membership (B,S)", "attack", 2.0, asked=asked(["shadow"])),
            phase("attack membership (B,P)", "attack", 1.0, asked=[]),
            phase(
                "attack membership_lira (B,S)",
                "attack",
                4.0,
                asked=asked([f"reference-online-{i}-of-4" for i in range(4)], ["online"])
                + asked([f"reference-offline-{i}-of-4" for i in range(4)], ["offline"])
                + asked([f"reference-online-{i}-of-4-r1" for i in range(4)], []),  # a repeat's: no variant's
            ),
            phase("load reference-online-0-of-4", "model", 0.1, [model("reference-online-0-of-4", 10 * k, True)]),
            phase(
                "attack membership_rmia (B,S)",
                "attack",
                3.0,
                asked=asked([f"reference-offline-{i}-of-2" for i in range(2)], ["offline"]),
            ),
            phase("attack membership_qmia (B,S)", "attack", 1.0, asked=asked(["qmia-gaussian"], ["gaussian"])),
            phase("train qmia-gaussian", "model", 30 * k, [model("qmia-gaussian", 30 * k)]),
        ],
    }


POWER = {  # (attack, variant): TPR at 1% FPR per seed
    ("membership", ""): (0.01, 0.02),
    ("membership_lira", "online"): (0.10, 0.12),
    ("membership_lira", "offline"): (0.04, 0.05),
    ("membership_rmia", "offline"): (0.06, 0.07),
    ("membership_qmia", "gaussian"): (0.03, 0.02),
}
REFERENCES = {"membership_lira": 4, "membership_rmia": 2}


def write_cell(results: Path, seed: int) -> Path:
    cell = Cell("mnist5k", "simple_cnn", "none", seed)
    rows = metric_rows(cell, "target", "none", "", {"test_accuracy": 0.9})
    for (attack, variant), tprs in POWER.items():
        metrics = {"auc": 0.5 + tprs[seed], "tpr_at_fpr_0.01": tprs[seed]}
        if attack in REFERENCES:
            metrics["num_references"] = float(REFERENCES[attack])
        rows += metric_rows(cell, attack, "blackbox_shadow", variant, metrics)
    rows += metric_rows(cell, "membership", "blackbox_partial", "", {"auc": 0.5, "tpr_at_fpr_0.01": 0.0})
    cell_dir = results / "cells" / f"cell{seed}"
    write_table(to_frame(rows, Provenance(f"run{seed}", "hash", "test", "2026-01-01T00:00:00"), 1.0), cell_dir)
    (cell_dir / "timings.json").write_text(json.dumps(timings(seed)))
    (cell_dir / "config.yaml").write_text("dataset: {name: mnist5k}\narch: {name: simple_cnn}\ntrain: {epochs: 3}\n")
    (cell_dir / "done.json").write_text("{}")
    return cell_dir


@pytest.fixture
def results(tmp_path) -> Path:
    for seed in (0, 1):
        write_cell(tmp_path, seed)
    return tmp_path


def test_each_series_is_charged_the_models_it_uses_and_its_share_of_its_attack_phase(results):
    series = cell_series(results / "cells" / "cell0")
    partial = series[series["threat_model"] == "blackbox_partial"]
    assert partial["models_s"].tolist() == [0] and partial["cost_s"].tolist() == [1.0]  # no shadow model under (B,P)
    series = series[series["threat_model"] == "blackbox_shadow"].set_index(["attack", "variant"])
    cost = series["models_s"].to_dict()
    assert cost[("membership", "")] == 20  # the shadow model; never the target
    assert cost[("membership_lira", "online")] == 40  # 4 online references, the reused one at its training cost
    assert cost[("membership_lira", "offline")] == 24  # its 4 offline ones
    assert cost[("membership_rmia", "offline")] == 10  # its 2 offline ones, not LiRA's 4
    assert cost[("membership_qmia", "gaussian")] == 30  # its regressor, not the shadow model
    # LiRA's phase (4 s) is split between its two variants; phases of model loading are no attack's
    assert series.loc[("membership_lira", "online"), "attack_s"] == 2.0
    assert series.loc[("membership", ""), "cost_s"] == 22.0


def test_a_cell_whose_attack_phases_did_not_record_their_models_has_no_cost(results):
    cell = results / "cells" / "cell0"
    old = timings(0)
    for p in old["phases"]:
        p["info"].pop("asked", None)
    (cell / "timings.json").write_text(json.dumps(old))
    assert cell_series(cell).empty


def test_pareto_keeps_the_points_nothing_else_beats_on_both_cost_and_power():
    cost = np.array([10, 20, 20, 30, 40, 50])
    power = np.array([0.1, 0.1, 0.3, 0.2, 0.5, 0.5])
    # 20/0.1 is beaten by 10/0.1, 30/0.2 by 20/0.3, 50/0.5 by 40/0.5
    assert pareto(cost, power).tolist() == [True, False, True, False, True, False]


def test_frontier_pools_seeds_and_marks_the_optimal_series(results):
    table = frontier_of(sorted((results / "cells").iterdir()))
    assert table.query("threat_model == 'blackbox_partial'")["pareto"].tolist() == [True]  # 1 s, TPR 0: cheapest
    table = table[table["threat_model"] == "blackbox_shadow"].set_index(["attack", "variant"])
    assert (table["seeds"] == 2).all()
    lira = table.loc[("membership_lira", "online")]
    assert lira["tpr"] == pytest.approx(0.11) and lira["tpr_low"] < 0.11 < lira["tpr_high"]
    assert lira["models_s"] == pytest.approx((40 + 80) / 2)
    # mean cost and TPR: RMIA offline 18 s 0.065, MemInf 32 s 0.015, LiRA offline 38 s 0.045,
    # QMIA 46 s 0.025, LiRA online 62 s 0.11
    assert table["cost_s"].round(6).to_dict() == {
        ("membership", ""): 32,
        ("membership_lira", "online"): 62,
        ("membership_lira", "offline"): 38,
        ("membership_rmia", "offline"): 18,
        ("membership_qmia", "gaussian"): 46,
    }
    assert table.index[table["pareto"]].tolist() == [("membership_rmia", "offline"), ("membership_lira", "online")]
    assert frontier(cell_series(results / "cells" / "cell0").iloc[0:0]).empty


def test_the_report_draws_the_frontier_where_cells_have_timings(results):
    text = build_report(results).read_text()
    section = text.split("## Membership power per second of compute")[1].split("\n## ")[0]
    assert "| mnist5k/simple_cnn/none | membership_lira (B,S) online, 4 refs | 2 |" in section
    assert "figures/frontier_mnist5k-simple_cnn-none.png" in section
    assert (results / "report" / "figures" / "frontier_mnist5k-simple_cnn-none.png").stat().st_size > 10_000
