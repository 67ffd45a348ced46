"""Attacks: a registry keyed by the ``attack`` config group's names."""

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, AttackSkipped, VariantMetrics
from mldoctor_bench.attacks import membership as _membership  # noqa: F401  (registers entries)

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackSkipped", "VariantMetrics"]
