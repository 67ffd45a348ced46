"""The attacker's budget for membership attacks (``assess.budget_s``): which attacks fit, by hand."""

from __future__ import annotations

from omegaconf import OmegaConf

from mldoctor_bench.cell.budget import Estimate, select
from mldoctor_bench.cell.plan import semantic_config

SPEED = 100.0  # images per second: 1,000 images take 10 s


def test_the_cheapest_attacks_are_kept_while_they_fit_and_a_shared_model_is_paid_once():
    rmia = Estimate("membership_rmia", "blackbox_shadow", {"off-0": 1_000, "off-1": 1_000})  # 20 s
    lira_offline = Estimate("membership_lira", "blackbox_shadow", {"off-0": 1_000, "off-1": 1_000, "x": 500})
    lira = Estimate("membership_lira", "blackbox_partial", {f"on-{i}": 1_000 for i in range(16)})  # 160 s
    over = select([lira, lira_offline, rmia], budget_s=30, images_per_second=SPEED)
    # RMIA first (20 s), then LiRA offline pays only its own model (5 s): 25 s of 30; LiRA online is out
    assert set(over) == {("membership_lira", "blackbox_partial")}
    reason = over[("membership_lira", "blackbox_partial")]
    assert reason.startswith("skipped for cost: its 16 model(s) would train for about 160 s")
    assert "over the 5 s left of assess.budget_s=30" in reason
    assert set(select([lira, rmia], budget_s=19.9, images_per_second=SPEED)) == {
        ("membership_rmia", "blackbox_shadow"),
        ("membership_lira", "blackbox_partial"),
    }
    assert select([lira, rmia], budget_s=180, images_per_second=SPEED) == {}
    assert select([Estimate("membership", "blackbox_shadow")], budget_s=0, images_per_second=SPEED) == {}


def test_the_strongest_attack_on_the_frontier_is_kept_first():
    rmia = Estimate("membership_rmia", "blackbox_shadow", {"off-0": 1_000, "off-1": 1_000})  # 20 s
    qmia = Estimate("membership_qmia", "blackbox_shadow", {"regressor": 800})  # 8 s
    power = {"membership_rmia": 0.06, "membership_qmia": 0.03}
    # 25 s: RMIA, the stronger, is kept first, and QMIA no longer fits; cheapest first would keep QMIA
    assert set(select([qmia, rmia], 25, SPEED, power)) == {("membership_qmia", "blackbox_shadow")}
    assert set(select([qmia, rmia], 25, SPEED)) == {("membership_rmia", "blackbox_shadow")}


def test_the_budget_is_part_of_a_cells_identity_and_the_exit_policy_is_not():
    base = {"seed": 0, "results_dir": "/tmp/x", "assess": {"fail_on": None, "budget_s": 300}}
    same = semantic_config(OmegaConf.create({**base, "assess": {"fail_on": "high", "budget_s": 300}}))
    assert semantic_config(OmegaConf.create(base)) == same == {"seed": 0, "assess": {"budget_s": 300}}
    other = semantic_config(OmegaConf.create({**base, "assess": {"fail_on": None, "budget_s": 900}}))
    assert other != same
    assert semantic_config(OmegaConf.create({"seed": 0, "assess": {"fail_on": "high"}})) == {"seed": 0}


def test_the_shipped_frontier_ranks_each_attack_by_its_best_pareto_optimal_series():
    from importlib import resources

    import pandas as pd

    from mldoctor_bench.cell.budget import FRONTIER_CSV, frontier_power

    table = pd.read_csv(resources.files("mldoctor_bench.report").joinpath(FRONTIER_CSV))
    best = table[table["pareto"]].groupby("attack")["tpr"].max().to_dict()
    assert frontier_power() == best and set(best) <= set(table["attack"])
    # Pareto-optimal: none of them is beaten on both cost and power by another row
    for row in table[table["pareto"]].itertuples():
        assert not ((table["cost_s"] <= row.cost_s) & (table["tpr"] > row.tpr)).any(), row


def test_mldoctor_assess_selects_every_attack_on_the_shipped_frontier_by_default():
    """The budget, not the selection, decides which frontier attacks an owner's assessment runs."""
    from hydra import compose, initialize_config_module

    from mldoctor_bench.cell.budget import frontier_power

    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        assess, bench = compose("assess"), compose("config")
    on_frontier = set(frontier_power())
    assert {"membership_qmia", "membership_lira", "membership_rmia"} <= on_frontier <= set(assess.attack)
    # the benchmark's default run keeps its own, cheaper selection
    assert set(assess.attack) - set(bench.attack) == {"membership_qmia", "membership_lira"}
    assert assess.assess.budget_s is not None
