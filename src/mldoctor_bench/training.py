"""Training of classifiers (targets, shadows, and later reference and surrogate models).

A :class:`Recipe` says how to train; :func:`train_classifier` trains one model on index-selected
rows of an :class:`ImageData` held as tensors on the training device. Everything that determines
the weights is in :meth:`TrainJob.cache_key_payload`, so the model store can reuse a trained model
instead of training it twice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from mldoctor_bench.data.base import ImageData, normalise
# Re-exported: attacks and defenses query models through these names.
from mldoctor_bench.inference import accuracy, iterate_batches, predict_logits  # noqa: F401
from mldoctor_bench.models import Classifier, build_model
from mldoctor_bench.provenance import source_hash
from mldoctor_bench.settings import parse, setting

# Source files whose change invalidates cached models.
TRAINING_SOURCES = ("training.py", "inference.py", "models", "data/base.py")

ProgressHook = Callable[[int, int, float], None]  # (epoch, epochs, mean loss)


@dataclass(frozen=True)
class Recipe:
    """SGD recipe of spec section 4 with a step decay at fractions of the epochs."""

    epochs: int = setting(100, min=1)
    batch_size: int = setting(64, min=1)
    lr: float = setting(0.01, min=0, min_exclusive=True)
    momentum: float = setting(0.9, min=0, max=1)
    weight_decay: float = setting(5e-4, min=0)
    lr_milestones: tuple[float, ...] = setting((0.5, 0.75), min=0, max=1, example="[0.5,0.75]")
    lr_gamma: float = setting(0.1, min=0, max=1, min_exclusive=True)

    @classmethod
    def from_config(cls, cfg: Any) -> "Recipe":
        """Build from the ``train`` config section; a bad value raises
        :class:`~mldoctor_bench.settings.SettingsError` naming ``train.<key>``."""
        return parse(cls, cfg, "train")


@dataclass(frozen=True)
class TrainJob:
    """One model to train: which data rows, which architecture, which recipe and seed."""

    role: str
    arch: str
    recipe: Recipe
    seed: int
    dataset_fingerprint: str
    indices_digest: str
    extra: dict = field(default_factory=dict)  # e.g. the training-time part of a defense

    def cache_key_payload(self) -> dict:
        """Everything that determines the trained weights."""
        return {
            "role": self.role,
            "arch": self.arch,
            "recipe": asdict(self.recipe),
            "seed": self.seed,
            "dataset": self.dataset_fingerprint,
            "indices": self.indices_digest,
            "extra": self.extra,
            "code": source_hash(TRAINING_SOURCES),
        }


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} was asked for but CUDA is not available; use device=cpu or auto")
    return device


def seeded_model(job: TrainJob, data: ImageData) -> Classifier:
    """Build the job's architecture with weights initialised from the job's seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)
        return build_model(job.arch, data.channels, data.num_classes, data.image_size)


def sgd_with_schedule(model: nn.Module, recipe: Recipe):
    """The recipe's SGD optimiser and its step-decay schedule (stepped once per epoch)."""
    optimiser = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    milestones = sorted({max(1, math.ceil(m * recipe.epochs)) for m in recipe.lr_milestones})
    return optimiser, torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones, gamma=recipe.lr_gamma)


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
    seed: int,
    on_epoch: Optional[ProgressHook] = None,
    loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = None,
    max_grad_norm: Optional[float] = None,
) -> nn.Module:
    """Train ``model`` in place on ``uint8`` ``images`` and ``labels`` (already on its device).

    ``labels`` are class indices, or float class-probability rows (soft labels, e.g. a target's
    answers for a surrogate), which cross-entropy accepts as they are. ``loss_fn(logits, labels, epoch)`` replaces cross-entropy (defenses use it); the batch order
    comes from a generator seeded by ``seed``, so the same job gives the same weights on one device.
    ``max_grad_norm`` clips the gradient's global norm before each step (off by default).
    """
    device = images.device
    model.to(device).train()
    optimiser, schedule = sgd_with_schedule(model, recipe)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(recipe.epochs):
        total, count = 0.0, 0
        for batch in iterate_batches(len(images), recipe.batch_size, generator):
            batch = batch.to(device)
            x, y = normalise(images[batch]), labels[batch]
            logits = model(x)
            loss = loss_fn(logits, y, epoch) if loss_fn else F.cross_entropy(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        schedule.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, recipe.epochs, total / max(count, 1))
    return model.eval()
