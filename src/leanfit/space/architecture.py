"""The architecture vocabulary: the modules a block can be and the parameters each one has.

A network is a stem convolution, a chain of N blocks and a classifier head. Block i is described by
`b{i}.type` and the conditional parameters of that type, named `b{i}.<param>`. This module knows no
torch: the builder in `leanfit.models` gives these names their meaning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from leanfit.space.spec import Param

# Order matters only for readability; the first module is every block type's canonical value.
MODULE_PARAMS: dict[str, tuple[str, ...]] = {
    "conv": ("width", "kernel", "stride", "repeats", "activation"),
    "dwsep": ("width", "kernel", "stride", "repeats", "activation"),
    "bottleneck": ("width", "kernel", "stride", "expansion", "repeats", "activation"),
    "mbconv": ("width", "kernel", "stride", "expansion", "se", "repeats", "activation"),
    "fire": ("width", "stride", "repeats", "activation"),
    "skip": (),
}
MODULES: tuple[str, ...] = tuple(MODULE_PARAMS)
BLOCK_PARAMS: tuple[str, ...] = (
    "width",
    "kernel",
    "stride",
    "expansion",
    "se",
    "repeats",
    "activation",
)
ACTIVATIONS: tuple[str, ...] = ("relu", "relu6", "hardswish", "silu", "gelu")


def block_type(i: int) -> str:
    return f"b{i}.type"


def architecture_params(
    blocks: int, modules: tuple[str, ...], dims: Mapping[str, Param]
) -> list[Param]:
    """The conditional parameters of a chain of `blocks` blocks.

    `dims` maps "stem_width" and each name in BLOCK_PARAMS to a template Param (its name is
    replaced); a block parameter exists only when the block's type uses it.
    """
    params = [_renamed(dims["stem_width"], "stem_width")]
    for i in range(blocks):
        params.append(Param(block_type(i), "categorical", choices=tuple(modules)))
        for name in BLOCK_PARAMS:
            users = tuple(m for m in modules if name in MODULE_PARAMS[m])
            if users:
                params.append(
                    _renamed(dims[name], f"b{i}.{name}", parent=block_type(i), values=users)
                )
    return params


def _renamed(template: Param, name: str, parent: str | None = None, values=()) -> Param:
    return Param(
        name,
        template.kind,
        choices=template.choices,
        low=template.low,
        high=template.high,
        log=template.log,
        parent=parent,
        parent_values=tuple(values),
    )


def genotype_blocks(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The blocks of a configuration, in order, as {"type": ..., <its params>...}."""
    blocks = []
    i = 0
    while block_type(i) in config:
        kind = config[block_type(i)]
        block = {"type": kind}
        for name in MODULE_PARAMS[kind]:
            block[name] = config[f"b{i}.{name}"]
        blocks.append(block)
        i += 1
    return blocks


def chain_units(config: Mapping[str, Any], image_size: int):
    """The network's units in order, as (module, in channels, out channels, stride, block).

    A block of `repeats` units has its stride on the first one; a stride-2 block halves the
    feature map only while it is at least 2 pixels wide, so one genotype builds for 8x8 digits
    and 224x224 photos alike. The builder and the torch-free cost both walk the chain here.
    """
    channels, size = int(config["stem_width"]), image_size
    for block in genotype_blocks(config):
        if block["type"] == "skip":
            continue
        width = int(block["width"])
        stride = int(block["stride"]) if size >= 2 else 1
        for r in range(int(block["repeats"])):
            yield block["type"], channels, width, stride if r == 0 else 1, block
            channels = width
        size = (size + stride - 1) // stride


def flatten_genotype(data: Mapping[str, Any], blocks: int, modules: tuple[str, ...]) -> dict:
    """Accept the readable form `{stem_width: 8, blocks: [{type: conv, width: 16, ...}], lr: ...}`
    as well as the flat `b0.type` form; a list shorter than the chain is padded with skip blocks."""
    if not isinstance(data.get("blocks"), list):
        return dict(data)
    listed = data["blocks"]
    if len(listed) > blocks:
        raise ValueError(f"blocks: {len(listed)} listed, the space has {blocks}")
    if len(listed) < blocks and "skip" not in modules:
        raise ValueError(
            f"blocks: {len(listed)} listed, the space has {blocks} and no skip module to pad with"
        )
    flat = {k: v for k, v in data.items() if k != "blocks"}
    both = sorted(k for k in flat if re.fullmatch(r"b[0-9]+\..+", str(k)))
    if both:  # (the list's blocks replaced them: another model was trained, with no word)
        raise ValueError(
            f"{', '.join(both[:3])}{' ...' if len(both) > 3 else ''}: blocks are given both in "
            "`blocks:` and as bN.* keys; give each block in one of them (all in `blocks:`, or "
            "all as bN.*)"
        )
    for i in range(blocks):
        block = listed[i] if i < len(listed) else {"type": "skip"}
        if not isinstance(block, Mapping) or "type" not in block:
            raise ValueError(f"blocks[{i}]: write each block as a mapping with a `type`")
        for key, value in block.items():
            flat[block_type(i) if key == "type" else f"b{i}.{key}"] = value
    return flat
