"""ResNet-18 for 32x32 CIFAR-10 inputs.

Architecture identical to ``ResNet18()`` in kuangliu/pytorch-cifar
(``models/resnet.py``, post-activation ``BasicBlock`` version), with the same
module names and state-dict keys, so checkpoints trained with that repository
load with ``load_state_dict(strict=True)``.  ResNet-18 is one of the four
architectures studied in Liang & Huang, "Large Norms of CNN Layers Do Not Hurt
Adversarial Robustness", AAAI 2021.

Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image
Recognition", arXiv:1512.03385.  The CIFAR variant uses a 3x3 stride-1 stem
without max pooling and a 4x4 average pool before the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "ResNet", "resnet18"]


class BasicBlock(nn.Module):
    """Two 3x3 conv/BN layers with an identity or 1x1 conv/BN projection shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, four stages of blocks (64/128/256/512), 4x4 avg pool, ``linear``."""

    def __init__(self, block: type[BasicBlock], num_blocks: Sequence[int], num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock], planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = F.avg_pool2d(out, 4)
        out = out.flatten(1)
        return self.linear(out)


def resnet18(num_classes: int = 10) -> ResNet:
    """ResNet-18 (kuangliu ``ResNet18()``)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
