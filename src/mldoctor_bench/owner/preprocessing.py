"""Does the owner's model see the images as it was trained to? A model fed images normalised or sized
otherwise than in its training is right on few of its own training examples, and every attack then
measures a model that does not exist. Before any attacker model trains, the model's accuracy on its
listed members is compared with a floor and with its accuracy on the non-members; where it falls
short (below 80%, or more than 5 points below the non-members'), the run warns in one line naming
the settings to check, and says what accuracy the members reach with the images' own per-channel
statistics as the normalisation, where that is much better.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from mldoctor_bench.data import ImageData
from mldoctor_bench.inference import accuracy
from mldoctor_bench.owner.settings import Owner

MEMBER_ACCURACY_FLOOR = 0.8  # a trained model is right on at least this share of its own training examples
BETTER_BY = 0.1  # an alternative normalisation is named when it beats the given one by this much
CLEARLY_BELOW = 0.05  # below the non-members' by more than this: more than the noise of a few hundred examples


def own_statistics(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``uint8`` images on the [0, 1] pixel scale."""
    pixels = images.float().div(255).transpose(0, 1).flatten(1)
    return [round(v, 4) for v in pixels.mean(1).tolist()], [round(max(v, 1e-3), 4) for v in pixels.std(1).tolist()]


def preprocessing_warning(
    owner: Owner, data: ImageData, members: torch.Tensor, member_acc: float, other_acc: float, device: torch.device
) -> Optional[str]:
    """The one-line warning when ``member_acc`` (the model on its listed ``members``) is below
    :data:`MEMBER_ACCURACY_FLOOR`, or clearly below ``other_acc`` (on non-members); ``None`` otherwise."""
    if member_acc >= MEMBER_ACCURACY_FLOOR and member_acc >= other_acc - CLEARLY_BELOW:
        return None
    mean, std = own_statistics(data.images[members])
    message = (
        f"the model is right on {member_acc:.1%} of its own training examples (non-members {other_acc:.1%}); "
        f"a trained model is right on at least {MEMBER_ACCURACY_FLOOR:.0%} of them, so its inputs may be "
        "prepared otherwise than in its training: check model.normalize, model.image_size and model.in_channels"
    )
    better = accuracy_with(owner, data, members, mean, std, device)
    if better is not None and better >= member_acc + BETTER_BY:
        message += (
            f" (with the images' own statistics, model.normalize.mean={mean} model.normalize.std={std}, it is "
            f"right on {better:.1%})"
        )
    return message


def accuracy_with(
    owner: Owner, data: ImageData, rows: torch.Tensor, mean: list[float], std: list[float], device: torch.device
) -> Optional[float]:
    """The owner's model's accuracy on ``rows`` with another normalisation (``None`` where it fails)."""
    other = replace(owner, model=replace(owner.model, normalize=replace(owner.model.normalize, mean=mean, std=std)))
    try:
        model = other.trained(data.channels, owner.model.num_classes or data.num_classes, data.image_size)
        return accuracy(model.to(device).eval(), data.images[rows].to(device), data.labels[rows])
    except Exception:  # a diagnostic only: the run goes on with the owner's settings
        return None
