"""Canaries: examples an auditor adds to a model's training data to measure what the model reveals
about the examples most exposed to it. Shared by the one-run audit (:mod:`.privacy_audit`) and the
worst-case evaluation of defenses (:mod:`.worst_case`)."""

from __future__ import annotations

import torch

KINDS = ("mislabeled", "natural")


def canary_labels(true_labels: torch.Tensor, kind: str, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """The labels canaries are trained with: the true ones (``natural``), or each shifted to a
    different class drawn uniformly (``mislabeled``: an included canary can only be fitted by
    memorising it)."""
    if kind == "natural":
        return true_labels.clone()
    shift = torch.randint(1, num_classes, true_labels.shape, generator=generator)
    return (true_labels + shift) % num_classes
