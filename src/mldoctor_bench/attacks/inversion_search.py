"""The two searches of model inversion (ML-Doctor's ModInv), for images a classifier assigns to a
class: MIFace (Fredrikson et al., CCS'15), gradient descent on the input from a start image, and GMI
(Zhang et al., CVPR'20), a latent search in a GAN learnt on the attacker's images. Both work on a
batch of every reconstruction at once; :mod:`.inversion` scores what they find."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mldoctor_bench.attacks.dcgan import DCGAN


@dataclass
class Inversion:
    """Reconstructions in the classifiers' input space ``[-1, 1]`` and the images they started from."""

    images: torch.Tensor
    starts: torch.Tensor
    extra: dict[str, torch.Tensor]  # saved beside the images (steps taken, latents, losses)


def class_cost(logits: torch.Tensor, classes: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-row MIFace cost of the softmax: ``1 - p_c`` (``one_minus_p``) or ``-log p_c`` (``nll``)."""
    log_p = F.log_softmax(logits, dim=1).gather(1, classes.view(-1, 1)).squeeze(1)
    if loss == "nll":
        return -log_p
    if loss == "one_minus_p":
        return 1.0 - log_p.exp()
    raise ValueError(f"unknown MIFace loss {loss!r}; choose nll or one_minus_p")


def miface(
    model: torch.nn.Module,
    starts: torch.Tensor,
    classes: torch.Tensor,
    steps: int,
    lr: float,
    window: int,
    threshold: float,
    loss: str = "nll",
    advance=lambda n=1: None,
) -> Inversion:
    """Invert every row at once from its start image (the rows' costs are independent, so one batch
    serves all); row ``i`` is meant to show class ``classes[i]``."""
    device = next(model.parameters()).device
    classes, x = classes.to(device), starts.to(device).clone()
    n, shape = len(classes), tuple(starts.shape[1:])
    best_x, best_cost = x.clone(), torch.full((n,), math.inf, device=device)
    last_gain = torch.zeros(n, dtype=torch.long, device=device)
    taken = torch.zeros(n, dtype=torch.long, device=device)
    active = torch.ones(n, dtype=torch.bool, device=device)
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
    return Inversion(best_x.detach(), starts.cpu(), {"steps": taken.cpu(), "cost": best_cost.detach().cpu()})


def miface_starts(
    num_classes: int, per_class: int, shape: tuple[int, ...], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start images and their classes: for each class the zero of the normalised input space (mid
    grey, Fredrikson et al.'s start), then ``per_class - 1`` starts with uniform noise in
    ``[-0.5, 0.5]`` added, so that reconstructions of one class are not copies of each other."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.rand(num_classes, per_class, *shape, generator=generator) - 0.5
    starts[:, 0] = 0.0
    return starts.flatten(0, 1), torch.arange(num_classes).repeat_interleave(per_class)


def gmi(
    gan: DCGAN,
    model: torch.nn.Module,
    classes: torch.Tensor,
    steps: int,
    lr: float,
    momentum: float,
    restarts: int,
    weight: float,
    seed: int,
    advance=lambda n=1: None,
) -> Inversion:
    """Latent search of GMI for every requested reconstruction and restart in one batch; for each
    reconstruction (row ``i`` meant to show ``classes[i]``) the best of its restarts."""
    device = next(model.parameters()).device
    g, d = gan.generator.eval(), gan.discriminator.eval()
    n = len(classes)
    wanted = classes.to(device).repeat_interleave(restarts)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(len(wanted), g.latent_dim, generator=generator).clamp(-1, 1).to(device).requires_grad_(True)
    with torch.no_grad():
        start_images = g(z.detach())
    optimiser = torch.optim.SGD([z], lr=lr, momentum=momentum)
    model.eval()

    def losses(latent: torch.Tensor) -> torch.Tensor:
        images = g(latent)
        return -d(images) + weight * F.cross_entropy(model(images), wanted, reduction="none")

    for _ in range(steps):
        (z.grad,) = torch.autograd.grad(losses(z).sum(), z)  # leaves the models' own gradients alone
        optimiser.step()
        with torch.no_grad():
            z.clamp_(-1.0, 1.0)
        advance(1)
    with torch.no_grad():
        final = losses(z).view(n, restarts)
        best = final.argmin(1)
        rows = torch.arange(n, device=device)
        chosen = z.detach().view(n, restarts, -1)[rows, best]
        images = g(chosen)
        starts = start_images.view(n, restarts, *start_images.shape[1:])[rows, best]
    return Inversion(
        images, starts.cpu(), {"latent": chosen.cpu(), "loss": final.min(1).values.cpu(), "restart": best.cpu()}
    )
