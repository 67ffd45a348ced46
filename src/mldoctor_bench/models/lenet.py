"""LeNet-5 (LeCun et al. 1998) with BatchNorm: a small, different network that trains in seconds on
a CPU. The quick profile's inversion evaluator uses it, so that the evaluator's architecture differs
from the target's (an evaluator of the target's architecture tends to accept the reconstructions the
target accepts). Two conv5x5-BN-ReLU-maxpool blocks (6/16), an adaptive 5x5 pool, FC 120, FC 84;
each block pools before its ReLU, which computes the same (see simple_cnn.py) with less work."""

from __future__ import annotations

from torch import nn

from mldoctor_bench.models.base import ARCHS, Classifier


@ARCHS.register("lenet")
def lenet(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """LeNet-5 for any image of at least 8x8 (the pool before the FC layers fixes its input size)."""
    if image_size < 8:
        raise ValueError(f"lenet needs images of at least 8x8, got {image_size}x{image_size}")
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.BatchNorm2d(6),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(6, 16, 5, padding=2),
        nn.BatchNorm2d(16),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(5),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(inplace=True),
        nn.Linear(120, 84),
        nn.ReLU(inplace=True),
    )
    return Classifier(features, nn.Linear(84, num_classes))
