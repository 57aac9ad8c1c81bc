"""Augmentation as batched tensor work on uint8 images, on the device the data lives on.

RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a reduced
search space") and TrivialAugmentWide (Müller and Hutter 2021) are drawn per image and applied
slot by slot, each slot vectorised over the batch (`batched_randaugment`). They follow
torchvision.transforms.v2's operations, magnitude tables and nearest-neighbour sampling.
AutoAugment's CIFAR-10 policy still comes from torchvision, which draws one set of operations per
call: the batch is split into `groups` slices that each get their own draw.

Random crop (with reflect padding) and horizontal flip are drawn per image with tensor indexing.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F

Policy = Literal["randaugment", "autoaugment", "trivialaugment", "none"]

# torchvision's RandAugment / TrivialAugmentWide operations, in its order.
OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
_OP = {name: i for i, name in enumerate(OPS)}
GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
# Operations whose magnitude gets a random sign (torchvision's `signed`).
_SIGNED = GEOMETRIC_OPS + ("Brightness", "Color", "Contrast", "Sharpness")


@functools.lru_cache(maxsize=64)
def magnitude_table(wide: bool, bins: int, height: int, width: int) -> torch.Tensor:
    """Magnitudes [len(OPS), bins] (float64) exactly as torchvision's `_AUGMENTATION_SPACE` for
    RandAugment (`wide=False`) or TrivialAugmentWide (`wide=True`); 0 for operations without one.
    """

    def lin(hi: float) -> torch.Tensor:
        return torch.linspace(0.0, hi, bins)  # float32, as torchvision computes it

    if wide:
        shear, tx, ty, rotate, enhance, poster_steps = 0.99, 32.0, 32.0, 135.0, 0.99, 6
    else:
        shear, tx, ty = 0.3, 150.0 / 331.0 * width, 150.0 / 331.0 * height
        rotate, enhance, poster_steps = 30.0, 0.9, 4
    none = torch.zeros(bins)
    posterize = (8 - (torch.arange(bins) / ((bins - 1) / poster_steps))).round().int()
    rows = {
        "Identity": none,
        "ShearX": lin(shear),
        "ShearY": lin(shear),
        "TranslateX": lin(tx),
        "TranslateY": lin(ty),
        "Rotate": lin(rotate),
        "Brightness": lin(enhance),
        "Color": lin(enhance),
        "Contrast": lin(enhance),
        "Sharpness": lin(enhance),
        "Posterize": posterize,
        "Solarize": torch.linspace(1.0, 0.0, bins),
        "AutoContrast": none,
        "Equalize": none,
    }
    return torch.stack([rows[name].double() for name in OPS])


def draw_operations(
    batch: int, num_ops: int, bins: int, magnitude: int | None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per slot and image, [num_ops, batch] each: an operation (index into OPS), its magnitude bin
    (`magnitude`, RandAugment's M, or drawn per image when None, as TrivialAugment does) and
    whether a signed operation's magnitude is negated (probability 1/2, as in torchvision).
    """
    op = torch.randint(len(OPS), (num_ops, batch), device=device)
    if magnitude is None:
        level = torch.randint(bins, (num_ops, batch), device=device)
    else:
        level = torch.full((num_ops, batch), int(magnitude), device=device)
    negative = torch.rand(num_ops, batch, device=device) <= 0.5
    return op, level, negative


def batched_randaugment(
    x: torch.Tensor,
    num_ops: int = 2,
    magnitude: int | None = 9,
    wide: bool = False,
    num_magnitude_bins: int = 31,
) -> torch.Tensor:
    """RandAugment on a uint8 batch [B, C, H, W] (C = 1 or 3), with the operations drawn per image.

    Each of the `num_ops` slots draws, for every image, one of torchvision's 14 operations with
    magnitude bin `magnitude` (M) and a random sign where the operation has one. `wide=True` with
    `num_ops=1, magnitude=None` is TrivialAugmentWide (a random bin per image, the wide table).
    """
    b, c, h, w = x.shape
    op, level, negative = draw_operations(b, num_ops, num_magnitude_bins, magnitude, x.device)
    table = _parameter_table(wide, num_magnitude_bins, c, h, w, x.device)  # [ops, bins, 2, 12]
    params = table.view(-1, table.shape[-1]).index_select(
        0, ((op * num_magnitude_bins + level) * 2 + negative.long()).flatten()
    )
    return _apply(x, op, params.view(num_ops, b, -1))


