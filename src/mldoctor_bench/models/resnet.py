"""ResNet-18 (ML-Doctor, Liu et al. 2022): torchvision's ``resnet18`` (untrained) with a stem for small images.

torchvision's stem (7x7 stride-2 conv, then a stride-2 max-pool) divides the side by 4 before the
first residual stage, leaving 28x28 inputs at 1x1 in the last stage. Here the stem is a 3x3
stride-1 conv (the usual CIFAR adaptation) followed by the max-pool only for inputs larger than
32 pixels, so the residual stages run at 28-48 pixels and the last one at 4-6: every BatchNorm sees
more than one value per channel even for a batch of one. The embedding is the 512-d average pool.
"""

from __future__ import annotations

from torch import nn

from mldoctor_bench.models.base import ARCHS, Classifier

POOL_ABOVE = 32  # inputs larger than this keep the stem's max-pool


@ARCHS.register("resnet18")
def resnet18(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """ResNet-18 with a 3x3 stem following the channel count, trained from scratch."""
    from torchvision.models import resnet18 as tv_resnet18  # here: torchvision.models takes a second to import

    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
    pool = net.maxpool if image_size > POOL_ABOVE else nn.Identity()
    features = nn.Sequential(
        net.conv1,
        net.bn1,
        net.relu,
        pool,
        net.layer1,
        net.layer2,
        net.layer3,
        net.layer4,
        net.avgpool,
        nn.Flatten(),
    )
    return Classifier(features, net.fc)
