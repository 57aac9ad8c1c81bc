"""Batched per-image RandAugment / TrivialAugmentWide against torchvision's own operations."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from leanfit.data.augment import (
    GEOMETRIC_OPS,
    OPS,
    BatchAugment,
    apply_operations,
    batched_randaugment,
    magnitude_table,
)

GEOMETRIC = GEOMETRIC_OPS
BLENDS = ("Brightness", "Color", "Contrast", "Sharpness")


def torchvision_op(image: torch.Tensor, name: str, mag: float) -> torch.Tensor:
    """One image through torchvision's functional op, called as v2.RandAugment calls it."""
    if name == "Identity":
        return image
    if name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(mag))
        shears = [shear, 0.0] if name == "ShearX" else [0.0, shear]
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=shears, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        shift = [int(mag), 0] if name == "TranslateX" else [0, int(mag)]
        return TF.affine(image, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0])
    if name == "Rotate":
        return TF.rotate(image, angle=mag)
    if name == "Brightness":
        return TF.adjust_brightness(image, 1.0 + mag)
    if name == "Color":
        return TF.adjust_saturation(image, 1.0 + mag)
    if name == "Contrast":
        return TF.adjust_contrast(image, 1.0 + mag)
    if name == "Sharpness":
        return TF.adjust_sharpness(image, 1.0 + mag)
    if name == "Posterize":
        return TF.posterize(image, int(mag))
    if name == "Solarize":
        return TF.solarize(image, 255.0 * mag)
    if name == "AutoContrast":
        return TF.autocontrast(image)
    return TF.equalize(image)


def sample_images(channels: int, size: int, n: int = 31) -> torch.Tensor:
    gen = torch.Generator().manual_seed(channels * 100 + size)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    if n > 2:
        x[1] = x[1] // 4 + 100  # low contrast: AutoContrast and Equalize have work to do
        x[2] = 7  # flat: AutoContrast and Equalize leave it alone
    return x


def compare(name: str, channels: int, size: int, levels, wide: bool = False):
    """Our op and torchvision's on the same images, image i at magnitude bin levels[i], the sign
    alternating for signed ops. Returns (ours, theirs)."""
    x = sample_images(channels, size, len(levels))
    k = OPS.index(name)
    mag = magnitude_table(wide, 31, size, size)[k, torch.as_tensor(levels)]
    if name in GEOMETRIC + BLENDS:
        mag = mag * torch.tensor([(-1.0) ** i for i in range(len(levels))], dtype=mag.dtype)
    ours = apply_operations(x.clone(), torch.full((len(levels),), k), mag)
    theirs = torch.stack([torchvision_op(x[i], name, float(mag[i])) for i in range(len(levels))])
    return ours, theirs


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_uint8_in_uint8_out_same_shape(policy, channels, size):
    x = torch.randint(0, 256, (64, channels, size, size), dtype=torch.uint8)
    out = BatchAugment(policy, n=2, m=9, crop_padding=2, flip=True)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8


@pytest.mark.parametrize("name", [n for n in OPS if n not in GEOMETRIC + BLENDS])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32])
def test_pixel_ops_match_torchvision_exactly(name, channels, size):
    """Identity, Posterize, Solarize, AutoContrast, Equalize: integer results, no tolerance."""
    ours, theirs = compare(name, channels, size, list(range(31)))
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("name", GEOMETRIC)
@pytest.mark.parametrize("channels", [1, 3])
def test_geometric_ops_match_torchvision(name, channels):
    """Same nearest pixel as torchvision's affine/rotate, zero fill. At RandAugment's default M=9
    (and at any bin with no exact half-pixel tie) the pick is identical. Where a source position
    falls exactly half-way between two pixels (ShearX at M=10: 0.1 * 5.5 is a half), we round the
    exact position half to even and torchvision lets float noise in its grid choose; both are
    nearest, so we allow such pixels, at most 2% of all."""
    for size in (16, 32):
        ours, theirs = compare(name, channels, size, [9] * 31)
        assert torch.equal(ours, theirs), (name, size)
        for wide in (False, True):
            ours, theirs = compare(name, channels, size, list(range(31)), wide)
            assert (ours != theirs).float().mean() <= 0.02, (name, size, wide)


@pytest.mark.parametrize("name", BLENDS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32])
def test_blend_ops_match_torchvision_within_one_level(name, channels, size):
    """Brightness, Color, Contrast, Sharpness blend in float and truncate to uint8; a blend with a
    per-image weight rounds differently from torchvision's scalar one in the last float bit, so a
    result a hair below an integer can land one level lower: at most 1 apart, on few pixels
    (torchvision's Contrast turns the flat test image, 7 everywhere, into 6: 1 image in 31)."""
    ours, theirs = compare(name, channels, size, list(range(31)))
    diff = (ours.int() - theirs.int()).abs()
    assert diff.max() <= 1
    assert (diff > 0).float().mean() < 0.04


@pytest.mark.parametrize("wide", [False, True])
def test_magnitude_zero_is_identity_for_all_but_the_parameter_free_ops(wide):
    x = sample_images(3, 16, 14 * 4)
    op = torch.arange(14).repeat(4)
    mag = magnitude_table(wide, 31, 16, 16)[op, 0]
    out = apply_operations(x.clone(), op, mag)
    for k, name in enumerate(OPS):
        rows = op == k
        if name in ("AutoContrast", "Equalize"):
            continue  # no magnitude
        if name == "Solarize":  # magnitude bin 0 is threshold 255: only 255 is inverted
            assert torch.equal(out[rows], torch.where(x[rows] == 255, 0, x[rows]))
        else:
            assert torch.equal(out[rows], x[rows]), name


def test_operations_are_drawn_per_image():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8).repeat(128, 1, 1, 1)
    for policy in ("randaugment", "trivialaugment"):
        out = BatchAugment(policy, n=2, m=9)(x)
        distinct = {out[i].numpy().tobytes() for i in range(128)}
        # 14 * 14 operation pairs with random signs: most images differ from all others
        assert len(distinct) > 64, policy


def test_seeded_runs_repeat():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(7)
    a = batched_randaugment(x, 2, 9)
    torch.manual_seed(7)
    b = batched_randaugment(x, 2, 9)
    torch.manual_seed(8)
    c = batched_randaugment(x, 2, 9)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_two_slots_apply_in_order():
    """Slot 2 acts on slot 1's output: TranslateX then Solarize differs from the reverse."""
    x = sample_images(1, 16, 2)
    tx, sol = OPS.index("TranslateX"), OPS.index("Solarize")
    op = torch.tensor([[tx, sol], [sol, tx]])
    mag = torch.tensor([[3.0, 0.5], [0.5, 3.0]], dtype=torch.float64)
    out = apply_operations(x.clone(), op, mag)
    first = torchvision_op(torchvision_op(x[0], "TranslateX", 3.0), "Solarize", 0.5)
    second = torchvision_op(torchvision_op(x[1], "Solarize", 0.5), "TranslateX", 3.0)
    assert torch.equal(out[0], first) and torch.equal(out[1], second)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="`m` is 31"):
        BatchAugment("randaugment", n=2, m=31)
    with pytest.raises(ValueError, match="`n` is -1"):
        BatchAugment("randaugment", n=-1, m=9)
