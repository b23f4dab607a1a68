"""Whole-batch augmentation: what it does to pixels, and that it only touches training batches."""

import torch

from cnnclf.data import DigitsDataModule
from cnnclf.data.augment import random_hflip, random_translate


def test_translate_shifts_each_image_and_fills_with_zeros():
    torch.manual_seed(0)
    images = torch.arange(1, 1 + 64 * 5 * 6, dtype=torch.int32).view(64, 1, 5, 6)
    shifted = random_translate(images, max_shift=2)
    assert shifted.shape == images.shape
    for original, moved in zip(images, shifted, strict=True):
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        windows = [padded[:, y:y + 5, x:x + 6] for y in range(5) for x in range(5)]
        assert any(torch.equal(moved, window) for window in windows)
    assert (shifted == 0).any()  # some image moved, letting the zero border in
    assert len({tuple(moved.flatten().tolist()) for moved in shifted - images}) > 1  # offsets differ per image


def test_hflip_mirrors_about_half():
    torch.manual_seed(0)
    images = torch.rand(400, 3, 4, 4)
    flipped = random_hflip(images)
    mirrored = [torch.equal(f, i.flip(2)) for f, i in zip(flipped, images, strict=True)]
    kept = [torch.equal(f, i) for f, i in zip(flipped, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 150 < sum(mirrored) < 250


def test_batches_are_untouched_outside_training():
    data = DigitsDataModule(translate=3, hflip=True)
    batch = (torch.ones(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    assert data.on_after_batch_transfer(batch, 0) is batch
