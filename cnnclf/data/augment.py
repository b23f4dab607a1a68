"""Augmentation of whole batches on the device: one gather per batch, no per-image Python."""

import torch
import torch.nn.functional as F
from torch import Tensor


def random_translate(images: Tensor, max_shift: int) -> Tensor:
    """Shift each image by its own random offset of up to ``max_shift`` pixels each way,
    filling with zeros (a random crop of the zero-padded image, as the CIFAR records use)."""
    batch, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    shift_y = torch.randint(0, 2 * max_shift + 1, (batch,), device=device)
    shift_x = torch.randint(0, 2 * max_shift + 1, (batch,), device=device)
    rows = torch.arange(height, device=device)[None, :] + shift_y[:, None]  # (B, H)
    cols = torch.arange(width, device=device)[None, :] + shift_x[:, None]  # (B, W)
    return padded[
        torch.arange(batch, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_hflip(images: Tensor) -> Tensor:
    """Mirror a random half of the images left to right."""
    flip = torch.rand(len(images), device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)
