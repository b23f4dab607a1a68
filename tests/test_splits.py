"""The validation split is stratified; k-fold cross-validation is stratified, seeded and covers every image once."""

import numpy as np
import pytest
import torch

from cnnclf.data import MNISTDataModule, ORLDataModule
from cnnclf.errors import ConfigError, DatasetError
from tests.conftest import report_records, write_report_pickle


def per_class(targets: torch.Tensor, classes: int) -> list[int]:
    return np.bincount(targets.numpy(), minlength=classes).tolist()


def test_the_validation_split_keeps_each_class_share(tiny_data):
    mnist = MNISTDataModule(str(tiny_data["mnist"]), val_split=0.25)  # 20 images per digit
    assert per_class(mnist.data.val[1], 10) == [5] * 10
    # ORL's 10% holds out fewer faces than there are people (12 of 120, 40 people): no person twice.
    orl = ORLDataModule(str(tiny_data["orl"]), val_split=0.1)
    assert max(per_class(orl.data.val[1], 40)) == 1 and len(orl.data.val[1]) == 12


def test_a_class_whose_images_would_all_be_held_out_is_named(tmp_path):
    records = report_records(100, (28, 28), [0, 1, 2]) + report_records(1, (28, 28), [7])
    path = write_report_pickle(tmp_path / "MNIST", records, report_records(10, (28, 28), [0, 1, 2]))
    with pytest.raises(DatasetError, match="label 7 has 1 training image\\(s\\), all held out by val_split=0.6"):
        MNISTDataModule(str(path), val_split=0.6).setup()
    with pytest.raises(DatasetError, match="label 7 has 1 training images, fewer than folds=2"):
        MNISTDataModule(str(path), folds=2).setup()


def test_folds_are_stratified_seeded_and_cover_every_training_image_once(tiny_data):
    folds = [MNISTDataModule(str(tiny_data["mnist"]), folds=4, fold=fold, split_seed=3) for fold in range(4)]
    validated = [image.numpy().tobytes() for fold in folds for image in fold.data.val[0]]
    assert len(validated) == len(set(validated)) == 200  # each image validates in exactly one fold
    for fold in folds:
        assert per_class(fold.data.val[1], 10) == [5] * 10 and len(fold.data.train[1]) == 150
    again = MNISTDataModule(str(tiny_data["mnist"]), folds=4, fold=1, split_seed=3)
    other = MNISTDataModule(str(tiny_data["mnist"]), folds=4, fold=1, split_seed=4)
    assert torch.equal(again.data.val[0], folds[1].data.val[0])
    assert not torch.equal(other.data.val[0], folds[1].data.val[0])


@pytest.mark.parametrize(("folds", "fold"), [(1, 0), (5, 5), (5, -1), (0, 2)])
def test_bad_fold_settings_are_one_line_errors(tiny_data, folds, fold):
    with pytest.raises(ConfigError, match=f"found folds={folds}, fold={fold}"):
        MNISTDataModule(str(tiny_data["mnist"]), folds=folds, fold=fold)
