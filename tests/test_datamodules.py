"""DataModules: shapes, the ORL label shift, splits, normalization, and in-memory batches."""

import numpy as np
import pytest
import torch

from cnnclf.argv import config_path
from cnnclf.data import (
    CIFARDataModule,
    DatasetError,
    DigitsDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    ORLDataModule,
    PickledImageDataModule,
)
from cnnclf.data.batches import EpochOrder, TensorBatches
from cnnclf.errors import ConfigError
from tests.conftest import report_records, write_report_pickle


def test_mnist_is_1x28x28_uint8_with_10_classes(tiny_data):
    data = MNISTDataModule(str(tiny_data["mnist"]), val_split=0.1)
    assert data.image_shape == [1, 28, 28] and data.num_classes == 10
    images, targets = data.data.train
    assert images.dtype == torch.uint8 and images.shape == (180, 1, 28, 28)
    assert len(data.data.val[1]) == 20 and len(data.data.test[1]) == 50
    assert data.class_names == [str(d) for d in range(10)]


def test_orl_labels_shift_to_zero_and_names_keep_1_to_40(tiny_data):
    data = ORLDataModule(str(tiny_data["orl"]), val_split=0)
    images, targets = data.data.train
    assert images.shape == (120, 3, 112, 92)
    assert targets.min().item() == 0 and targets.max().item() == 39
    assert targets[:3].tolist() == [0, 1, 2]  # labels 1, 2, 3
    assert data.class_names == [str(label) for label in range(1, 41)]
    assert not data.has_validation


def test_orl_gray_channel_and_resize(tiny_data):
    data = ORLDataModule(str(tiny_data["orl"]), channels=1, resize=[92, 92])
    assert data.image_shape == [1, 92, 92]
    assert data.data.train[0].dtype == torch.uint8


def test_orl_rejects_bad_options(tiny_data):
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        ORLDataModule(str(tiny_data["orl"]), channels=2)
    with pytest.raises(ConfigError, match="resize"):
        ORLDataModule(str(tiny_data["orl"]), resize=[92])


def test_channel_permutation_keeps_pixels(tmp_path):
    records = report_records(4, (5, 6, 3), [0, 1])
    path = write_report_pickle(tmp_path / "d", records, [dict(record) for record in records])
    data = PickledImageDataModule(str(path), val_split=0)
    hwc = torch.from_numpy(np.stack([r["image"] for r in records]))
    assert torch.equal(data.data.test[0], hwc.permute(0, 3, 1, 2))


def test_cifar_class_names_and_shape(tiny_data):
    data = CIFARDataModule(str(tiny_data["cifar"]))
    assert data.image_shape == [3, 32, 32]
    assert data.class_names[0] == "airplane" and len(data.class_names) == 10


def test_wrong_file_for_the_dataset_is_named(tiny_data):
    with pytest.raises(DatasetError, match=r"MNISTDataModule expects images of shape \[28, 28, 1\]"):
        MNISTDataModule(str(tiny_data["cifar"])).setup()


def test_label_outside_the_dataset_range_is_refused(tmp_path):
    records = report_records(3, (28, 28), [0, 1, 12])
    path = write_report_pickle(tmp_path / "d", records, [dict(record) for record in records])
    with pytest.raises(DatasetError, match="split 'train', record 2: label 12 is not one of the 10 labels"):
        MNISTDataModule(str(path)).setup()


def test_generic_module_infers_classes(tmp_path):
    path = write_report_pickle(tmp_path / "d", report_records(30, (6, 6), [3, 7, 11]),
                               report_records(6, (6, 6), [3, 7, 11]))
    data = PickledImageDataModule(str(path), val_split=0)
    assert data.num_classes == 3 and data.class_names == ["3", "7", "11"]
    assert sorted(set(data.data.train[1].tolist())) == [0, 1, 2]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no such file; set --data.path"):
        MNISTDataModule(str(tmp_path / "MNIST")).setup()
    with pytest.raises(DatasetError, match="a folder, not a pickle file; set --data.path"):
        MNISTDataModule(str(tmp_path)).setup()


