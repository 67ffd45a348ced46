"""Which of the attacker's auxiliary data an attack scored on target-test may train on.

Under (.,S) that is all the shadow quarters. Under (.,P) it is only the known part of target-train:
the attacker's known non-members are rows of target-test, the very rows attribute inference and
model stealing are scored on (ML-Doctor, Liu et al. 2022).
"""

from __future__ import annotations

import torch

from mldoctor_bench.attacks.base import AttackContext, AttackSkipped
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.threat_models import PARTIAL


def training_data(ctx: AttackContext) -> Labeled:
    """The auxiliary data disjoint from ``ctx.evaluation.target_test``; skip if there is none."""
    k = ctx.knowledge
    data = k.members if ctx.threat_model.knowledge == PARTIAL else k.data
    if data is None or len(data) == 0:
        raise AttackSkipped(f"{ctx.threat_model.name} gives the attacker no data to train on")
    return data


def paired_counts(attack_right: torch.Tensor, baseline_right: torch.Tensor) -> dict[str, float]:
    """Examples on which only the attack, or only its baseline, is right: McNemar's discordant counts,
    for a paired test of the attack against the baseline on the same examples."""
    return {
        "only_attack_right": float((attack_right & ~baseline_right).sum()),
        "only_baseline_right": float((~attack_right & baseline_right).sum()),
    }
