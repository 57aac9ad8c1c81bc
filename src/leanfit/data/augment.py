"""Augmentation as batched tensor work on uint8 images, on the device the data lives on.

Random crop (with reflect padding) and horizontal flip are drawn per image with tensor indexing.
The policy (RandAugment, AutoAugment's CIFAR-10 policy, TrivialAugmentWide) comes from
torchvision.transforms.v2, which draws one set of operations per call: the batch is split into
`groups` slices that each get their own draw, a middle way between per-image Python (slow) and one
draw for the whole batch (too little variety).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Policy = Literal["randaugment", "autoaugment", "trivialaugment", "none"]


def make_policy(policy: Policy, n: int = 2, m: int = 9):
    from torchvision.transforms import v2

    if policy == "randaugment":
        return v2.RandAugment(num_ops=int(n), magnitude=int(m)) if n > 0 else None
    if policy == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    if policy == "trivialaugment":
        return v2.TrivialAugmentWide()
    return None


class BatchAugment:
    """Augments a uint8 batch [B, C, H, W]; returns a new uint8 batch of the same shape."""

    def __init__(
        self,
        policy: Policy = "randaugment",
        n: int = 2,
        m: int = 9,
        crop_padding: int = 0,
        flip: bool = False,
        groups: int = 8,
    ):
        self.transform = make_policy(policy, n, m)
        self.crop_padding = crop_padding
        self.flip = flip
        self.groups = groups

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            x = torch.cat([self.transform(part) for part in x.chunk(self.groups)])
        if self.crop_padding:
            x = random_crop(x, self.crop_padding)
        if self.flip:
            x = random_flip(x)
        return x


def random_flip(x: torch.Tensor) -> torch.Tensor:
    mask = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-image random translation by up to `pad` pixels, reflect-padded at the borders."""
    b, c, h, w = x.shape
    mode = "reflect" if pad < min(h, w) else "replicate"
    padded = F.pad(x, [pad] * 4, mode=mode)
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()
