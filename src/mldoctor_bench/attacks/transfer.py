"""Fidelity beyond agreement: adversarial examples crafted on a stolen model that also fool the target
(Jagielski et al., "High accuracy and high fidelity extraction of neural networks", USENIX Security
2020; Papernot et al.'s transfer attacks, AsiaCCS 2017).

Untargeted PGD (Madry et al., ICLR 2018) with an L-infinity bound of ``epsilon`` grey levels (of 255)
runs on the surrogate, with its gradient, from test images the target classifies correctly; the
adversarial images are rounded back to ``uint8`` (inside the bound, which has whole-number ends) and
sent to the target. The transfer rate is the share the target then misclassifies. The same attack
crafted on a model trained without any query says what transfers without stealing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mldoctor_bench.inference import iterate_batches, predict_logits


def as_inputs(pixels: torch.Tensor) -> torch.Tensor:
    """Float grey levels in ``[0, 255]`` as a model takes them (:func:`~mldoctor_bench.inference.model_inputs`,
    differentiably)."""
    return (pixels / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


def pgd(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: int, steps: int, batch_size: int = 256
) -> torch.Tensor:
    """``uint8`` adversarial images within ``epsilon`` grey levels of ``images``, raising ``model``'s
    cross-entropy on ``labels`` by ``steps`` signed-gradient steps of ``epsilon / 4`` each."""
    model.eval()
    device = next(model.parameters()).device
    step, out = epsilon / 4, []
    for rows in iterate_batches(len(images), batch_size, None):
        start = images[rows].to(device).float()
        low, high = (start - epsilon).clamp(min=0), (start + epsilon).clamp(max=255)
        x = start.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            loss = F.cross_entropy(model(as_inputs(x)).float(), labels[rows].to(device))
            (grad,) = torch.autograd.grad(loss, x)
            x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), low), high)
        out.append(x.round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out) if out else images[:0].clone()


def transfer(
    model: nn.Module, target_labels, images: torch.Tensor, labels: torch.Tensor, epsilon: int, steps: int
) -> tuple[float, float]:
    """The share of ``images`` whose PGD example crafted on ``model`` the target (``target_labels``:
    ``uint8`` images -> predicted classes) misclassifies, and the share that fool ``model`` itself.
    ``images`` are examples the target classifies correctly (``labels``)."""
    adversarial = pgd(model, images, labels, epsilon, steps)
    own = predict_logits(model, adversarial).argmax(1).cpu()
    return float((target_labels(adversarial) != labels).double().mean()), float((own != labels).double().mean())