@pytest.mark.parametrize(("val_split", "expected"), [(0.25, 50), (7, 7), (0, 0)])
def test_validation_split_is_seeded_and_disjoint(tiny_data, val_split, expected):
    first = MNISTDataModule(str(tiny_data["mnist"]), val_split=val_split, split_seed=3)
    again = MNISTDataModule(str(tiny_data["mnist"]), val_split=val_split, split_seed=3)
    other = MNISTDataModule(str(tiny_data["mnist"]), val_split=val_split, split_seed=4)
    assert len(first.data.val[1]) == expected
    assert len(first.data.train[1]) + expected == 200
    assert torch.equal(first.data.val[0], again.data.val[0])
    if expected:
        assert not torch.equal(first.data.val[0], other.data.val[0])
        train_rows = {row.numpy().tobytes() for row in first.data.train[0]}
        assert not any(row.numpy().tobytes() in train_rows for row in first.data.val[0])


def test_bad_split_and_batch_size(tiny_data):
    with pytest.raises(ConfigError, match="batch sizes must be positive"):
        MNISTDataModule(str(tiny_data["mnist"]), batch_size=-1)
    with pytest.raises(DatasetError, match="leaves no training images"):
        MNISTDataModule(str(tiny_data["mnist"]), val_split=200).setup()


def test_normalization_stats_come_from_the_training_split(tiny_data):
    data = CIFARDataModule(str(tiny_data["cifar"]))
    train = data.data.train[0].double()
    expected_mean = train.mean(dim=(0, 2, 3)).tolist()
    assert data.input_mean == pytest.approx(expected_mean)
    assert data.input_std == pytest.approx(train.permute(1, 0, 2, 3).flatten(1).std(dim=1).tolist())
    assert CIFARDataModule(str(tiny_data["cifar"]), normalize=False).input_mean is None


def test_digits_ship_with_scikit_learn():
    data = DigitsDataModule(val_split=0.1)
    assert data.image_shape == [1, 8, 8] and data.num_classes == 10
    total = sum(len(split[1]) for split in (data.data.train, data.data.val, data.data.test))
    assert total == 1797
    assert data.data.train[0].max().item() == 255


def test_batches_cover_every_sample_once_in_a_seeded_order():
    images, labels = torch.arange(10).view(10, 1, 1, 1), torch.arange(10)
    order = EpochOrder(10, shuffle=True, seed=5)
    batches = TensorBatches(images, labels, batch_size=4, sampler=order)
    assert len(batches) == 3
    epoch0 = torch.cat([y for _, y in batches])
    assert sorted(epoch0.tolist()) == list(range(10))
    assert torch.equal(torch.cat([y for _, y in batches]), epoch0)  # same epoch, same order
    order.set_epoch(1)
    assert not torch.equal(torch.cat([y for _, y in batches]), epoch0)
    for x, y in batches:
        assert torch.equal(x.view(-1), y)


def test_distributed_shards_are_disjoint_and_complete_for_evaluation():
    shards = [EpochOrder(11, shuffle=False, seed=0, rank=rank, world_size=2).indices() for rank in (0, 1)]
    assert sorted(torch.cat(shards).tolist()) == list(range(11))


def test_distributed_training_shards_are_equal_sized():
    shards = [EpochOrder(11, shuffle=True, seed=0, rank=rank, world_size=2, drop_uneven=True)
              for rank in (0, 1)]
    assert [len(shard) for shard in shards] == [5, 5]
    assert not set(shards[0].indices().tolist()) & set(shards[1].indices().tolist())


def test_paths_beginning_with_a_tilde_are_read_from_the_home_folder(tiny_data, tmp_path, monkeypatch):
    """`--data.path=~/x` and `--config=~/x.yaml` reach cnnclf unexpanded: no shell expands a ~ after =."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "MNIST").write_bytes(tiny_data["mnist"].read_bytes())
    assert MNISTDataModule("~/MNIST", cache=False).data.test[1].numel() > 0
    (tmp_path / "run.yaml").write_text("trainer:\n  max_epochs: 1\n")
    assert config_path("~/run.yaml") == str(tmp_path / "run.yaml")
    assert ImageFolderDataModule("~/photos").root == tmp_path / "photos"


def test_a_class_in_the_test_split_only_is_named(tmp_path, capsys):
    path = write_report_pickle(tmp_path / "odd.pkl", report_records(20, (8, 8), [0, 1]),
                               report_records(6, (8, 8), [0, 1, 7]))
    data = PickledImageDataModule(str(path), cache=False)
    assert data.num_classes == 3
    assert f"{path}: class(es) 7 in the test split only: no training image teaches them" in capsys.readouterr().err
