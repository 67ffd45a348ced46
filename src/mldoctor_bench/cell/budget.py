"""The attacker's compute budget for membership attacks (``assess.budget_models``, docs/assess.md):
which of the selected membership attacks' own models fit, decided before any of them trains.

The budget is counted in trainings of the attacker's shadow model (its rows x epochs, the images it
sees in training), never in seconds: the same command then selects the same attacks on a busy
machine and on an idle one. An attack's cost is the images its declared models
(:meth:`Attack.models_wanted`: LiRA's and RMIA's reference models, QMIA's regressor) that the store
does not hold yet will see in training, over the shadow model's: they have the shadow model's
architecture, so an image costs each the same. The seconds that this is at the shadow model's speed
in this run are given beside it, for the reader only. Attacks that need no model of their own
(MemInf, the metric and label-only attacks: the shadow model is shared by the whole assessment)
cost nothing here. The membership attacks are then taken strongest first, by the TPR at 1% FPR of
their best series on the membership frontier this benchmark measured (``make bench-membership``,
shipped as ``report/membership_frontier.csv``; attacks not on it last), cheapest first among equals,
each kept while its models not already paid for by a kept attack fit what is left of the budget; the
others are skipped, with their cost as the reason. Other families are not budgeted.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Optional

from omegaconf import OmegaConf

from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.results import SKIPPED_FOR_COST

if TYPE_CHECKING:
    from mldoctor_bench.cell.run import CellRun

MEMBERSHIP = "membership"
FRONTIER_CSV = "membership_frontier.csv"  # written by scripts/bench_membership.py --ship


@dataclass(frozen=True)
class Estimate:
    """One attack under one threat model: the images each of its not-yet-stored models would train
    on (rows x epochs), by the model's store key."""

    attack: str
    threat_model: str
    images: dict[str, int] = field(default_factory=dict)


def frontier_power() -> dict[str, float]:
    """Per membership attack, the TPR at 1% FPR of its best Pareto-optimal series on the shipped
    frontier (empty where none is shipped)."""
    path = resources.files("mldoctor_bench.report").joinpath(FRONTIER_CSV)
    if not path.is_file():
        return {}
    with path.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["pareto"] == "True"]
    power: dict[str, float] = {}
    for r in rows:
        power[r["attack"]] = max(power.get(r["attack"], 0.0), float(r["tpr"]))
    return power


def select(
    estimates: list[Estimate],
    budget: float,
    shadow_images: int,
    power: Optional[dict[str, float]] = None,
    images_per_second: Optional[float] = None,
) -> dict[tuple[str, str], str]:
    """The pairs over ``budget`` (trainings of a shadow model that sees ``shadow_images``), with the
    reason: strongest first by ``power`` (attack -> TPR at 1% FPR; attacks without one last), cheapest
    first among equals, each kept while the models no kept attack has paid for fit what is left (a
    model two attacks share is paid once). ``images_per_second`` only puts seconds in the reasons."""
    power = power or {}
    left, paid, over = float(budget), set(), {}
    for est in sorted(estimates, key=lambda e: (-power.get(e.attack, -1.0), sum(e.images.values()))):
        new = {key: n for key, n in est.images.items() if key not in paid}
        cost = sum(new.values()) / shadow_images
        if cost <= left + 1e-9:
            left -= cost
            paid |= set(new)
            continue
        seconds = f", about {sum(new.values()) / images_per_second:.0f} s here" if images_per_second else ""
        over[(est.attack, est.threat_model)] = (
            f"{SKIPPED_FOR_COST}: its {len(new)} model(s) would cost {cost:.2f} trainings of the shadow model "
            f"({sum(new.values()):,} training images{seconds}), over the {left:.2f} left of "
            f"assess.budget_models={budget:g}; raise assess.budget_models to run it"
        )
    return over


def budget_of(run: "CellRun") -> Optional[float]:
    """``assess.budget_models`` of the run's config (None: no budget, as in every benchmark run)."""
    value = OmegaConf.select(run.plan.cfg, "assess.budget_models", default=None)
    return None if value is None else float(value)


def over_budget(run: "CellRun", pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The membership pairs of ``pairs`` the budget leaves out, with the reason (none without a
    budget, or without a shadow model whose training the budget is counted in)."""
    budget = budget_of(run)
    if budget is None or run.shadow is None:
        return {}
    shadow = run.models.pool_spec("shadow", "shadow_train", defended=run.models.knows_defense)
    estimates = []
    for attack_name, tm_name in pairs:
        attack = ATTACKS.get(attack_name)()
        if attack.family != MEMBERSHIP or tm_name not in attack.threat_models:
            continue
        try:
            requests = attack.models_wanted(run.context(attack_name, tm_name))
        except Exception:  # noqa: BLE001 - the attack reports the same error when it runs
            continue
        estimates.append(Estimate(attack_name, tm_name, run.models.untrained_images(requests)))
    speed = run.shadow.manifest.get("images_per_second")
    return select(estimates, budget, run.models.images_seen(shadow), frontier_power(), speed)