def apply_operations(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Applies to each image i of a uint8 batch, slot after slot, OPS[op[s, i]] with the signed
    magnitude mag[s, i] as torchvision's RandAugment would (both [slots, B], or [B] for one slot).
    """
    if op.dim() == 1:
        op, mag = op[None], mag[None]
    return _apply(x, op, _parameters(op, mag, *x.shape[1:]).float())


@functools.lru_cache(maxsize=64)
def _parameter_table(
    wide: bool, bins: int, c: int, h: int, w: int, device: torch.device
) -> torch.Tensor:
    """_parameters for every operation, magnitude bin and sign: [len(OPS), bins, 2, 12]."""
    op = torch.arange(len(OPS))[:, None, None].expand(-1, bins, 2)
    mag = magnitude_table(wide, bins, h, w)[:, :, None].expand(-1, -1, 2)
    signed = torch.tensor([name in _SIGNED for name in OPS])[:, None, None]
    mag = torch.where(signed & torch.tensor([False, True]), -mag, mag)
    return _parameters(op, mag, c, h, w).float().to(device)


def _apply(x: torch.Tensor, op: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The slots, one after the other: op [slots, B], params [slots, B, 12] (see _parameters).

    In a slot every image gets exactly one operation. The batch is sorted by family of operation
    (geometric; blend, AutoContrast and Posterize; Solarize; Sharpness; Equalize) and each family
    runs once, vectorised over its slice: on small images the number of tensor operations costs
    more than their size, so nothing is computed for images that do not need it.
    """
    family = _family_of(op.device)[op]
    # How many images of each family per slot, for all slots at once (one wait for the device).
    counts = F.one_hot(family, len(_FAMILIES)).sum(1).tolist()
    # index_select, not x[index]: on a CPU it is many times faster for uint8 images.
    rows = torch.arange(x.shape[0], device=x.device)
    where = rows  # the original index of each row of x
    for slot in range(op.shape[0]):
        order = torch.argsort(family[slot].index_select(0, where), stable=True)
        where = where.index_select(0, order)
        x = x.index_select(0, order)
        slot_params = params[slot].index_select(0, where)
        parts, start = [], 0
        for apply, count in zip(_FAMILIES, counts[slot], strict=True):
            part = slice(start, start + count)
            if count:
                parts.append(x[part] if apply is None else apply(x[part], slot_params[part]))
            start += count
        x = torch.cat(parts)
    return x.index_select(0, torch.empty_like(where).scatter_(0, where, rows))


@functools.lru_cache(maxsize=64)
def _pixel_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Column indices [w] and row indices [h, 1], as float32."""
    return torch.arange(w, device=device, dtype=torch.float32), torch.arange(
        h, device=device, dtype=torch.float32
    )[:, None]


# Columns of the per-image parameters (see _parameters).
_WEIGHT, _IS_COLOR, _IS_CONTRAST, _IS_AUTOCONTRAST, _STEP, _THRESHOLD = range(6, 12)


def _parameters(op: torch.Tensor, mag: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """Everything the families need per image, from its operation and signed magnitude: [..., 12]
    (float64).

    Columns 0-5 say where each output pixel (i, j) comes from, as torchvision's affine and rotate
    compute it: source column = c0 * j + c1 * i + c2, row = c3 * j + c4 * i + c5, counted in the
    image padded by one pixel (ShearX/Y, TranslateX/Y and Rotate; the identity otherwise). They are
    torchvision's _get_inverse_affine_matrix, in float64 like its Python floats, with its
    _affine_grid's centring and grid_sample's unnormalisation folded in. Then the blend weight
    (Brightness, Color, Contrast, Sharpness), the Color, Contrast and AutoContrast flags, the
    Posterize step and the Solarize threshold.
    """
    onehot = F.one_hot(op, len(OPS)).double()
    masked = onehot * mag[..., None]  # column k: the magnitude where the operation is OPS[k]

    def only(name: str) -> torch.Tensor:
        return masked[..., _OP[name]]

    def flag(name: str) -> torch.Tensor:
        return onehot[..., _OP[name]]

    shear_x = torch.rad2deg(torch.atan(only("ShearX")))
    shear_y = torch.rad2deg(torch.atan(only("ShearY")))
    # affine(translate=[int(magnitude), 0]); rotate(angle) builds its matrix from -(angle % 360)
    tx, ty = only("TranslateX").trunc(), only("TranslateY").trunc()
    angle = -torch.remainder(only("Rotate"), 360.0)
    # Shears turn about the top-left corner (center=[0, 0]), the rest about the image centre.
    sheared = flag("ShearX") + flag("ShearY")
    cx, cy = sheared * (-0.5 * w), sheared * (-0.5 * h)
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    cos_sy, tan_sx = torch.cos(sy), torch.tan(sx)
    a = torch.cos(rot - sy) / cos_sy
    b = -(a * tan_sx + torch.sin(rot))
    c_ = torch.sin(rot - sy) / cos_sy
    d = torch.cos(rot) - c_ * tan_sx
    m0, m1, m3, m4 = d, -b, -c_, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    # Pixel centres relative to the centre are j - (w - 1) / 2 and i - (h - 1) / 2; grid_sample
    # maps the grid back to (w - 1) / 2 + x; + 1 for the border.
    x0, y0 = (w - 1) / 2, (h - 1) / 2
    c2 = m2 - m0 * x0 - m1 * y0 + x0 + 1
    c5 = m5 - m3 * x0 - m4 * y0 + y0 + 1

    # Color is a no-op on one channel (as in torchvision).
    blends = ["Brightness", "Contrast", "Sharpness"] + (["Color"] if c == 3 else [])
    weight = -sum(only(name) for name in blends)
    is_color = flag("Color") if c == 3 else torch.zeros_like(mag)
    # Posterize to `bits` bits is flooring to a multiple of 2 ** (8 - bits).
    step = torch.exp2((8 - only("Posterize")) * flag("Posterize"))
    threshold = 255.0 * only("Solarize")
    columns = [m0, m1, c2, m3, m4, c5, weight, is_color, flag("Contrast")]
    return torch.stack(columns + [flag("AutoContrast"), step, threshold], -1)


def _geometric(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """ShearX/Y, TranslateX/Y and Rotate as torchvision's affine and rotate with their defaults
    (nearest, zero fill): the source of each pixel rounded half to even as grid_sample(mode=
    "nearest") does, then one gather of the uint8 pixels, which picks what grid_sample would
    without converting the images to float and back. Only at exact half-pixel ties can float
    rounding pick the other, equally near, pixel.
    """
    n, c, h, w = x.shape
    coef = p[:, :6].view(n, 2, 3, 1, 1)  # [image, (column, row), (by j, by i, constant)]
    cols, rows = _pixel_grid(h, w, x.device)
    source = torch.addcmul(coef[:, :, 2], coef[:, :, 1], rows) + coef[:, :, 0] * cols
    source = source.round_().clamp_(min=0)  # [n, 2, h, w]: column and row in the padded image
    # Anything outside lands on the zero border.
    if h == w:
        source = source.clamp_(max=w + 1)
    else:
        limit = torch.tensor([w + 1.0, h + 1.0], device=x.device).view(2, 1, 1)
        source = torch.minimum(source, limit)
    pixel = source[:, 1].mul_(w + 2).add_(source[:, 0]).long().view(n, 1, h * w)
    padded = F.pad(x, (1, 1, 1, 1)).view(n, c, (h + 2) * (w + 2))
    return padded.gather(2, pixel.expand(n, c, h * w)).view(n, c, h, w)


def _colour(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Brightness, Color, Contrast, AutoContrast and Posterize in one float pass.

    The blends are lerp(image, degenerate, -magnitude): a black image for Brightness, the grayscale
    image for Color, its mean for Contrast. AutoContrast is torchvision's (x - min) / ((max - min)
    / 255) per channel; Posterize floors to a multiple of its step. Images with another operation
    of the family get weight 0, min 0, scale 1 and step 1, which leave them exact.
    """
    columns = p[:, _WEIGHT:_THRESHOLD, None, None]
    weight, is_color, is_contrast, is_autocontrast, step = (columns[:, i : i + 1] for i in range(5))
    xf = x.float()
    if x.shape[1] == 3:
        # torchvision's _rgb_to_grayscale_image, floored for uint8 images
        r, g, b = xf.unbind(1)
        gray = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(1)
    else:
        gray = xf
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    degenerate = torch.addcmul(mean * is_contrast, gray, is_color)
    out = torch.lerp(xf, degenerate, weight)

    low = x.amin(dim=(2, 3), keepdim=True).float()
    high = x.amax(dim=(2, 3), keepdim=True).float()
    stretch = is_autocontrast * (high > low)
    inv_scale = torch.addcmul(1.0 - stretch, stretch, high - low, value=1.0 / 255)
    out = out.sub_(low * stretch).div_(inv_scale).clamp_(0, 255)
    out = out.div_(step).floor_().mul_(step)
    return out.to(torch.int16).to(torch.uint8)  # two steps: much faster than float to uint8


def _solarize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """torchvision's solarize(255 * mag): inverts the pixels at or above the threshold."""
    threshold = p[:, _THRESHOLD].view(-1, 1, 1, 1)
    return torch.where(x >= threshold, 255 - x, x)


def _sharpness(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness(1 + mag): blend with the smoothed image, interior only.

    The smoothing filter is PIL's SMOOTH (1s around a 5, over 13), rounded: a sum of integers over
    13 is never within float error of a half, so adding shifted slices rounds exactly as
    torchvision's float conv2d does.
    """
    n, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    xf = x.float()
    rows = xf[:, :, :-2] + xf[:, :, 1:-1] + xf[:, :, 2:]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    inner = xf[..., 1:-1, 1:-1]
    smooth = box.add_(inner, alpha=4.0).div_(13.0).round_()
    inner.copy_(torch.lerp(inner, smooth, p[:, _WEIGHT].view(-1, 1, 1, 1)))
    return xf.clamp_(0, 255).to(torch.uint8)


def _equalize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """torchvision's equalize (PIL's scheme): per-image, per-channel histogram lookup table."""
    del p  # Equalize has no magnitude
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    offsets = torch.arange(0, 256 * n * c, 256, device=x.device)[:, None]
    hist = torch.bincount((flat + offsets).view(-1), minlength=256 * n * c).view(n * c, 256)
    cum = hist.cumsum(1)
    top = hist.gather(1, cum.argmax(1, keepdim=True))  # pixels at the image's highest value
    step = (h * w - top) // 255
    lut = (cum[:, :-1] + step // 2) // step.clamp(min=1)
    lut = F.pad(lut, (1, 0)).clamp_(max=255)
    # With step 0 (a nearly flat channel) torchvision leaves the channel as it is.
    lut = torch.where(step != 0, lut, _pixel_grid(1, 256, x.device)[0]).to(torch.uint8)
    return lut.gather(1, flat).view(n, c, h, w)


# The families in the order the batch is sorted in; None: left as it is.
_FAMILIES = (None, _geometric, _colour, _solarize, _sharpness, _equalize)
_FAMILY_MEMBERS = (
    ("Identity",),
    GEOMETRIC_OPS,
    ("Brightness", "Color", "Contrast", "AutoContrast", "Posterize"),
    ("Solarize",),
    ("Sharpness",),
    ("Equalize",),
)


@functools.lru_cache(maxsize=8)
def _family_of(device: torch.device) -> torch.Tensor:
    """The family (index into _FAMILIES) of each operation in OPS."""
    family = [next(i for i, names in enumerate(_FAMILY_MEMBERS) if op in names) for op in OPS]
    return torch.tensor(family, device=device)


def make_policy(policy: Policy, n: int = 2, m: int = 9):
    """torchvision's per-call transform for `policy` (None for none, or RandAugment with n=0)."""
    from torchvision.transforms import v2

    if policy == "randaugment":
        return v2.RandAugment(num_ops=int(n), magnitude=int(m)) if n > 0 else None
    if policy == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    if policy == "trivialaugment":
        return v2.TrivialAugmentWide()
    return None


class BatchAugment:
    """Augments a uint8 batch [B, C, H, W]; returns a new uint8 batch of the same shape.

    Args:
        policy: "randaugment" (N operations of magnitude M per image), "trivialaugment"
            (TrivialAugmentWide: one operation of random magnitude per image), "autoaugment"
            (torchvision's CIFAR-10 policy, one draw per group) or "none".
        n: RandAugment's N, operations per image (0 turns RandAugment off).
        m: RandAugment's M, the magnitude bin in 0..30.
        crop_padding: random translation by up to this many pixels, reflect-padded.
        flip: mirror each image left-right with probability 1/2.
        groups: slices of the batch with their own draw, for "autoaugment" only; RandAugment and
            TrivialAugment are drawn per image.
    """

    def __init__(
        self,
        policy: Policy = "randaugment",
        n: int = 2,
        m: int = 9,
        crop_padding: int = 0,
        flip: bool = False,
        groups: int = 8,
    ):
        if n < 0:
            raise ValueError(f"The value of `n` is {n}, but must be `n >= 0`.")
        if not 0 <= m <= 30:
            raise ValueError(f"The value of `m` is {m}, but must be `0 <= m <= 30`.")
        self.policy = policy
        self.n = int(n)
        self.m = int(m)
        self.transform = make_policy(policy, n, m) if policy == "autoaugment" else None
        self.crop_padding = crop_padding
        self.flip = flip
        self.groups = groups

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.policy == "randaugment" and self.n > 0:
            x = batched_randaugment(x, self.n, self.m)
        elif self.policy == "trivialaugment":
            x = batched_randaugment(x, 1, None, wide=True)
        elif self.transform is not None:
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

    Both are one `gather` of pixel positions, reflected at the borders by index arithmetic rather
    than by padding the images: on a CPU that is several times faster than advanced indexing on a
    channels-last view, and the flip and the padding cost no extra pass over the batch.
    """
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).expand(b, h)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    if flip:
        mirrored = torch.rand(b, device=x.device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    if pad:
        replicate = pad >= min(h, w)  # F.pad(mode="reflect") needs pad < size
        rows = _reflect(rows + (dy - pad), h, replicate)
        cols = _reflect(cols + (dx - pad), w, replicate)
    pixel = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w)
    return x.reshape(b, c, h * w).gather(2, pixel.expand(b, c, h * w)).view(b, c, h, w)


def _reflect(index: torch.Tensor, size: int, replicate: bool) -> torch.Tensor:
    """Indices less than `size` outside 0..size-1 mirrored back in, as F.pad(mode="reflect")
    does; with `replicate`, clamped instead, as F.pad(mode="replicate") does."""
    if replicate:
        return index.clamp(0, size - 1)
    return (size - 1) - ((size - 1) - index.abs()).abs()
