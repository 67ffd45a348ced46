"""Model inversion (ML-Doctor's ModInv), spec section 5: one image per class from the target's weights.

- (W,N) MIFace (Fredrikson et al., CCS'15): gradient descent on the input, from the zero image of
  the classifier's normalised input space (mid grey, 127.5 of 255), on the cost ``1 - p_c`` or
  ``-log p_c`` of the target's *softmax* (the original descended raw logits). It stops after
  ``steps``, when the cost drops below ``threshold``, or when the best cost has not improved for
  ``window`` steps, and keeps the best-cost iterate. Pixels stay in the valid range.
- (W,S) GMI / Secret Revealer (Zhang et al., CVPR'20): a DCGAN learnt on the attacker's shadow
  images is the image prior; for each class, latents (several restarts, kept in ``[-1, 1]``)
  minimise ``-D(G(z)) + lambda * CE(target(G(z)), c)`` by SGD with momentum; the best restart by
  that loss is the reconstruction.

Both are scored the same way, on data the attacker never sees: ``eval_accuracy``, the fraction of
reconstructions that an evaluation classifier (a separate model trained on held-out rows, not the
target: the original compared against the target's own prediction) assigns to the intended class;
``mse``, the mean over classes of the pixel MSE in ``[0, 1]`` to the class's mean target-training
image; and ``target_confidence``, the target's mean probability of the intended class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mldoctor_bench.attacks.base import ATTACKS, Attack, AttackContext, VariantMetrics
from mldoctor_bench.attacks.dcgan import DCGAN, GanRecipe, train_gan
from mldoctor_bench.knowledge import Labeled
from mldoctor_bench.training import accuracy

MIN_TILE = 56  # grid tiles are upscaled (nearest) to at least this many pixels a side


@dataclass
class Inversion:
    """Reconstructions in the classifiers' input space ``[-1, 1]``, one per class (row ``c`` is class ``c``)."""

    images: torch.Tensor
    extra: dict[str, torch.Tensor]  # saved beside the images (steps taken, latents, losses)


