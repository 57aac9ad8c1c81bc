"""Parameters and MACs of a genotype without building it: the builder's arithmetic, torch-free.

The search needs a configuration's cost before training it (a hard `max_params` is checked at
proposal time, thousands of times); building the model and running FlopCounterMode costs tens of
milliseconds, this costs microseconds. A test checks both agree on every module type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leanfit.space.architecture import chain_units


def architecture_cost(
    config: Mapping[str, Any], in_channels: int, image_size: int, num_classes: int
) -> tuple[int, int]:
    """Parameters and MACs of `build_model(config, ...)`, layer by layer, as FlopCounterMode
    counts them (convolutions and the linear head; batch norm, pooling and activations are free)."""
    stem = int(config["stem_width"])
    params = 9 * in_channels * stem + 2 * stem
    macs = 9 * in_channels * stem * image_size * image_size
    channels = stem
    pixels = image_size  # the feature map's actual side
    for kind, cin, cout, stride, block in chain_units(config, image_size):
        p, m, pixels = _unit_cost(kind, cin, cout, stride, block, pixels)
        params += p
        macs += m
        channels = cout
    params += channels * num_classes + num_classes
    macs += channels * num_classes
    return params, macs


def _unit_cost(kind: str, cin: int, cout: int, stride: int, p: Mapping, pixels: int):
    """(params, MACs, output side) of one repeat of a block; mirrors `models.blocks.make_unit`."""
    k = int(p.get("kernel", 3))
    out = -(-pixels // stride)  # a k×k convolution with padding k//2 rounds up
    area_in, area = pixels * pixels, out * out
    if kind == "conv":
        return k * k * cin * cout + 2 * cout, k * k * cin * cout * area, out
    if kind == "dwsep":
        params = k * k * cin + 2 * cin + cin * cout + 2 * cout
        return params, (k * k * cin + cin * cout) * area, out
    if kind == "bottleneck":
        mid = max(2, cout // int(p["expansion"]))
        params = cin * mid + 2 * mid + k * k * mid * mid + 2 * mid + mid * cout + 2 * cout
        macs = cin * mid * area_in + (k * k * mid * mid + mid * cout) * area
        return params, macs, out
    if kind == "mbconv":
        mid = cin * int(p["expansion"])
        params = cin * mid + 2 * mid + k * k * mid + 2 * mid + mid * cout + 2 * cout
        macs = cin * mid * area_in + (k * k * mid + mid * cout) * area
        if p.get("se"):
            reduced = max(2, cin // 4)
            params += 2 * mid * reduced + reduced + mid
            macs += 2 * mid * reduced
        return params, macs, out
    if kind == "fire":
        squeeze, e1 = max(2, cout // 4), cout // 2
        e3 = cout - e1
        out = pixels // 2 if stride == 2 else pixels  # max pooling rounds down
        params = cin * squeeze + 2 * squeeze + squeeze * e1 + 2 * e1 + 9 * squeeze * e3 + 2 * e3
        return params, (cin * squeeze + squeeze * e1 + 9 * squeeze * e3) * out * out, out
    raise ValueError(f"unknown module type {kind!r}")
