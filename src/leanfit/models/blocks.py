"""The block library: every module type a block of the chain can be.

Each block maps (in_channels, H, W) to (width, H/stride, W/stride). The modules are the standard
ones of small-network design: plain conv, depthwise-separable conv (MobileNet), ResNet bottleneck,
inverted residual with optional squeeze-excitation (MBConv, MobileNetV2/EfficientNet), fire
(SqueezeNet), and skip (identity: lets the search make the chain shorter).
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATION_LAYERS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "gelu": lambda: nn.GELU(),
}


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> list:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


def conv_bn_act(cin, cout, kernel=1, stride=1, groups=1, activation="relu") -> list:
    return [*conv_bn(cin, cout, kernel, stride, groups), ACTIVATION_LAYERS[activation]()]


class Residual(nn.Module):
    """x + body(x) when shapes allow it (stride 1, same channels), body(x) otherwise."""

    def __init__(self, body: nn.Module, residual: bool):
        super().__init__()
        self.body = body
        self.residual = residual

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, reduced, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(reduced, channels, 1),
            nn.Hardsigmoid(inplace=True),
        )

    def forward(self, x):
        return x * self.gate(x)


class Fire(nn.Module):
    """SqueezeNet's fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, cin: int, cout: int, stride: int, activation: str):
        super().__init__()
        squeeze = max(2, cout // 4)
        e1 = cout // 2
        self.pool = nn.MaxPool2d(2) if stride == 2 else nn.Identity()
        self.squeeze = nn.Sequential(*conv_bn_act(cin, squeeze, 1, activation=activation))
        self.expand1 = nn.Sequential(*conv_bn_act(squeeze, e1, 1, activation=activation))
        self.expand3 = nn.Sequential(*conv_bn_act(squeeze, cout - e1, 3, activation=activation))

    def forward(self, x):
        s = self.squeeze(self.pool(x))
        return torch.cat([self.expand1(s), self.expand3(s)], dim=1)


def make_unit(kind: str, cin: int, cout: int, stride: int, p: dict) -> nn.Module:
    """One repeat of a block; `p` holds the block's own parameters."""
    act = p.get("activation", "relu")
    k = p.get("kernel", 3)
    if kind == "conv":
        return nn.Sequential(*conv_bn_act(cin, cout, k, stride, activation=act))
    if kind == "dwsep":
        return nn.Sequential(
            *conv_bn_act(cin, cin, k, stride, groups=cin, activation=act),
            *conv_bn_act(cin, cout, 1, activation=act),
        )
    if kind == "bottleneck":
        # ResNet bottleneck: reduce by `expansion`, spatial conv, expand back; residual if it fits.
        mid = max(2, cout // p["expansion"])
        body = nn.Sequential(
            *conv_bn_act(cin, mid, 1, activation=act),
            *conv_bn_act(mid, mid, k, stride, activation=act),
            *conv_bn(mid, cout, 1),
        )
        return nn.Sequential(Residual(body, stride == 1 and cin == cout), ACTIVATION_LAYERS[act]())
    if kind == "mbconv":
        mid = cin * p["expansion"]
        layers = [
            *conv_bn_act(cin, mid, 1, activation=act),
            *conv_bn_act(mid, mid, k, stride, groups=mid, activation=act),
        ]
        if p.get("se"):
            layers.append(SqueezeExcite(mid, max(2, cin // 4)))
        layers += conv_bn(mid, cout, 1)
        return Residual(nn.Sequential(*layers), stride == 1 and cin == cout)
    if kind == "fire":
        return Fire(cin, cout, stride, act)
    raise ValueError(f"unknown module type {kind!r}")