def class_cost(logits: torch.Tensor, classes: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-row MIFace cost of the softmax: ``1 - p_c`` (``one_minus_p``) or ``-log p_c`` (``nll``)."""
    log_p = F.log_softmax(logits, dim=1).gather(1, classes.view(-1, 1)).squeeze(1)
    if loss == "nll":
        return -log_p
    if loss == "one_minus_p":
        return 1.0 - log_p.exp()
    raise ValueError(f"unknown MIFace loss {loss!r}; choose nll or one_minus_p")


def miface(model: torch.nn.Module, shape: tuple[int, ...], num_classes: int, steps: int, lr: float,
           window: int, threshold: float, loss: str = "nll", advance=lambda n=1: None) -> Inversion:
    """Invert every class at once (the classes' costs are independent, so one batch serves all)."""
    device = next(model.parameters()).device
    classes = torch.arange(num_classes, device=device)
    x = torch.zeros(num_classes, *shape, device=device)  # normalised zero: mid grey
    best_x, best_cost = x.clone(), torch.full((num_classes,), math.inf, device=device)
    last_gain = torch.zeros(num_classes, dtype=torch.long, device=device)
    taken = torch.zeros(num_classes, dtype=torch.long, device=device)
    active = torch.ones(num_classes, dtype=torch.bool, device=device)
    model.eval()
    for step in range(steps):
        x.requires_grad_(True)
        cost = class_cost(model(x), classes, loss)
        (grad,) = torch.autograd.grad(cost[active].sum(), x)
        with torch.no_grad():
            improved = active & (cost < best_cost)
            best_cost = torch.where(improved, cost, best_cost)
            best_x[improved] = x[improved]
            last_gain[improved] = step
            taken[active] = step + 1
            active &= (cost >= threshold) & (step - last_gain < window)
            x = torch.where(active.view(-1, *[1] * len(shape)), x - lr * grad, x).clamp(-1.0, 1.0)
        advance(1)
        if not active.any():
            break
    return Inversion(best_x.detach(), {"steps": taken.cpu(), "cost": best_cost.detach().cpu()})


def gmi(gan: DCGAN, model: torch.nn.Module, num_classes: int, steps: int, lr: float, momentum: float,
        restarts: int, weight: float, seed: int, advance=lambda n=1: None) -> Inversion:
    """Latent search of GMI for every class and restart in one batch; the best restart per class."""
    device = next(model.parameters()).device
    g, d = gan.generator.eval(), gan.discriminator.eval()
    classes = torch.arange(num_classes, device=device).repeat_interleave(restarts)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(len(classes), g.latent_dim, generator=generator).clamp(-1, 1).to(device).requires_grad_(True)
    optimiser = torch.optim.SGD([z], lr=lr, momentum=momentum)
    model.eval()

    def losses(latent: torch.Tensor) -> torch.Tensor:
        images = g(latent)
        return -d(images) + weight * F.cross_entropy(model(images), classes, reduction="none")

    for _ in range(steps):
        (z.grad,) = torch.autograd.grad(losses(z).sum(), z)  # leaves the models' own gradients alone
        optimiser.step()
        with torch.no_grad():
            z.clamp_(-1.0, 1.0)
        advance(1)
    with torch.no_grad():
        final = losses(z).view(num_classes, restarts)
        best = final.argmin(1)
        chosen = z.detach().view(num_classes, restarts, -1)[torch.arange(num_classes, device=device), best]
        images = g(chosen)
    return Inversion(images, {"latent": chosen.cpu(), "loss": final.min(1).values.cpu(),
                              "restart": best.cpu()})


def class_means(data: Labeled, num_classes: int) -> torch.Tensor:
    """Mean image of each class in ``[0, 1]``; NaN for a class absent from ``data``."""
    images = data.images.float() / 255.0
    return torch.stack([
        images[data.labels == c].mean(0) if (data.labels == c).any() else torch.full(images.shape[1:], math.nan)
        for c in range(num_classes)
    ])


@torch.no_grad()
def score(recon: torch.Tensor, target: torch.nn.Module, evaluator: torch.nn.Module,
          means: torch.Tensor) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Metrics of reconstructions ``recon`` (row ``c`` meant to show class ``c``, in ``[-1, 1]``)."""
    classes = torch.arange(len(recon), device=recon.device)
    logits = target.eval()(recon).double()
    probability = F.softmax(logits, 1)[classes, classes]
    predicted = evaluator.eval()(recon.to(next(evaluator.parameters()).device)).argmax(1).to(recon.device)
    errors = ((recon.cpu() + 1) / 2 - means).pow(2).flatten(1).mean(1)
    metrics = {
        "mse": float(errors.nanmean()),
        "eval_accuracy": float((predicted == classes).float().mean()),
        "target_confidence": float(probability.mean()),
        "target_accuracy": float((logits.argmax(1) == classes).float().mean()),
    }
    return metrics, {"target_probability": probability.float().cpu(), "evaluator_prediction": predicted.cpu(),
                     "mse_per_class": errors.float()}


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """A PNG with one row per method and one column per class (images in ``[-1, 1]``)."""
    from torchvision.utils import save_image

    images = torch.cat(rows).cpu()
    scale = max(1, math.ceil(MIN_TILE / images.shape[-1]))
    images = F.interpolate((images + 1) / 2, scale_factor=scale, mode="nearest")
    save_image(images, str(path), nrow=len(rows[0]), padding=2, pad_value=1.0)


@ATTACKS.register("inversion")
class ModelInversion(Attack):
    """MIFace under (W,N) and GMI under (W,S); variants ``miface`` and ``gmi``."""

    threat_models = ("whitebox_none", "whitebox_shadow")

    def run(self, ctx: AttackContext) -> VariantMetrics:
        target = ctx.target.model
        if ctx.threat_model.knowledge == "none":
            variant, inversion = "miface", self.miface(ctx, target)
        else:
            variant, inversion = "gmi", self.gmi(ctx, target)
        evaluator = self.evaluator(ctx)
        means = class_means(ctx.evaluation.members, ctx.num_classes)
        metrics, per_class = score(inversion.images, target, evaluator, means)
        metrics["evaluator_accuracy"] = accuracy(evaluator, ctx.evaluation.target_test.images,
                                                 ctx.evaluation.target_test.labels)
        if "steps" in inversion.extra:
            metrics["mean_steps"] = float(inversion.extra["steps"].float().mean())
        save_grid([inversion.images], ctx.out_dir / f"inversion_{variant}.png")
        tensors = {"images": ((inversion.images.cpu() + 1) / 2).contiguous(), **per_class, **inversion.extra}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(ctx.out_dir / f"inversion_{variant}.safetensors"))
        return {variant: metrics}

    @staticmethod
    def evaluator(ctx: AttackContext) -> torch.nn.Module:
        """The separate evaluation classifier, trained on held-out rows that neither side used."""
        if ctx.heldout is None or ctx.models is None:
            raise ValueError("model inversion needs the runner's held-out data and model service for its evaluator")
        epochs = ctx.settings.get("evaluator_epochs")
        return ctx.models.classifier("evaluator", ctx.heldout.images, ctx.heldout.labels,
                                     epochs=int(epochs) if epochs else None)

    @staticmethod
    def miface(ctx: AttackContext, target: torch.nn.Module) -> Inversion:
        """MIFace with the run's settings; the attacker holds no data, only the input's shape."""
        s = ctx.settings.miface
        shape = tuple(ctx.evaluation.members.images.shape[1:])  # only the shape, which the weights imply
        return miface(target, shape, ctx.num_classes, int(s.steps), float(s.lr), int(s.window),
                      float(s.threshold), str(s.loss), ctx.progress("MIFace (W,N)", int(s.steps)))

    @staticmethod
    def gmi(ctx: AttackContext, target: torch.nn.Module) -> Inversion:
        """GMI with the run's settings, on the (cached) GAN prior learnt from the shadow images."""
        s = ctx.settings.gmi
        gan = ModelInversion.train_or_load_gan(ctx)
        return gmi(gan.to(ctx.device), target, ctx.num_classes, int(s.steps), float(s.lr), float(s.momentum),
                   int(s.restarts), float(s.weight), ctx.seed, ctx.progress("GMI latent search (W,S)", int(s.steps)))

    @staticmethod
    def train_or_load_gan(ctx: AttackContext) -> DCGAN:
        """The attacker's DCGAN on its shadow images, through the model cache."""
        data = ctx.knowledge.data
        if data is None:
            raise ValueError("GMI needs the attacker's shadow images")
        recipe = GanRecipe(**ctx.settings.gan)
        channels, size = int(data.images.shape[1]), int(data.images.shape[-1])
        payload = {"recipe": vars(recipe), "channels": channels, "size": size, "seed": ctx.seed,
                   "images": len(data), "threat_model": ctx.threat_model.name}
        images = data.images.to(ctx.device)

        def train(gan: DCGAN) -> dict:
            advance = ctx.progress("train GAN (GMI prior)", recipe.epochs)
            return train_gan(gan, images, recipe, ctx.seed, on_epoch=lambda *_: advance(1))

        stored = ctx.models.cached("gan", payload, lambda: DCGAN(recipe.latent_dim, channels, size, recipe.width), train)
        return stored.model
