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
        if self.crop_padding or self.flip:
            x = random_crop(x, self.crop_padding, flip=self.flip)
        return x


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirrors each image left-right with probability 1/2."""
    return random_crop(x, 0, flip=True)


def random_crop(x: torch.Tensor, pad: int, flip: bool = False) -> torch.Tensor:
    """Per-image random translation by up to `pad` pixels, reflect-padded at the borders; with
    `flip`, each image is also mirrored left-right with probability 1/2.

    Both are one `gather` of pixel positions: on a CPU that is several times faster than advanced
    indexing on a channels-last view, and the flip costs no extra pass over the batch.
    """
    b, c, h, w = x.shape
    no_shift = torch.zeros(b, dtype=torch.int64, device=x.device)
    padded, dy, dx = x, no_shift, no_shift  # no random draws when there is no padding
    if pad:
        mode = "reflect" if pad < min(h, w) else "replicate"
        padded = F.pad(x, [pad] * 4, mode=mode)
        dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if flip:
        mirrored = torch.rand(b, device=x.device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    pixel = rows[:, :, None] * (w + 2 * pad) + (dx[:, None] + cols)[:, None, :]  # [B, H, W]
    pixel = pixel.view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, pixel).view(b, c, h, w)
