"""Validation of report-format content: what real files hold is accepted, the rest named precisely."""

import numpy as np
import pytest
import torch

from cnnclf.data import DatasetError, read_pickled_dataset
from tests.conftest import report_records, write_report_pickle


def _write(tmp_path, train, test=None, protocol=4):
    """A pickle of ``train``; its test split is one record of the first training image's shape."""
    if test is None:
        image = train[0].get("image") if isinstance(train, list) and train else None
        test = [{"image": np.zeros(getattr(image, "shape", (4, 4)), np.uint8), "label": 0}]
    return write_report_pickle(tmp_path / "data", train, test, protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_int64_gray_images_become_uint8_hwc(tmp_path, protocol):
    path = _write(tmp_path, report_records(12, (28, 28), list(range(3)), np.int64), protocol=protocol)
    splits = read_pickled_dataset(path)
    assert splits["train"].images.shape == (12, 28, 28, 1)
    assert splits["train"].images.dtype == np.uint8
    assert splits["train"].labels.dtype == np.int64
    assert splits["train"].labels.tolist() == [0, 1, 2] * 4


def test_float_images_outside_byte_range_stay_float(tmp_path):
    train = [{"image": np.full((3, 3, 3), -0.5, np.float64), "label": np.int32(1)}]
    split = read_pickled_dataset(_write(tmp_path, train))["train"]
    assert split.images.dtype == np.float32 and split.images.shape == (1, 3, 3, 3)
    assert split.labels.tolist() == [1]


def test_values_are_kept_exactly(tmp_path):
    records = report_records(5, (8, 6, 3), [1, 2], np.int64)
    split = read_pickled_dataset(_write(tmp_path, records))["train"]
    np.testing.assert_array_equal(split.images, np.stack([r["image"] for r in records]))


GOOD = {"image": np.zeros((4, 4), np.uint8), "label": 0}


@pytest.mark.parametrize(("content", "expected"), [
    ([GOOD, {"image": np.zeros((4, 4), np.uint8)}], r"split 'train', record 1: expected a dict with keys"),
    ([GOOD, {"image": [[1, 2]], "label": 0}], r"record 1: 'image' must be a numpy array, found list"),
    ([GOOD, {"image": np.zeros((4, 4), object), "label": 0}], r"not a safe dataset pickle: dtype: dtype 'O8'"),
    ([GOOD, {"image": np.zeros((4, 4), bool), "label": 0}], r"record 1: 'image' must hold integers"),
    ([GOOD, {"image": np.zeros((4, 5), np.uint8), "label": 0}], r"record 1: image is uint8\[4, 5\]"),
    ([GOOD, {"image": np.zeros((4, 4), np.int64), "label": 0}], r"record 1: image is int64\[4, 4\]"),
    ([GOOD, {"image": np.zeros(16, np.uint8), "label": 0}], r"record 1: 'image' must be \(H, W\)"),
    ([GOOD, {"image": np.zeros((4, 4), np.uint8), "label": 1.0}], r"record 1: 'label' must be an integer"),
    ([GOOD, {"image": np.zeros((4, 4), np.uint8), "label": "3"}], r"record 1: 'label' must be an integer"),
    ([GOOD, {"image": np.zeros((4, 4), np.uint8), "label": True}], r"record 1: 'label' must be an integer"),
    ([], r"split 'train': the split is empty"),
    ("records", r"split 'train': expected a list of records, found str"),
])
def test_bad_records_are_named(tmp_path, content, expected):
    path = _write(tmp_path, content)
    with pytest.raises(DatasetError, match=expected) as error:
        read_pickled_dataset(path)
    assert str(path) in str(error.value)


def test_non_finite_values_name_the_record(tmp_path):
    images = [np.zeros((2, 2), np.float32) for _ in range(4)]
    images[2][0, 1] = np.nan
    path = _write(tmp_path, [{"image": image, "label": 0} for image in images])
    with pytest.raises(DatasetError, match="split 'train', record 2: image holds NaN"):
        read_pickled_dataset(path)


def test_top_level_must_have_both_splits(tmp_path):
    import pickle

    path = tmp_path / "data"
    path.write_bytes(pickle.dumps({"train": [GOOD], "validation": [dict(GOOD)]}))
    with pytest.raises(DatasetError, match=r"expected a dict with keys 'train' and 'test', found dict with keys "
                                           r"\['train', 'validation'\]$"):
        read_pickled_dataset(path)
    path.write_bytes(pickle.dumps([GOOD]))
    with pytest.raises(DatasetError, match="expected a dict with keys 'train' and 'test', found list"):
        read_pickled_dataset(path)


def test_test_split_is_checked_too(tmp_path):
    path = _write(tmp_path, [GOOD], test=[{"image": np.zeros((4, 4), np.uint8), "label": None}])
    with pytest.raises(DatasetError, match="split 'test', record 0: 'label' must be an integer"):
        read_pickled_dataset(path)


def test_more_classes_than_allowed_are_refused_before_anything_is_built(tmp_path, monkeypatch):
    path = _write(tmp_path, report_records(12, (2, 2), list(range(12))))
    monkeypatch.setenv("CNNCLF_MAX_CLASSES", "11")
    with pytest.raises(DatasetError, match=f"^{path}: the number of distinct labels \\(classes\\): 12, more than the "
                                           "11 cnnclf allows \\(set CNNCLF_MAX_CLASSES to raise it\\)$"):
        read_pickled_dataset(path)
    monkeypatch.setenv("CNNCLF_MAX_CLASSES", "12")
    assert len(read_pickled_dataset(path)["train"]) == 12


@pytest.mark.parametrize("value", ["many", "\u00b2", ""])
def test_a_limit_variable_that_is_no_whole_number_is_named(tmp_path, monkeypatch, value):
    """The channel and class limits are read in the reader process: its message is the one line."""
    path = _write(tmp_path, report_records(2, (2, 2), [0, 1]))
    monkeypatch.setenv("CNNCLF_MAX_CLASSES", value)
    with pytest.raises(DatasetError, match=f"^CNNCLF_MAX_CLASSES must be a whole number, found {value!r}$"):
        read_pickled_dataset(path)


def test_more_channels_than_allowed_are_refused(tmp_path):
    """A 2 MB file of (1, 1, 1000000) images hung in the per-channel statistics; 65 channels is enough to refuse."""
    path = _write(tmp_path, report_records(2, (1, 1, 65), [0, 1]))
    with pytest.raises(DatasetError, match="the images' channels: 65, more than the 64 cnnclf allows"):
        read_pickled_dataset(path)


def test_the_channel_statistics_are_each_channels_mean_and_std(tmp_path):
    from cnnclf.data import PickledImageDataModule

    rng = np.random.default_rng(0)
    records = [{"image": (rng.normal(1e6, 3, (5, 4, 7)) * [1, 2, 0, 1, 1, 1, 1]).astype(np.float64), "label": i % 2}
               for i in range(30)]
    data = PickledImageDataModule(str(_write(tmp_path, records)), val_split=0, cache=False)
    images = data.data.train[0].to(torch.float64)
    mean, std = data.channel_stats
    np.testing.assert_allclose(mean, images.mean(dim=(0, 2, 3)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(std, images.std(dim=(0, 2, 3)).clamp(min=1e-6).numpy(), rtol=1e-9)
    assert std[2] == 1e-6  # a constant channel
