"""SENet-18 for 32x32 CIFAR-10 inputs.

Architecture identical to ``SENet18()`` in kuangliu/pytorch-cifar
(``models/senet.py``: ``SENet(PreActBlock, [2, 2, 2, 2])``), with the same
module names and state-dict keys, so checkpoints trained with that repository
load with ``load_state_dict(strict=True)``.  SENet-18 is one of the four
architectures studied in Liang & Huang, "Large Norms of CNN Layers Do Not Hurt
Adversarial Robustness", AAAI 2021.

Reference: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018.  The
blocks are pre-activation ResNet blocks (He et al., arXiv:1603.05027) whose
residual branch is rescaled channel-wise by a squeeze-and-excitation gate made
of two 1x1 convolutions (``fc1``, ``fc2``, reduction 16, with bias).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PreActBlock", "SENet", "senet18"]


class PreActBlock(nn.Module):
    """Pre-activation basic block with a squeeze-and-excitation gate on the residual branch.

    The projection shortcut (1x1 conv, no BN) exists only when the shape changes; it
    is applied to ``relu(bn1(x))``, otherwise the shortcut is the identity on ``x``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
            )
        # SE gate: 1x1 convolutions act as fully connected layers on the pooled vector.
        self.fc1 = nn.Conv2d(planes, planes // 16, kernel_size=1)
        self.fc2 = nn.Conv2d(planes // 16, planes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        # Squeeze (global average pool) and excitation (channel-wise sigmoid gate).
        w = F.avg_pool2d(out, out.size(2))
        w = F.relu(self.fc1(w))
        w = torch.sigmoid(self.fc2(w))
        return out * w + shortcut


class SENet(nn.Module):
    """CIFAR SENet: 3x3 conv/BN/ReLU stem, four stages (64/128/256/512), 4x4 avg pool, ``linear``."""

    def __init__(self, block: type[PreActBlock], num_blocks: Sequence[int], num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, block: type[PreActBlock], planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes
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


def senet18(num_classes: int = 10) -> SENet:
    """SENet-18 (kuangliu ``SENet18()``)."""
    return SENet(PreActBlock, [2, 2, 2, 2], num_classes=num_classes)
