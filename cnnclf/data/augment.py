"""Augmentation of whole batches on the device: one gather per batch, no per-image Python."""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Padding = Literal["zeros", "reflect"]


def random_translate(images: Tensor, max_shift: int, padding: Padding = "zeros") -> Tensor:
    """Shift each image by its own random offset of up to ``max_shift`` pixels each way: a random
    crop of the image padded with zeros (as the CIFAR records use) or with its own reflection
    (``F.pad``'s "reflect", as airbench94 uses; needs ``max_shift`` smaller than the image)."""
    batch, channels, height, width = images.shape
    device = images.device
    shift_y = torch.randint(0, 2 * max_shift + 1, (batch,), device=device)
    shift_x = torch.randint(0, 2 * max_shift + 1, (batch,), device=device)
    rows = torch.arange(height, device=device)[None, :] + shift_y[:, None]  # (B, H), in padded coordinates
    cols = torch.arange(width, device=device)[None, :] + shift_x[:, None]  # (B, W)
    if padding == "reflect":
        # Index arithmetic instead of F.pad(mode="reflect"), which not every device implements for uint8.
        source = images
        rows, cols = _reflect(rows - max_shift, height), _reflect(cols - max_shift, width)
    else:
        source = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    return source[
        torch.arange(batch, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def _reflect(index: Tensor, size: int) -> Tensor:
    """Indices up to ``size - 1`` past either edge mirrored back inside, the edge itself not repeated."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def random_hflip(images: Tensor) -> Tensor:
    """Mirror a random half of the images left to right."""
    return _mirror(images, torch.rand(len(images), device=images.device) < 0.5)


def mirror_seeded_half(images: Tensor, seed: int) -> Tensor:
    """Mirror left to right the same random half of the images (rounded down) for the same seed."""
    chosen = torch.zeros(len(images), dtype=torch.bool)
    chosen[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[: len(images) // 2]] = True
    return _mirror(images, chosen.to(images.device))


def _mirror(images: Tensor, which: Tensor) -> Tensor:
    return torch.where(which[:, None, None, None], images.flip(3), images)
