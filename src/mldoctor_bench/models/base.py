"""The uniform shape every architecture has, and the architecture registry.

Every classifier is ``head(features(x))``: ``features`` maps an image batch to the penultimate
embedding (what attribute inference reads) and ``head`` is the final ``nn.Linear`` (whose weight
gradient white-box membership inference reads). No forward hooks are needed to reach either.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mldoctor_bench.registry import Registry


class NoEmbedding(Exception):
    """A model that does not expose its penultimate embedding (an owner's, say): an attack that needs it
    cannot apply to the cell, which records the attack as skipped with this message."""


class Classifier(nn.Module):
    """``head(features(x))`` with ``features`` giving a flat embedding of size ``embedding_dim``."""

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    @property
    def embedding_dim(self) -> int:
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate embedding of ``x``."""
        return self.features(x)


Builder = Callable[[int, int, int], Classifier]
ARCHS: Registry[Builder] = Registry("architecture")


def build_model(name: str, in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """Build architecture ``name`` for images of ``in_channels`` x ``image_size`` x ``image_size``."""
    return ARCHS.get(name)(in_channels, num_classes, image_size)
