"""What every attack receives and returns.

An attack is a class registered under its config name. It declares the threat models it supports,
receives an :class:`AttackContext` (the access object the threat model grants, the attacker's
auxiliary data, the held-back evaluation data and its own settings) and returns plain metrics per
variant. It never trains the target and writes only inside ``ctx.out_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from mldoctor_bench.knowledge import AttackerKnowledge, Evaluation
from mldoctor_bench.registry import Registry
from mldoctor_bench.threat_models import LabelOnlyAccess, ThreatModel

VariantMetrics = dict[str, dict[str, float]]  # variant ("" if none) -> metric -> value


class AttackSkipped(Exception):
    """Raised by an attack that cannot apply to this cell; the message is the recorded reason."""


@dataclass
class AttackContext:
    """Everything an attack may use."""

    threat_model: ThreatModel
    target: LabelOnlyAccess
    knowledge: AttackerKnowledge
    evaluation: Evaluation
    settings: Any
    out_dir: Path
    device: torch.device
    seed: int
    num_classes: int
    num_attribute_classes: int = 0
    progress: Callable[[str, int], Callable[[int], None]] = lambda label, total: (lambda n=1: None)


class Attack:
    """Base class: subclasses set ``name`` and ``threat_models`` and implement :meth:`run`."""

    name: ClassVar[str]
    threat_models: ClassVar[tuple[str, ...]]

    def run(self, ctx: AttackContext) -> VariantMetrics:
        raise NotImplementedError


ATTACKS: Registry[type[Attack]] = Registry("attack")
