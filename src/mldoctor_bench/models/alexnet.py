"""AlexNet (ML-Doctor, Liu et al. 2022) for small images, written here rather than wrapped.

torchvision's AlexNet is sized for 224x224 (an 11x11 stride-4 first conv and three 3x3 stride-2
pools would shrink a 28x28 image to nothing) and carries 58M parameters, mostly in its 4096-wide
FC layers. This keeps AlexNet's shape: five conv layers of 64, 192, 384, 256, 256 channels (5x5
then 3x3 kernels) with overlapping 3x3 stride-2 max-pools after the first, second and fifth, ReLU,
no normalisation, then two dropout-ReLU FC layers. Changes for 28..96-pixel inputs: a 5x5 stride-2
first conv, padded pools, an adaptive average pool to 2x2, and FC layers of 1024 units.
"""

from __future__ import annotations

from torch import nn

from mldoctor_bench.models.base import ARCHS, Classifier

FC_WIDTH = 1024


@ARCHS.register("alexnet")
def alexnet(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """AlexNet-style classifier; the embedding is the second FC layer's 1024 activations."""

    def pool() -> nn.Module:
        return nn.MaxPool2d(3, stride=2, padding=1)

    features = nn.Sequential(
        nn.Conv2d(in_channels, 64, 5, stride=2, padding=2),
        nn.ReLU(inplace=True),
        pool(),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        pool(),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        pool(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(256 * 2 * 2, FC_WIDTH),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(FC_WIDTH, FC_WIDTH),
        nn.ReLU(inplace=True),
    )
    return Classifier(features, nn.Linear(FC_WIDTH, num_classes))
