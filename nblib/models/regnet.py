"""RegNetX-200MF for 32x32 CIFAR-10 inputs.

Architecture identical to ``RegNetX_200MF()`` in kuangliu/pytorch-cifar
(``models/regnet.py``), with the same module names and state-dict keys, so
checkpoints trained with that repository load with
``load_state_dict(strict=True)``.  RegNetX-200MF is one of the four
architectures studied in Liang & Huang, "Large Norms of CNN Layers Do Not Hurt
Adversarial Robustness", AAAI 2021.

Reference: Radosavovic, Kosaraju, Girshick, He, Dollar, "Designing Network
Design Spaces", CVPR 2020.  The CIFAR variant uses a 3x3 stride-1 stem with 64
channels.  Each block is a residual bottleneck: 1x1 conv, 3x3 *grouped* conv
(``groups = bottleneck_width // group_width``, strided in the first block of a
stage), optional squeeze-and-excitation (RegNetY only), 1x1 conv, each followed
by BatchNorm2d.
"""

from __future__ import annotations

import copy
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SE", "Block", "RegNet", "RegNetConfig", "REGNETX_200MF", "regnetx_200mf"]


class RegNetConfig(TypedDict):
    """Per-stage depths, widths and strides plus block hyper-parameters."""

    depths: list[int]
    widths: list[int]
    strides: list[int]
    group_width: int
    bottleneck_ratio: float
    se_ratio: float


REGNETX_200MF: RegNetConfig = {
    "depths": [1, 1, 4, 7],
    "widths": [24, 56, 152, 368],
    "strides": [1, 1, 2, 2],
    "group_width": 8,
    "bottleneck_ratio": 1,
    "se_ratio": 0,
}


class SE(nn.Module):
    """Squeeze-and-excitation gate made of two biased 1x1 convolutions (``se1``, ``se2``)."""

    def __init__(self, in_planes: int, se_planes: int) -> None:
        super().__init__()
        self.se1 = nn.Conv2d(in_planes, se_planes, kernel_size=1, bias=True)
        self.se2 = nn.Conv2d(se_planes, in_planes, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.adaptive_avg_pool2d(x, (1, 1))
        w = F.relu(self.se1(w))
        w = self.se2(w).sigmoid()
        return x * w


class Block(nn.Module):
    """RegNet bottleneck block: 1x1 conv, grouped 3x3 conv, [SE], 1x1 conv, plus shortcut."""

    def __init__(
        self,
        w_in: int,
        w_out: int,
        stride: int,
        group_width: int,
        bottleneck_ratio: float,
        se_ratio: float,
    ) -> None:
        super().__init__()
        w_b = int(round(w_out * bottleneck_ratio))
        self.conv1 = nn.Conv2d(w_in, w_b, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w_b)
        num_groups = w_b // group_width
        self.conv2 = nn.Conv2d(
            w_b, w_b, kernel_size=3, stride=stride, padding=1, groups=num_groups, bias=False
        )
        self.bn2 = nn.BatchNorm2d(w_b)
        self.with_se = se_ratio > 0
        if self.with_se:
            self.se = SE(w_b, int(round(w_in * se_ratio)))
        self.conv3 = nn.Conv2d(w_b, w_out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or w_in != w_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(w_in, w_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(w_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.with_se:
            out = self.se(out)
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class RegNet(nn.Module):
    """CIFAR RegNet: 3x3 64-channel stem, four stages from ``cfg``, global avg pool, ``linear``."""

    def __init__(self, cfg: RegNetConfig, num_classes: int = 10) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(0)
        self.layer2 = self._make_layer(1)
        self.layer3 = self._make_layer(2)
        self.layer4 = self._make_layer(3)
        self.linear = nn.Linear(cfg["widths"][-1], num_classes)

    def _make_layer(self, idx: int) -> nn.Sequential:
        cfg = self.cfg
        width = cfg["widths"][idx]
        layers = []
        for i in range(cfg["depths"][idx]):
            stride = cfg["strides"][idx] if i == 0 else 1
            layers.append(
                Block(self.in_planes, width, stride, cfg["group_width"],
                      cfg["bottleneck_ratio"], cfg["se_ratio"])
            )
            self.in_planes = width
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = out.flatten(1)
        return self.linear(out)


def regnetx_200mf(num_classes: int = 10) -> RegNet:
    """RegNetX-200MF (kuangliu ``RegNetX_200MF()``)."""
    return RegNet(copy.deepcopy(REGNETX_200MF), num_classes=num_classes)
