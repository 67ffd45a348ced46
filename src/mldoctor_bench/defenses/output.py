"""Output-time defenses: the black-box API releases post-processed posteriors.

Each keeps the model as it is and transforms the released probability rows into probability rows
(non-negative, summing to one). White-box access is not affected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mldoctor_bench.defense_catalog import OUTPUT
from mldoctor_bench.defenses.base import DEFENSES, Defense
from mldoctor_bench.settings import setting


def top_k(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest probabilities of each row, zero the rest, renormalise."""
    k = min(int(k), probs.shape[1])
    kept = torch.zeros_like(probs).scatter(1, probs.topk(k, dim=1).indices, probs.topk(k, dim=1).values)
    return kept / kept.sum(1, keepdim=True)


def rounded(probs: torch.Tensor, decimals: int) -> torch.Tensor:
    """Round to ``decimals`` and renormalise; a row rounding to all zeros releases its argmax."""
    r = torch.round(probs, decimals=int(decimals))
    empty = r.sum(1) == 0
    r[empty] = one_hot_argmax(probs[empty])
    return r / r.sum(1, keepdim=True)


def one_hot_argmax(probs: torch.Tensor) -> torch.Tensor:
    """The one-hot vector of each row's most probable class."""
    return torch.zeros_like(probs).scatter(1, probs.argmax(1, keepdim=True), 1.0)


@dataclass(frozen=True, kw_only=True)
class TopKSettings:
    k: int = setting(3, min=1)


@dataclass(frozen=True, kw_only=True)
class RoundingSettings:
    decimals: int = setting(2, min=0)


@DEFENSES.register("output_topk")
class OutputTopK(Defense):
    """Release only the top-k probabilities (``defense.k``), renormalised."""

    kind = OUTPUT
    Settings = TopKSettings

    def output_transform(self):
        k = self.settings.k
        return lambda probs: top_k(probs, k)


@DEFENSES.register("output_rounding")
class OutputRounding(Defense):
    """Release probabilities rounded to ``defense.decimals`` decimals."""

    kind = OUTPUT
    Settings = RoundingSettings

    def output_transform(self):
        decimals = self.settings.decimals
        return lambda probs: rounded(probs, decimals)


@DEFENSES.register("output_labels_only")
class OutputLabelsOnly(Defense):
    """Release the one-hot vector of the predicted label instead of the posteriors."""

    kind = OUTPUT

    def output_transform(self):
        return one_hot_argmax
