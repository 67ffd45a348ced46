"""The owner's selection policy: the attacker's compute budget for membership attacks
(``assess.budget_models``, docs/assess.md), which of the selected membership attacks' own models
fit, decided before any of them trains (:meth:`OwnerTarget.leave_out`).

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
from typing import Optional

from mldoctor_bench.attacks import ATTACKS
from mldoctor_bench.cell.targets import Selection
from mldoctor_bench.families import MEMBERSHIP
from mldoctor_bench.results import SKIPPED_FOR_COST

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


def over_budget(selection: Selection, budget: Optional[float]) -> dict[tuple[str, str], str]:
    """The membership pairs of ``selection`` the budget leaves out, with the reason (none without a
    budget, or without a shadow model whose training the budget is counted in)."""
    if budget is None or selection.shadow is None:
        return {}
    models = selection.models
    estimates = [
        Estimate(attack_name, tm_name, models.untrained_images(requests))
        for (attack_name, tm_name), requests in selection.wanted.items()
        if ATTACKS.get(attack_name).family == MEMBERSHIP
    ]
    speed = selection.shadow.manifest.get("images_per_second")
    return select(estimates, budget, models.shadow_spec().images_seen, frontier_power(), speed)
