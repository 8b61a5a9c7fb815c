"""VGG for 32x32 CIFAR-10 inputs.

Architecture identical to ``VGG`` in kuangliu/pytorch-cifar (``models/vgg.py``),
with the same module names and state-dict keys, so checkpoints trained with that
repository load with ``load_state_dict(strict=True)``.  VGG-11 is one of the four
architectures studied in Liang & Huang, "Large Norms of CNN Layers Do Not Hurt
Adversarial Robustness", AAAI 2021.

Each number in a configuration is a 3x3 convolution (padding 1, with bias)
followed by BatchNorm2d and ReLU; ``"M"`` is a 2x2 max pool.  Five max pools
reduce 32x32 to 1x1, so the classifier is a single ``Linear(512, num_classes)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG", "VGG_CONFIGS", "vgg11"]

VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "VGG11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "VGG13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "VGG16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"),
    "VGG19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG with BatchNorm: ``features`` (conv/BN/ReLU and max pools) then ``classifier``."""

    def __init__(self, vgg_name: str = "VGG11", num_classes: int = 10) -> None:
        super().__init__()
        if vgg_name not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG config {vgg_name!r}; known: {sorted(VGG_CONFIGS)}")
        self.features = self._make_layers(VGG_CONFIGS[vgg_name])
        self.classifier = nn.Linear(512, num_classes)

    @staticmethod
    def _make_layers(cfg: tuple[int | str, ...]) -> nn.Sequential:
        layers: list[nn.Module] = []
        in_channels = 3
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [
                    nn.Conv2d(in_channels, item, kernel_size=3, padding=1),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                in_channels = item
        # A no-op pool kept only so module indices match the reference implementation.
        layers.append(nn.AvgPool2d(kernel_size=1, stride=1))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        out = out.flatten(1)
        return self.classifier(out)


def vgg11(num_classes: int = 10) -> VGG:
    """VGG-11 with BatchNorm (kuangliu ``VGG('VGG11')``)."""
    return VGG("VGG11", num_classes=num_classes)
