"""A cell's classifiers, each described by a frozen :class:`ModelSpec` whose value is its store key,
and the :class:`Workshop` that models are built and trained with in the cell.

A spec is one kind of model to obtain (:class:`~mldoctor_bench.cell.scheduler.ToObtain`); an attack's
other models (a GAN, a regressor) are the other kind,
:class:`~mldoctor_bench.attacks.base.CachedRequest`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from mldoctor_bench import ui
from mldoctor_bench.defenses import DEFENSES, Defense, TrainingSet
from mldoctor_bench.inference import accuracy
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.many_models import TrainingRows
from mldoctor_bench.models import build_model
from mldoctor_bench.provenance import stable_hash
from mldoctor_bench.training import Recipe, TrainJob

Builder = Callable[[int, int, int], nn.Module]  # (in_channels, classes, image_size) -> an untrained model


def derive_seed(seed: int, role: str) -> int:
    """A per-role seed, so target and shadow start from different weights for the same run seed."""
    return int(stable_hash([seed, role], length=8), 16) % (2**31)


def rows_digest(images: torch.Tensor, targets: torch.Tensor) -> str:
    """What a model of the attacker's trains on, as part of its key: the exact images and targets."""
    return hashlib.sha256(images.cpu().numpy().tobytes() + targets.cpu().numpy().tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class Workshop:
    """What a model is built and trained with in one cell: the data's shape, the builders of the
    architectures, the device, the progress bars, the defense's transfer rows, and the cell's identity
    (the data's fingerprint, the partition and the seed), which keys an attack's own models."""

    channels: int
    num_classes: int
    image_size: int
    architectures: Mapping[str, Builder]  # names outside the registry (an owner's model)
    device: torch.device
    bars: ui.Bars
    transfer: Optional[Labeled]
    fingerprint: str
    identity: Mapping[str, object]

    def builder(self, arch: str) -> Builder:
        """``(in_channels, classes, image_size) -> untrained model`` for ``arch``."""
        return self.architectures.get(arch) or (
            lambda channels, classes, size: build_model(arch, channels, classes, size)
        )


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """One classifier to obtain: its role, architecture, recipe, seed, the rows it trains on (with
    their digest) and the training-time defense it trains with (``None``: plain training)."""

    role: str
    arch: str
    recipe: Recipe
    seed: int
    rows: str  # digest of the training rows: a partition pool's, or the images' and targets' own
    images: torch.Tensor = field(repr=False)
    targets: torch.Tensor = field(repr=False)
    defense: Optional[Defense] = None

    def store_key(self, shop: Workshop) -> dict:
        """Everything that determines the trained weights: the store's key."""
        extra = self.defense.cache_payload() if self.defense is not None else {}
        return TrainJob(
            self.role, self.arch, self.recipe, self.seed, shop.fingerprint, self.rows, extra
        ).cache_key_payload()

    @property
    def plain(self) -> bool:
        """Trained by the plain recipe (no training-time defense): may train beside others."""
        return self.defense is None or self.defense.plain_training

    @property
    def epochs(self) -> int:
        return (self.defense.training_recipe(self.recipe) if self.defense is not None else self.recipe).epochs

    @property
    def images_seen(self) -> int:
        return len(self.images) * self.epochs

    @property
    def thread_safe(self) -> bool:
        """Draws nothing from the global random generator while training (DP-SGD's noise and
        distillation's teacher do), so it may train beside others in threads."""
        return self.plain

    @property
    def stack_signature(self) -> Optional[tuple]:
        """Models of one signature (plain recipe, architecture, data size) can be stacked on CUDA."""
        return (self.recipe, self.arch, len(self.images)) if self.plain else None

    def new_model(self, shop: Workshop) -> nn.Module:
        """An untrained model: the spec's architecture from its seed (under its defense's changes)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = shop.builder(self.arch)(shop.channels, shop.num_classes, shop.image_size)
        return self.defense.prepare_model(model) if self.defense is not None else model

    def fit(self, model: nn.Module, shop: Workshop) -> dict:
        """Train ``model`` in place; the metrics its manifest keeps."""
        images, targets = self.images.to(shop.device), self.targets.to(shop.device)
        advance = shop.bars(f"train {self.role} ({self.arch})", self.epochs)
        defense = self.defense or DEFENSES.get("none")()
        extra = defense.fit(
            model,
            TrainingSet(
                images,
                targets,
                self.recipe,
                self.seed,
                lambda: self.new_model(shop),
                shop.transfer,
                on_epoch=lambda e, n, loss: advance(1, f"loss {loss:.3f}"),
            ),
        )
        return {**self.measure(model, shop), **extra}

    def training_rows(self, shop: Workshop) -> TrainingRows:
        """The rows of a stacked training (:meth:`stack_signature`)."""
        return TrainingRows(self.images.to(shop.device), self.targets.to(shop.device), self.seed)

    def measure(self, model: nn.Module, shop: Workshop) -> dict:
        hard = self.targets if self.targets.dim() == 1 else self.targets.argmax(1)
        return {"train_accuracy": accuracy(model, self.images.to(shop.device), hard)}
