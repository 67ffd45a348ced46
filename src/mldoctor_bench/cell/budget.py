"""The attacker's compute budget for membership attacks (``assess.budget_s``, docs/assess.md): which
of the selected membership attacks' own models fit, decided before any of them trains.

An attack's cost is estimated from the models it declares it will need (:meth:`Attack.models_wanted`:
LiRA's and RMIA's reference models) and the store does not hold yet: the images each will see in
training (rows x epochs) over the images per second at which the attacker's shadow model trained in
this run (the same architecture and recipe, on this machine). Attacks that need no model of their
own (MemInf, the metric and label-only attacks: the shadow model is shared by the whole assessment)
cost nothing here. The membership attacks are then taken strongest first, by the TPR at 1% FPR of
their best series on the membership frontier this benchmark measured (``make bench-membership``,
shipped as ``report/membership_frontier.csv``; attacks not on it last), cheapest first among equals,
each kept while its models not already paid for by a kept attack fit what is left of the budget; the
others are skipped, with their estimate as the reason. Other families are not budgeted.
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
    estimates: list[Estimate], budget_s: float, images_per_second: float, power: Optional[dict[str, float]] = None
) -> dict[tuple[str, str], str]:
    """The pairs over budget, with the reason: strongest first by ``power`` (attack -> TPR at 1% FPR;
    attacks without one last), cheapest first among equals, each kept while the models no kept attack
    has paid for fit what is left (a model two attacks share is paid once)."""
    power = power or {}
    left, paid, over = budget_s, set(), {}
    for est in sorted(estimates, key=lambda e: (-power.get(e.attack, -1.0), sum(e.images.values()))):
        new = {key: n for key, n in est.images.items() if key not in paid}
        seconds = sum(new.values()) / images_per_second
        if seconds <= left:
            left -= seconds
            paid |= set(new)
            continue
        over[(est.attack, est.threat_model)] = (
            f"{SKIPPED_FOR_COST}: its {len(new)} model(s) would train for about {seconds:.0f} s (at the "
            f"shadow model's {images_per_second:.0f} images/s), over the {left:.0f} s left of "
            f"assess.budget_s={budget_s:g}; raise assess.budget_s to run it"
        )
    return over


def budget_of(run: "CellRun") -> Optional[float]:
    """``assess.budget_s`` of the run's config (None: no budget, as in every benchmark run)."""
    value = OmegaConf.select(run.plan.cfg, "assess.budget_s", default=None)
    return None if value is None else float(value)


def over_budget(run: "CellRun", pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The membership pairs of ``pairs`` the budget leaves out, with the reason (none without a
    budget, or without a shadow model whose training speed the estimate rests on)."""
    budget = budget_of(run)
    speed = run.shadow.manifest.get("images_per_second") if run.shadow is not None else None
    if budget is None or not speed:
        return {}
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
    return select(estimates, budget, float(speed), frontier_power())
