"""A small, fast CNN for 3x32x32 inputs, for CPU smoke runs and tests.

Not part of Liang & Huang (AAAI 2021); it stands in for the paper's CIFAR-10
architectures where those would be too slow (unit tests, CPU demos).  It keeps
the layer types the norm code must handle: padded and unpadded convolutions, a
strided convolution, BatchNorm2d, max pooling and linear layers.

Shapes for a 3x32x32 input::

    conv1 3->16,  3x3, stride 1, pad 1   -> 16x32x32   (+BN, ReLU)
    conv2 16->32, 3x3, stride 2, pad 1   -> 32x16x16   (+BN, ReLU)
    max pool 2x2                         -> 32x8x8
    conv3 32->64, 3x3, stride 1, pad 1   -> 64x8x8     (+BN, ReLU)
    conv4 64->64, 3x3, stride 1, pad 0   -> 64x6x6     (+BN, ReLU)
    max pool 2x2, flatten                -> 576
    fc1 576->64 (+ReLU), fc2 64->num_classes

98,266 parameters for 10 classes.  The head flattens instead of global-average
pooling: with global pooling, eval-mode accuracy (BatchNorm running statistics)
swung widely from epoch to epoch in short training runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SmallCNN", "smallcnn"]


class SmallCNN(nn.Module):
    """Four conv/BN/ReLU layers (one strided, one unpadded), two max pools and two linear layers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv3 = nn.Conv2d(32, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.conv4 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=0, bias=False)
        self.bn4 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 3 * 3, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.pool(out)
        out = F.relu(self.bn3(self.conv3(out)))
        out = F.relu(self.bn4(self.conv4(out)))
        out = self.pool(out).flatten(1)
        out = F.relu(self.fc1(out))
        return self.fc2(out)


def smallcnn(num_classes: int = 10) -> SmallCNN:
    """The default :class:`SmallCNN`."""
    return SmallCNN(num_classes=num_classes)
