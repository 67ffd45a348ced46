"""An owner's own architecture, outside the benchmark: a small CNN as a plain ``nn.Module``.

Nothing here knows about mldoctor-bench; ``mldoctor-assess model.factory=tiny_net:make_net`` imports
this module (it must be importable: run from this folder or put it on PYTHONPATH).
"""

from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, image_size: int = 28) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (image_size // 4) ** 2, 64),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.classifier(self.body(x))


def make_net(width: int = 16, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> TinyNet:
    return TinyNet(in_channels, num_classes, width, image_size)
