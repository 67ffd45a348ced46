"""Canaries: examples an auditor adds to a model's training data to measure what the model reveals
about the examples most exposed to it. Shared by the one-run audit (:mod:`.privacy_audit`) and the
worst-case evaluation of defenses (:mod:`.worst_case`)."""

from __future__ import annotations

import torch

KINDS = ("mislabeled", "natural")
IMAGES = ("mislabeled", "blank")  # where a worst-case canary's image comes from


def blank_canaries(
    n: int, shape: tuple[int, ...], num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` blank images (``uint8``, ``shape`` = channels x height x width), each one random colour,
    with random labels: the canaries Aerni, Zhang and Tramer (CCS 2024) use against DP-SGD, which
    hides mislabelled natural images well (a blank image shares little with the data, so its
    label can only be learnt from the image itself)."""
    colours = torch.randint(0, 256, (n, shape[0], 1, 1), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return colours.expand(n, *shape).contiguous(), labels


def canary_labels(true_labels: torch.Tensor, kind: str, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """The labels canaries are trained with: the true ones (``natural``), or each shifted to a
    different class drawn uniformly (``mislabeled``: an included canary can only be fitted by
    memorising it)."""
    if kind == "natural":
        return true_labels.clone()
    shift = torch.randint(1, num_classes, true_labels.shape, generator=generator)
    return (true_labels + shift) % num_classes
