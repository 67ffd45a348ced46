"""DP-SGD through Opacus (ML-Doctor, Liu et al. 2022): per-example clipping, Gaussian noise, Poisson batches.

The recipe's SGD and step decay are kept; batches are Poisson-sampled with the recipe's batch size
as the expected size. Layers Opacus cannot handle (BatchNorm) are replaced with
``ModuleValidator.fix`` and the change is reported as ``architecture_changed``; in-place ReLUs are
made out-of-place (same weights), since an in-place op on a hooked layer's output breaks Opacus'
backward hooks. The privacy spent is reported as ``epsilon`` at ``delta``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mldoctor_bench.data.base import normalise
from mldoctor_bench.defense_catalog import TRAINING
from mldoctor_bench.defenses.base import DEFENSES, Defense, TrainingSet
from mldoctor_bench.settings import SettingsError, setting
from mldoctor_bench.training import ProgressHook, Recipe, sgd_with_schedule


def dp_compatible(model: nn.Module) -> tuple[nn.Module, bool]:
    """``model`` made trainable by Opacus, and whether its architecture had to change."""
    from opacus.validators import ModuleValidator  # here: Opacus takes most of a second to import

    changed = bool(ModuleValidator.validate(model, strict=False))
    if changed:
        model = ModuleValidator.fix(model)
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return model, changed


def train_classifier_dp(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
    seed: int,
    *,
    max_grad_norm: float,
    delta: float,
    noise_multiplier: Optional[float] = None,
    target_epsilon: Optional[float] = None,
    on_epoch: Optional[ProgressHook] = None,
) -> dict:
    """Train ``model`` in place with DP-SGD on ``uint8`` ``images`` and class-index ``labels``.

    Give ``noise_multiplier``, or ``target_epsilon`` to let Opacus pick the noise for the recipe's
    epochs. Returns ``epsilon`` (spent, RDP accountant), ``delta`` and the ``noise_multiplier`` used.
    """
    with warnings.catch_warnings():
        # Opacus warns that its RNG is not cryptographically secure (seeded here on purpose) and
        # that backward hooks fire on module outputs (the images do not require gradients).
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        return _train_dp(
            model, images, labels, recipe, seed, max_grad_norm, delta, noise_multiplier, target_epsilon, on_epoch
        )


def _train_dp(
    model, images, labels, recipe, seed, max_grad_norm, delta, noise_multiplier, target_epsilon, on_epoch
) -> dict:
    device = images.device
    model.to(device).train()
    optimiser, schedule = sgd_with_schedule(model, recipe)
    loader = DataLoader(
        TensorDataset(torch.arange(len(images))),
        batch_size=recipe.batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant="rdp")
    common = dict(
        module=model,
        optimizer=optimiser,
        data_loader=loader,
        max_grad_norm=max_grad_norm,
        noise_generator=torch.Generator(device=device).manual_seed(seed + 1),
    )
    if target_epsilon is not None:
        dp_model, dp_optimiser, dp_loader = engine.make_private_with_epsilon(
            **common, target_epsilon=target_epsilon, target_delta=delta, epochs=recipe.epochs
        )
    else:
        dp_model, dp_optimiser, dp_loader = engine.make_private(**common, noise_multiplier=noise_multiplier)
    for epoch in range(recipe.epochs):
        total, count = 0.0, 0
        for (batch,) in dp_loader:
            batch = batch.to(device)
            loss = F.cross_entropy(dp_model(normalise(images[batch])), labels[batch])
            dp_optimiser.zero_grad(set_to_none=True)
            loss.backward()
            dp_optimiser.step()
            if len(batch):
                total += float(loss.detach()) * len(batch)
                count += len(batch)
        schedule.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, recipe.epochs, total / max(count, 1))
    epsilon = engine.get_epsilon(delta)
    dp_model.remove_hooks()
    model.eval()
    return {"epsilon": float(epsilon), "delta": float(delta), "noise_multiplier": float(dp_optimiser.noise_multiplier)}


@dataclass(frozen=True, kw_only=True)
class DPSettings:
    """Exactly one of a noise multiplier and a target epsilon over the recipe's epochs, and the DP
    recipe: ``lr``, ``batch_size`` (the expected Poisson batch) and ``epochs`` replace the training
    recipe's where set (``null``: the recipe's own), since DP-SGD trains best with its own (larger
    batches, fewer epochs, a larger step; Aerni et al., CCS 2024, on untuned DP baselines)."""

    noise_multiplier: Optional[float] = setting(1.3, min=0, min_exclusive=True)
    target_epsilon: Optional[float] = setting(None, min=0, min_exclusive=True, example=8.0)
    delta: float = setting(1e-5, min=0, max=1, min_exclusive=True)
    max_grad_norm: float = setting(1.5, min=0, min_exclusive=True)
    lr: Optional[float] = setting(None, min=0, min_exclusive=True, example=0.1)
    batch_size: Optional[int] = setting(None, min=1, example=256)
    epochs: Optional[int] = setting(None, min=1, example=40)

    def __post_init__(self) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise SettingsError(
                f"defense.noise_multiplier={self.noise_multiplier} and defense.target_epsilon={self.target_epsilon}: "
                "give exactly one, e.g. defense.noise_multiplier=2.0 defense.target_epsilon=null"
            )


@DEFENSES.register("dp_sgd")
class DPSGD(Defense):
    """DP-SGD: ``defense.noise_multiplier`` (or ``defense.target_epsilon``), ``delta``, ``max_grad_norm``."""

    kind = TRAINING
    Settings = DPSettings

    def training_recipe(self, recipe: Recipe) -> Recipe:
        s = self.settings
        changes = {k: v for k, v in (("lr", s.lr), ("batch_size", s.batch_size), ("epochs", s.epochs)) if v is not None}
        return replace(recipe, **changes)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        model, self.architecture_changed = dp_compatible(model)
        return model

    def fit(self, model: nn.Module, data: TrainingSet) -> dict:
        s = self.settings
        metrics = train_classifier_dp(
            model,
            data.images,
            data.labels,
            self.training_recipe(data.recipe),
            data.seed,
            max_grad_norm=s.max_grad_norm,
            delta=s.delta,
            noise_multiplier=s.noise_multiplier,
            target_epsilon=s.target_epsilon,
            on_epoch=data.on_epoch,
        )
        return {**metrics, "architecture_changed": float(getattr(self, "architecture_changed", False))}
