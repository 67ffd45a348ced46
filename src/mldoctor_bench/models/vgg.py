"""VGG-19 with BatchNorm (ML-Doctor, Liu et al. 2022), written for small images.

The 16 conv layers of configuration "E" (64, 64 | 128, 128 | 256 x 4 | 512 x 4 | 512 x 4, each
3x3 conv, BatchNorm, ReLU) with a 2x2 max-pool after each group. A pool is left out when it would
bring the feature map below 2x2 (28- and 32-pixel inputs), so no BatchNorm ever normalises a 1x1
map. torchvision's head (a 7x7 pool and two 4096-unit FC layers, 120M parameters) becomes a global
average pool and one 512-unit FC layer with dropout, as in the usual CIFAR versions.
"""

from __future__ import annotations

from torch import nn

from mldoctor_bench.models.base import ARCHS, Classifier

GROUPS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)
MIN_SIDE = 2


@ARCHS.register("vgg19")
def vgg19(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """VGG-19-BN; the embedding is the 512 activations of the FC layer before the head."""
    layers: list[nn.Module] = []
    channels, side = in_channels, image_size
    for group in GROUPS:
        for width in group:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        if side // 2 >= MIN_SIDE:
            layers.append(nn.MaxPool2d(2))
            side //= 2
    features = nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(channels, 512),
        nn.ReLU(inplace=True),
    )
    return Classifier(features, nn.Linear(512, num_classes))
