"""What the attacker holds under each threat model, and what the attack is scored on (ML-Doctor, Liu et al. 2022).

- shadow (S): the shadow quarters, with a shadow model the cell trained on shadow-train using the
  target's architecture and recipe (the attacker's own model, so full access to it).
- partial (P): the first half of target-train (known members) and of target-test (known
  non-members); membership attacks are then scored on the *other* halves.
- none (N): nothing.
- owner (O): the model owner's training data (target-train) and the partition's canary pool, rows
  it may add to its own training to audit it.
Membership is scored on balanced members (target-train) and non-members (target-test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from mldoctor_bench.data.base import ImageData
from mldoctor_bench.data.splits import Splits
from mldoctor_bench.threat_models import NONE, OWNER, PARTIAL, SHADOW, ThreatModel, WhiteBoxAccess


@dataclass(frozen=True)
class Labeled:
    """Images (``uint8``) with their task labels and, where the dataset has one, the attribute;
    ``index``: each row's index in the dataset (``None`` for images made up by an attack), so that
    per-example results can name the example."""

    images: torch.Tensor
    labels: torch.Tensor
    attribute: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None

    @classmethod
    def take(cls, data: ImageData, indices: torch.Tensor) -> "Labeled":
        return cls(
            data.images[indices],
            data.labels[indices],
            None if data.attribute is None else data.attribute[indices],
            torch.as_tensor(indices, dtype=torch.long),
        )

    def __len__(self) -> int:
        return len(self.images)

    def rows(self, selection) -> "Labeled":
        """The rows ``selection`` (a slice, indices or a mask) of every field."""
        return Labeled(
            *(None if t is None else t[selection] for t in (self.images, self.labels, self.attribute, self.index))
        )

    def head(self, n: int) -> "Labeled":
        return self.rows(slice(None, n))

    def tail(self, n: int) -> "Labeled":
        return self.rows(slice(len(self) - n, None))

    @staticmethod
    def concat(parts: list["Labeled"]) -> "Labeled":
        def joined(name: str) -> Optional[torch.Tensor]:
            tensors = [getattr(p, name) for p in parts]
            return None if any(t is None for t in tensors) else torch.cat(tensors)

        return Labeled(joined("images"), joined("labels"), joined("attribute"), joined("index"))


def balanced(data_in: Labeled, data_out: Labeled, cap: Optional[int] = None) -> tuple[Labeled, Labeled]:
    """Equal numbers of members and non-members (the first ones), at most ``cap`` of each."""
    n = min(len(data_in), len(data_out), cap if cap else len(data_in))
    return data_in.head(n), data_out.head(n)


@dataclass
class AttackerKnowledge:
    """The attacker's auxiliary data.

    ``members``/``nonmembers`` are in/out of the training set of ``reference``: the attacker's
    shadow model under (.,S); under (.,P) ``reference`` is ``None`` and they refer to the target.
    ``canaries`` (the owner only): the partition's canary pool, in its saved order.
    """

    members: Optional[Labeled] = None
    nonmembers: Optional[Labeled] = None
    reference: Optional[WhiteBoxAccess] = None
    canaries: Optional[Labeled] = None

    @property
    def data(self) -> Optional[Labeled]:
        """All auxiliary images the attacker holds (members first)."""
        parts = [p for p in (self.members, self.nonmembers) if p is not None]
        return Labeled.concat(parts) if parts else None


@dataclass(frozen=True)
class Evaluation:
    """Held-back data the cell scores an attack on; attacks never train on it."""

    members: Labeled
    nonmembers: Labeled
    target_test: Labeled


def attacker_knowledge(
    tm: ThreatModel, data: ImageData, splits: Splits, shadow: Optional[WhiteBoxAccess]
) -> tuple[AttackerKnowledge, Evaluation]:
    """The auxiliary data ``tm`` grants, and the balanced evaluation sets that go with it."""
    train = Labeled.take(data, splits.target_train)
    test = Labeled.take(data, splits.target_test)
    n = min(len(train), len(test))
    if tm.knowledge == SHADOW:
        if shadow is None:
            raise ValueError("a shadow threat model needs the shadow model")
        knowledge = AttackerKnowledge(
            Labeled.take(data, splits.shadow_train), Labeled.take(data, splits.shadow_test), shadow
        )
        return knowledge, Evaluation(train.head(n), test.head(n), test)
    if tm.knowledge == PARTIAL:
        half = n // 2
        knowledge = AttackerKnowledge(train.head(half), test.head(half), None)
        return knowledge, Evaluation(train.tail(n - half), test.tail(n - half), test)
    if tm.knowledge == NONE:
        return AttackerKnowledge(), Evaluation(train.head(n), test.head(n), test)
    if tm.knowledge == OWNER:
        knowledge = AttackerKnowledge(members=train, canaries=Labeled.take(data, splits.pool("canary")))
        return knowledge, Evaluation(train.head(n), test.head(n), test)
    raise ValueError(f"unknown knowledge {tm.knowledge!r}")
