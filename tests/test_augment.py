"""Whole-batch augmentation: what it does to pixels, and that it only touches training batches."""

import lightning as L
import pytest
import torch

from cnnclf.data import DigitsDataModule, PickledImageDataModule
from cnnclf.data.augment import random_hflip, random_translate
from cnnclf.errors import ConfigError
from cnnclf.models import ConvBNNet
from tests.conftest import report_records, write_report_pickle
from tests.test_cli import run


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


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("max_shift", [2, 4])
def test_reflect_padding_fills_the_border_with_the_mirrored_image(dtype, max_shift):
    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 2, 5, 6)).to(dtype)
    shifted = random_translate(images, max_shift, padding="reflect")
    assert shifted.dtype == dtype and shifted.shape == images.shape
    for original, moved in zip(images, shifted, strict=True):
        padded = torch.nn.functional.pad(original.float(), (max_shift,) * 4, mode="reflect").to(dtype)
        windows = [padded[:, y:y + 5, x:x + 6] for y in range(2 * max_shift + 1) for x in range(2 * max_shift + 1)]
        assert any(torch.equal(moved, window) for window in windows)
    assert (shifted != 0).all()  # no zero border
    assert not torch.equal(shifted, images)


def test_a_shift_must_be_smaller_than_the_images_and_the_options_known(tmp_path):
    path = write_report_pickle(tmp_path / "d", report_records(12, (6, 7, 3), [0, 1]),
                               report_records(4, (6, 7, 3), [0, 1]))
    assert PickledImageDataModule(str(path), translate=5, translate_padding="reflect").image_shape == [3, 6, 7]
    for padding in ("zeros", "reflect"):
        with pytest.raises(ConfigError, match=r"translate must be smaller than the 6x7 images of .*, found "
                                              r"translate=6"):
            PickledImageDataModule(str(path), translate=6, translate_padding=padding).setup()
    with pytest.raises(ConfigError, match="translate_padding must be 'zeros' or 'reflect', found 'mirror'"):
        PickledImageDataModule(str(path), translate_padding="mirror")
    with pytest.raises(ConfigError, match="hflip must be true, false or 'alternate', found 'sometimes'"):
        PickledImageDataModule(str(path), hflip="sometimes")


class RecordTrainingViews(L.Callback):
    """The training images each epoch's steps receive, augmented."""

    def __init__(self) -> None:
        self.views: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.views.setdefault(trainer.current_epoch, []).extend(batch[0].clone())


def mirrored_indices(views: list[torch.Tensor], originals: torch.Tensor) -> set[int]:
    """Which of ``originals`` the views show mirrored; every view must show one of them, once."""
    plain = {image.numpy().tobytes(): index for index, image in enumerate(originals)}
    mirrored = {image.flip(2).numpy().tobytes(): index for index, image in enumerate(originals)}
    seen = [(plain.get(view.numpy().tobytes()), mirrored.get(view.numpy().tobytes())) for view in views]
    assert sorted(p if p is not None else m for p, m in seen) == list(range(len(originals)))
    return {m for p, m in seen if p is None}


def test_alternate_hflip_mirrors_a_seeded_half_then_every_image_on_odd_epochs(tmp_path):
    path = str(write_report_pickle(tmp_path / "d", report_records(30, (5, 6, 3), [0, 1]),
                                   report_records(4, (5, 6, 3), [0, 1])))
    data = PickledImageDataModule(path, batch_size=10, val_split=0, hflip="alternate", split_seed=3)
    model = ConvBNNet(num_classes=2, image_shape=data.image_shape, widths=[4])
    views = RecordTrainingViews()
    L.Trainer(max_epochs=3, callbacks=[views], logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, datamodule=data)
    originals = data.data.train[0]
    first, second, third = (mirrored_indices(views.views[epoch], originals) for epoch in range(3))
    assert len(first) == 15 and third == first
    assert second == set(range(30)) - first

    def seeded_half(split_seed: int) -> set[int]:
        again = PickledImageDataModule(path, batch_size=10, val_split=0, hflip="alternate", split_seed=split_seed)
        return mirrored_indices([view for images, _ in again.train_dataloader() for view in images], originals)

    assert seeded_half(3) == first
    assert seeded_half(4) != first
    assert torch.equal(originals, PickledImageDataModule(path, val_split=0).data.train[0])  # prepared: untouched


def test_cli_fits_with_alternate_mirroring_and_reflected_translation(tmp_path):
    fitted = run("fit", "digits", tmp_path, "--data.hflip", "alternate", "--data.translate", "2",
                 "--data.translate_padding", "reflect", "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "2", "--test_after_fit", "false")
    assert fitted.datamodule.hflip == "alternate" and fitted.datamodule.translate_padding == "reflect"
    assert fitted.trainer.global_step == 2
