"""Training of classifiers (targets, shadows, surrogates, evaluators and reference models).

A :class:`Recipe` says how to train (the SGD recipe) and how to run it on the device (precision,
compilation, determinism, training several models together); :func:`train_classifier` trains one
model on ``uint8`` images resident on the training device, normalised there, in channels-last
layout. Everything that determines the weights is in :meth:`TrainJob.cache_key_payload`, so the
model store can reuse a trained model instead of training it twice;
:mod:`mldoctor_bench.many_models` trains several models of one recipe at once.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from mldoctor_bench.data.base import ImageData

# Re-exported: attacks and defenses query models through these names.
from mldoctor_bench.inference import accuracy, iterate_batches, model_inputs, predict_logits  # noqa: F401
from mldoctor_bench.models import Classifier, build_model
from mldoctor_bench.provenance import source_hash
from mldoctor_bench.settings import parse, setting

# Source files whose change invalidates cached models.
TRAINING_SOURCES = ("training.py", "inference.py", "models", "data/base.py")

ProgressHook = Callable[[int, int, float], None]  # (epoch, epochs, mean loss)

PRECISIONS = ("auto", "bf16", "fp32")
BATCH_MODELS = ("auto", "on", "off", "threads")
# Recipe fields that change how training runs, not what it computes (batched and one-by-one
# training agree to float tolerance, tests/test_many_models.py): kept out of the models' keys.
EXECUTION_ONLY = ("compile", "deterministic", "batch_models")


@dataclass(frozen=True)
class Recipe:
    """The SGD recipe of ML-Doctor (Liu et al., USENIX Security 2022) with a step decay at fractions of the
    epochs."""

    epochs: int = setting(100, min=1)
    batch_size: int = setting(64, min=1)
    lr: float = setting(0.01, min=0, min_exclusive=True)
    momentum: float = setting(0.9, min=0, max=1)
    weight_decay: float = setting(5e-4, min=0)
    lr_milestones: tuple[float, ...] = setting((0.5, 0.75), min=0, max=1, example="[0.5,0.75]")
    lr_gamma: float = setting(0.1, min=0, max=1, min_exclusive=True)
    # auto: bf16 autocast on CUDA, fp32 on CPU (see resolved()).
    precision: str = setting("auto", choices=PRECISIONS, example="bf16")
    # torch.compile the forward pass, once per architecture and input shape per process.
    compile: bool = setting(False)
    # cuDNN's deterministic kernels (bitwise reruns on one GPU), no autotuning.
    deterministic: bool = setting(False)
    # How several models of one recipe train: on = stacked into one vmapped model, threads = one
    # per CPU core at once, off = one after another; auto = the rule of many_models.choose_mode.
    batch_models: str = setting("auto", choices=BATCH_MODELS, example="off")

    @classmethod
    def from_config(cls, cfg: Any) -> "Recipe":
        """Build from the ``train`` config section; a bad value raises
        :class:`~mldoctor_bench.settings.SettingsError` naming ``train.<key>``."""
        return parse(cls, cfg, "train")

    def resolved(self, device: torch.device) -> "Recipe":
        """This recipe with ``precision: auto`` made concrete for ``device``."""
        if self.precision != "auto":
            return self
        return replace(self, precision="bf16" if device.type == "cuda" else "fp32")

    def weights_payload(self) -> dict:
        """What of the recipe determines the weights (for cache keys)."""
        return {k: v for k, v in asdict(self).items() if k not in EXECUTION_ONLY}


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
            "recipe": self.recipe.weights_payload(),
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


def configure_backends(recipe: Recipe, device: torch.device) -> None:
    """cuDNN flags for the recipe: autotuned kernels, or deterministic ones for bitwise reruns."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not recipe.deterministic
        torch.backends.cudnn.deterministic = recipe.deterministic
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not recipe.deterministic


def autocast(precision: str, device: torch.device):
    """The autocast context of a concrete precision (``bf16`` or ``fp32``, which is no autocast)."""
    if precision == "auto":
        raise ValueError("resolve the recipe for its device first (Recipe.resolved)")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


_COMPILED: dict = {}


def _call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def forward_of(model: nn.Module, compile: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model``'s forward pass, compiled when asked. One compiled function serves every model of
    the same architecture in the process (parameters are inputs to the graph, not constants)."""
    if not compile:
        return model
    signature = (type(model).__name__, tuple((n, tuple(p.shape)) for n, p in model.named_parameters()))
    fn = _COMPILED.get(signature)
    if fn is None:
        fn = _COMPILED[signature] = torch.compile(_call)
    return lambda x: fn(model, x)


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
    return optimiser, step_decay(optimiser, recipe)


def step_decay(optimiser: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.MultiStepLR:
    """The recipe's step decay of ``optimiser``'s rate (stepped once per epoch)."""
    milestones = sorted({max(1, math.ceil(m * recipe.epochs)) for m in recipe.lr_milestones})
    return torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones, gamma=recipe.lr_gamma)


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
    answers for a surrogate), which cross-entropy accepts as they are. ``loss_fn(logits, labels, epoch)``
    replaces cross-entropy (defenses use it); the batch order
    comes from a generator seeded by ``seed``, so the same job gives the same weights on one device.
    ``max_grad_norm`` clips the gradient's global norm before each step (off by default).
    """
    device = images.device
    recipe = recipe.resolved(device)
    model.to(device, memory_format=torch.channels_last).train()
    forward = forward_of(model, recipe.compile)
    optimiser, schedule = sgd_with_schedule(model, recipe)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(recipe.epochs):
        total, count = 0.0, 0
        for batch in iterate_batches(len(images), recipe.batch_size, generator):
            batch = batch.to(device, non_blocking=True)
            x, y = model_inputs(images[batch]), labels[batch]
            with autocast(recipe.precision, device):
                logits = forward(x)
            logits = logits.float()
            loss = loss_fn(logits, y, epoch) if loss_fn else F.cross_entropy(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimiser.step()
            total += loss.detach() * len(batch)  # summed on the device: no sync per step
            count += len(batch)
        schedule.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, recipe.epochs, float(total) / max(count, 1))
    return model.eval()
