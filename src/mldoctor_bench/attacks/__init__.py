"""Attacks: a registry keyed by the ``attack`` config group's names."""

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, AttackSkipped, VariantMetrics
from mldoctor_bench.registry import import_submodules

import_submodules(__name__)  # each attack module registers itself

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackSkipped", "VariantMetrics"]
