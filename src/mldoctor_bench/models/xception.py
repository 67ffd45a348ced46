"""Xception (Chollet, CVPR 2017) sized for 28..96-pixel inputs (in neither of ML-Doctor's code bases).

The design of the paper: a stem of two 3x3 convs, an entry flow of three residual blocks that
halve the map, a middle flow of residual blocks of three depthwise-separable convs, an exit flow
of one more halving block and two separable convs, then global average pooling. Every separable
conv is followed by BatchNorm; ReLUs precede them inside blocks; 1x1 strided convs carry the
residuals. Choices for small images and CPUs:

- widths scaled by about 0.7 (the middle flow's 728 channels become 512; exit 1024/1536/2048
  become 768/1024/1536), 7.4M parameters instead of 21M;
- a middle flow of 4 blocks instead of 8 (``MIDDLE_BLOCKS``), to train in minutes on a CPU;
- padded stem convs, and a stride-2 first conv only for inputs above 32 pixels, so the exit flow
  works on 2x2 (28-32 px), 2x2 (64 px) or 3x3 (96 px) maps: no BatchNorm sees a 1x1 map.
The embedding is the 1536-d pooled output of the exit flow.
"""

from __future__ import annotations

import torch
from torch import nn

from mldoctor_bench.models.base import ARCHS, Classifier

STEM = (32, 64)
ENTRY = (128, 256, 512)
MIDDLE_BLOCKS = 4
EXIT = (768, 1024, 1536)
STRIDE_ABOVE = 32  # inputs larger than this get a stride-2 first conv


def separable(cin: int, cout: int) -> nn.Sequential:
    """A depthwise 3x3 conv followed by a pointwise 1x1 conv, no bias (BatchNorm follows)."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False))


class Block(nn.Module):
    """``reps`` x (ReLU, separable conv, BN) plus a residual; ``stride=2`` ends in a 3x3 max-pool.

    ``grow_first`` widens to ``cout`` at the first conv (entry, middle) or at the last (exit);
    ``relu_first=False`` drops the leading ReLU (the first entry block follows the stem's ReLU).
    """

    def __init__(
        self, cin: int, cout: int, reps: int, stride: int, relu_first: bool = True, grow_first: bool = True
    ) -> None:
        super().__init__()
        widths = [cout] * reps if grow_first else [cin] * (reps - 1) + [cout]
        layers: list[nn.Module] = []
        channels = cin
        for i, width in enumerate(widths):
            if i > 0 or relu_first:
                layers.append(nn.ReLU(inplace=i > 0))  # the input also feeds the residual: not in place
            layers += [separable(channels, width), nn.BatchNorm2d(width)]
            channels = width
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, padding=1))
        self.body = nn.Sequential(*layers)
        self.skip: nn.Module = nn.Identity()
        if cin != cout or stride != 1:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    """A padded 3x3 conv, BatchNorm and ReLU (the stem's layers)."""
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@ARCHS.register("xception")
def xception(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """Xception with entry, middle (``MIDDLE_BLOCKS`` blocks) and exit flows."""
    stride = 2 if image_size > STRIDE_ABOVE else 1
    stem = conv_bn_relu(in_channels, STEM[0], stride) + conv_bn_relu(STEM[0], STEM[1])
    entry, channels = [], STEM[1]
    for i, width in enumerate(ENTRY):
        entry.append(Block(channels, width, reps=2, stride=2, relu_first=i > 0))
        channels = width
    middle = [Block(channels, channels, reps=3, stride=1) for _ in range(MIDDLE_BLOCKS)]
    exit_flow = [
        Block(channels, EXIT[0], reps=2, stride=2, grow_first=False),
        separable(EXIT[0], EXIT[1]),
        nn.BatchNorm2d(EXIT[1]),
        nn.ReLU(inplace=True),
        separable(EXIT[1], EXIT[2]),
        nn.BatchNorm2d(EXIT[2]),
        nn.ReLU(inplace=True),
    ]
    features = nn.Sequential(*stem, *entry, *middle, *exit_flow, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(features, nn.Linear(EXIT[2], num_classes))
