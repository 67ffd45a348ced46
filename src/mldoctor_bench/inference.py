"""Running a trained classifier on ``uint8`` images: batched logits and accuracy.

This sits just above the models and the data representation, below training and the access
objects of :mod:`mldoctor_bench.threat_models`, so both can query a model without importing
each other.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch import nn

from mldoctor_bench.data.base import normalise


def iterate_batches(n: int, batch_size: int, generator: Optional[torch.Generator]) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``: shuffled when a generator is given, in order otherwise."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def model_inputs(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images ``(N, C, H, W)`` as a model takes them: normalised on their device, in
    channels-last layout (the layout every model is trained and queried in; faster convolutions
    on CPU and GPU alike)."""
    return normalise(images).contiguous(memory_format=torch.channels_last)


CHANNELS_LAST, CONTIGUOUS = "channels_last", "contiguous"


def layout_of(model: nn.Module) -> str:
    """The memory layout of ``model``'s convolution weights: :data:`CHANNELS_LAST`, as training
    leaves a classifier's, or :data:`CONTIGUOUS`."""
    four_d = [p for p in model.parameters() if p.dim() == 4]
    if any(not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last) for p in four_d):
        return CHANNELS_LAST
    return CONTIGUOUS


def in_layout(model: nn.Module, layout: str = CHANNELS_LAST) -> nn.Module:
    """``model`` with its convolution weights in ``layout``, in place. A stored model is reloaded in
    the layout it was trained in (:func:`layout_of`): it then answers as it did right after
    training, bit for bit, and a classifier's convolutions stay on the fast path (on a 2-core CPU,
    the default run's attacks took twice as long on contiguous weights; docs/performance.md)."""
    return model.to(memory_format=torch.channels_last if layout == CHANNELS_LAST else torch.contiguous_format)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``uint8`` images, batched, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    outs = [
        model(model_inputs(images[b].to(device, non_blocking=True))).float()
        for b in iterate_batches(len(images), batch_size, None)
    ]
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``images``."""
    preds = predict_logits(model, images).argmax(1)
    return float((preds.cpu() == labels.cpu()).float().mean())
