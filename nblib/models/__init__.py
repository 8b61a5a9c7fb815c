"""Model zoo: the four CIFAR-10 architectures of Liang & Huang (AAAI 2021) plus a small CNN.

The CIFAR-10 models (VGG-11, ResNet-18, SENet-18, RegNetX-200MF) reproduce the
architectures of kuangliu/pytorch-cifar exactly, state-dict keys included, so
that repository's checkpoints load with ``load_state_dict(strict=True)``.
All models take 3x32x32 inputs and return logits of shape ``(N, num_classes)``.

RobustBench's CIFAR-10 zoo (an optional extra) is reached through :mod:`nblib.models.robustbench_zoo`, which
this package does not import (so that ``import nblib.models`` works without it).

Use :func:`build` to construct a model by name::

    model = build("resnet18", num_classes=10)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

from torch import nn

from .regnet import REGNETX_200MF, Block, RegNet, regnetx_200mf
from .resnet import BasicBlock, ResNet, resnet18
from .senet import PreActBlock, SENet, senet18
from .smallcnn import SmallCNN, smallcnn
from .vgg import VGG, VGG_CONFIGS, vgg11

__all__ = [
    "MODEL_NAMES",
    "PAPER_MODELS",
    "build",
    "VGG",
    "VGG_CONFIGS",
    "vgg11",
    "BasicBlock",
    "ResNet",
    "resnet18",
    "PreActBlock",
    "SENet",
    "senet18",
    "Block",
    "RegNet",
    "REGNETX_200MF",
    "regnetx_200mf",
    "SmallCNN",
    "smallcnn",
]

_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "vgg11": vgg11,
    "resnet18": resnet18,
    "senet18": senet18,
    "regnetx_200mf": regnetx_200mf,
    "smallcnn": smallcnn,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
#: The four CIFAR-10 models of the paper's experiments (``smallcnn`` is the CPU smoke stand-in).
PAPER_MODELS: tuple[str, ...] = ("vgg11", "resnet18", "senet18", "regnetx_200mf")


def build(name: str, num_classes: int = 10) -> nn.Module:
    """Construct the model called ``name`` (one of :data:`MODEL_NAMES`) with ``num_classes`` outputs.

    Raises ``ValueError`` for an unknown name or a ``num_classes`` that is not a positive int.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return _BUILDERS[name](int(num_classes))
