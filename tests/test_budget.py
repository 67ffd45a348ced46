"""The attacker's budget for membership attacks (``assess.budget_models``): which attacks fit, by hand,
and that the choice never depends on how fast the machine is."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mldoctor_bench.cell.plan import semantic_config
from mldoctor_bench.cell.targets import Selection
from mldoctor_bench.owner.budget import Estimate, over_budget, select

SHADOW = 1_000  # the shadow model's training images (rows x epochs): one training


def test_the_cheapest_attacks_are_kept_while_they_fit_and_a_shared_model_is_paid_once():
    rmia = Estimate("membership_rmia", "blackbox_shadow", {"off-0": 1_000, "off-1": 1_000})  # 2 trainings
    lira_offline = Estimate("membership_lira", "blackbox_shadow", {"off-0": 1_000, "off-1": 1_000, "x": 500})
    lira = Estimate("membership_lira", "blackbox_partial", {f"on-{i}": 1_000 for i in range(16)})  # 16
    over = select([lira, lira_offline, rmia], budget=3, shadow_images=SHADOW)
    # RMIA first (2), then LiRA offline pays only its own model (0.5): 2.5 of 3; LiRA online is out
    assert set(over) == {("membership_lira", "blackbox_partial")}
    reason = over[("membership_lira", "blackbox_partial")]
    assert reason.startswith("skipped for cost: its 16 model(s) would cost 16.00 trainings of the shadow model")
    assert "(16,000 training images)" in reason and "over the 0.50 left of assess.budget_models=3" in reason
    assert set(select([lira, rmia], 1.99, SHADOW)) == {
        ("membership_rmia", "blackbox_shadow"),
        ("membership_lira", "blackbox_partial"),
    }
    assert select([lira, rmia], 18, SHADOW) == {}
    assert select([Estimate("membership", "blackbox_shadow")], 0, SHADOW) == {}


def test_the_strongest_attack_on_the_frontier_is_kept_first():
    rmia = Estimate("membership_rmia", "blackbox_shadow", {"off-0": 1_000, "off-1": 1_000})  # 2
    qmia = Estimate("membership_qmia", "blackbox_shadow", {"regressor": 800})  # 0.8
    power = {"membership_rmia": 0.06, "membership_qmia": 0.03}
    # 2.5: RMIA, the stronger, is kept first, and QMIA no longer fits; cheapest first would keep QMIA
    assert set(select([qmia, rmia], 2.5, SHADOW, power)) == {("membership_qmia", "blackbox_shadow")}
    assert set(select([qmia, rmia], 2.5, SHADOW)) == {("membership_rmia", "blackbox_shadow")}


def test_the_machines_speed_only_puts_seconds_in_the_reasons():
    rmia = Estimate("membership_rmia", "blackbox_shadow", {"off-0": 1_000, "off-1": 1_000})
    lira = Estimate("membership_lira", "blackbox_shadow", {f"on-{i}": 1_000 for i in range(16)})
    for budget in (0.5, 2, 3, 17, 20):
        chosen = [select([lira, rmia], budget, SHADOW, images_per_second=speed) for speed in (None, 1.0, 1e6)]
        assert set(chosen[0]) == set(chosen[1]) == set(chosen[2]), budget
    [slow] = select([lira], 1, SHADOW, images_per_second=10.0).values()
    assert "about 1600 s here" in slow


@pytest.mark.slow
def test_a_cell_selects_the_same_attacks_whether_its_shadow_model_trained_slowly_or_fast(tmp_path, monkeypatch):
    """The speed the shadow model trained at in this run is all a busy machine changes."""
    from attack_fixtures import prepared_cell

    cell = prepared_cell(
        tmp_path,
        "attack=[membership,membership_rmia,membership_qmia]",
        "threat_model=blackbox_shadow",
        "data.quarter_size=40",
        "train.epochs=2",
    )
    pairs = [(a, "blackbox_shadow") for a in ("membership", "membership_rmia", "membership_qmia")]
    selection = Selection(cell.models_wanted(pairs), cell.models, cell.shadow)
    chosen = []
    for speed in (1.0, 1e9):
        monkeypatch.setitem(cell.shadow.manifest, "images_per_second", speed)
        chosen.append(over_budget(selection, 2.5))
    # RMIA's 2 references are 2 trainings of the shadow model and fit; QMIA's regressor (80 images x 0.8,
    # 40 epochs, against 40 x 2) would cost 32 and does not; MemInf costs nothing
    assert set(chosen[0]) == set(chosen[1]) == {("membership_qmia", "blackbox_shadow")}
    assert "32.00 trainings of the shadow model" in chosen[0][("membership_qmia", "blackbox_shadow")]


def test_the_budget_is_part_of_a_cells_identity_and_the_exit_policy_is_not():
    base = {
        "seed": 0,
        "results_dir": "/tmp/x",
        "assess": {"fail_on": None, "allow_incomplete": False, "budget_models": 4},
    }
    gate = {"fail_on": "high", "allow_incomplete": True, "budget_models": 4}
    same = semantic_config(OmegaConf.create({**base, "assess": gate}))
    assert semantic_config(OmegaConf.create(base)) == same == {"seed": 0, "assess": {"budget_models": 4}}
    other = semantic_config(OmegaConf.create({**base, "assess": {"fail_on": None, "budget_models": 8}}))
    assert other != same
    assert semantic_config(OmegaConf.create({"seed": 0, "assess": {"fail_on": "high"}})) == {"seed": 0}


def test_the_shipped_frontier_ranks_each_attack_by_its_best_pareto_optimal_series():
    from importlib import resources

    import pandas as pd

    from mldoctor_bench.owner.budget import FRONTIER_CSV, frontier_power

    table = pd.read_csv(resources.files("mldoctor_bench.report").joinpath(FRONTIER_CSV))
    best = table[table["pareto"]].groupby("attack")["tpr"].max().to_dict()
    assert frontier_power() == best and set(best) <= set(table["attack"])
    # Pareto-optimal: none of them is beaten on both cost and power by another row
    for row in table[table["pareto"]].itertuples():
        assert not ((table["cost_s"] <= row.cost_s) & (table["tpr"] > row.tpr)).any(), row


def test_mldoctor_assess_selects_every_attack_on_the_shipped_frontier_by_default():
    """The budget, not the selection, decides which frontier attacks an owner's assessment runs."""
    from hydra import compose, initialize_config_module

    from mldoctor_bench.owner.budget import frontier_power

    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        assess, bench = compose("assess"), compose("config")
    on_frontier = set(frontier_power())
    assert {"membership_qmia", "membership_lira", "membership_rmia"} <= on_frontier <= set(assess.attack)
    # the benchmark's default run keeps its own, cheaper selection
    assert set(assess.attack) - set(bench.attack) == {"membership_qmia", "membership_lira"}
    assert assess.assess.budget_models is not None


@pytest.mark.slow
def test_each_pairs_context_is_made_once_though_the_target_and_the_training_ahead_read_it(tmp_path, monkeypatch):
    from attack_fixtures import prepared_cell
    from mldoctor_bench.cell import CellRun

    cell = prepared_cell(
        tmp_path,
        "attack=[membership,membership_rmia]",
        "threat_model=[blackbox_shadow,blackbox_partial]",
        "attack.membership_rmia.num_references=2",
        "data.quarter_size=40",
        "train.epochs=2",
    )
    made, real = [], CellRun.new_context
    monkeypatch.setattr(CellRun, "new_context", lambda self, a, t: made.append((a, t)) or real(self, a, t))
    rows = cell.attacks()
    assert sorted(made) == [
        ("membership", "blackbox_partial"),
        ("membership", "blackbox_shadow"),
        ("membership_rmia", "blackbox_shadow"),
    ]
    assert {
        r["status"] for r in rows if r["attack"] == "membership_rmia" and r["threat_model"] == "blackbox_shadow"
    } == {"ok"}
