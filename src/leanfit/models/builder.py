"""Build an `nn.Module` from a genotype, for any input size and channel count; count its cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from leanfit.models.blocks import conv_bn_act, make_unit
from leanfit.space.architecture import chain_units


class ChainNet(nn.Module):
    """Stem convolution, a chain of blocks, global average pooling and a linear classifier."""

    def __init__(self, stem: nn.Module, blocks: nn.Module, width: int, num_classes: int):
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def build_model(
    genotype: Mapping[str, Any], in_channels: int, image_size: int, num_classes: int
) -> ChainNet:
    """The network a genotype describes.

    A stride-2 block halves the feature map only while it is at least 2 pixels wide, so the same
    genotype builds for 8x8 digits and 224x224 photos alike.
    """
    stem_width = int(genotype["stem_width"])
    stem = nn.Sequential(*conv_bn_act(in_channels, stem_width, 3, activation="relu"))
    units: list[nn.Module] = []
    channels = stem_width
    for kind, cin, cout, stride, block in chain_units(genotype, image_size):
        units.append(make_unit(kind, cin, cout, stride, block))
        channels = cout
    return ChainNet(stem, nn.Sequential(*units), channels, num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_channels: int, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2
