"""The dataset cache: the same arrays as a fresh read, and never stale."""

import os

import numpy as np
import pytest

from cnnclf.data import MNISTDataModule
from cnnclf.data.convert import cache_entry
from tests.conftest import report_records, write_report_pickle


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCLF_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def arrays(path, cache=True):
    data = MNISTDataModule(str(path), val_split=0, cache=cache).data
    return data.train[0].numpy(), data.train[1].numpy(), data.test[0].numpy()


def test_a_cached_load_gives_the_arrays_of_a_fresh_read(cache, tiny_data):
    fresh = arrays(tiny_data["mnist"], cache=False)
    assert not cache.exists()
    first, second = arrays(tiny_data["mnist"]), arrays(tiny_data["mnist"])
    assert len(list(cache.glob("*.npz"))) == 1
    for a, b, c in zip(fresh, first, second, strict=True):
        assert a.dtype == b.dtype == c.dtype and np.array_equal(a, b) and np.array_equal(a, c)


def test_a_changed_file_is_read_again_and_its_stale_entry_removed(cache, tmp_path):
    path = write_report_pickle(tmp_path / "MNIST", report_records(20, (28, 28), list(range(10))),
                               report_records(10, (28, 28), list(range(10))))
    before = arrays(path)
    stat = path.stat()
    # Same size and modification time, different pixels: the content fingerprint still sees it.
    write_report_pickle(path, report_records(20, (28, 28), list(range(10)), seed=5),
                        report_records(10, (28, 28), list(range(10))))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    after = arrays(path)
    assert not np.array_equal(before[0], after[0])
    assert np.array_equal(after[0], arrays(path, cache=False)[0])
    assert len(list(cache.glob("*.npz"))) == 1


def test_a_damaged_entry_is_rebuilt(cache, tiny_data):
    expected = arrays(tiny_data["mnist"], cache=False)
    arrays(tiny_data["mnist"])
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    assert np.array_equal(arrays(tiny_data["mnist"])[0], expected[0])


def test_the_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNCLF_CACHE_DIR", str(tmp_path / "own"))
    assert cache_entry(tmp_path / "MNIST", "digest").parent == tmp_path / "own"
    monkeypatch.delenv("CNNCLF_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_entry(tmp_path / "MNIST", "digest").parent == tmp_path / "cnnclf"


@pytest.mark.parametrize("edit", ["labels_99_and_short", "nan_images", "bool_images", "3d_images"])
def test_an_edited_entry_is_checked_like_a_fresh_read_and_rebuilt(cache, tiny_data, edit):
    expected = arrays(tiny_data["mnist"], cache=False)
    arrays(tiny_data["mnist"])
    (entry,) = cache.glob("*.npz")
    with np.load(entry) as stored:
        content = dict(stored)
    images, labels = content["train_images"], content["train_labels"]
    content["train_labels"], content["train_images"] = {
        "labels_99_and_short": (np.full(len(labels) - 1, 99), images),
        "nan_images": (labels, np.full(images.shape, np.nan, np.float32)),
        "bool_images": (labels, images > 0),
        "3d_images": (labels, images[..., 0]),
    }[edit]
    with entry.open("wb") as stream:
        np.savez(stream, **content)

    for got, want in zip(arrays(tiny_data["mnist"]), expected, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    with np.load(entry) as rebuilt:
        assert np.array_equal(rebuilt["train_labels"], labels)


def test_an_edit_inside_the_file_with_its_times_set_back_is_read_again(cache, tmp_path):
    """The edges the fingerprint reads and the size and modification time are all unchanged;
    the change time is not (``touch`` cannot set it)."""
    path = write_report_pickle(tmp_path / "MNIST", report_records(4000, (28, 28), list(range(10))),
                               report_records(10, (28, 28), list(range(10))))
    before = arrays(path)
    stat, data = path.stat(), bytearray(path.read_bytes())
    middle = len(data) // 2
    assert 2**20 < middle < len(data) - 2**20
    data[middle] = (data[middle] + 1) % 256  # a pixel of an image in the middle
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    after = arrays(path)
    assert not np.array_equal(before[0], after[0])
    assert np.array_equal(after[0], arrays(path, cache=False)[0])


def _entry(cache):
    (entry,) = cache.glob("*.npz")
    return entry


def test_an_entry_rewritten_with_other_images_is_refused(cache, tmp_path):
    """1000 other images in the entry of a file of 4: more arrays than such a file can give."""
    path = write_report_pickle(tmp_path / "MNIST", report_records(4, (28, 28), list(range(4))),
                               report_records(4, (28, 28), list(range(4))))
    expected = arrays(path, cache=False)
    arrays(path)
    entry = _entry(cache)
    with np.load(entry) as stored:
        content = dict(stored)
    content["test_images"] = np.zeros((1000, 28, 28, 1), np.uint8)
    content["test_labels"] = np.zeros(1000, np.int64)
    np.savez(entry, **content)
    data = MNISTDataModule(str(path), val_split=0).data
    assert len(data.test[1]) == 4 and np.array_equal(data.train[0].numpy(), expected[0])


@pytest.mark.parametrize("damage", ["header_of_10_GB", "deflate_bomb"])
def test_an_entry_that_would_allocate_gigabytes_is_a_miss(cache, tiny_data, damage):
    import zipfile

    expected = arrays(tiny_data["mnist"], cache=False)
    arrays(tiny_data["mnist"])
    entry = _entry(cache)
    with np.load(entry) as stored:
        content = dict(stored)
    with zipfile.ZipFile(entry, "w", zipfile.ZIP_DEFLATED if damage == "deflate_bomb" else zipfile.ZIP_STORED) as zf:
        for name, array in content.items():
            if name == "train_images" and damage == "header_of_10_GB":
                header = {"descr": "|u1", "fortran_order": False, "shape": (10**10 // 784, 28, 28, 1)}
                with zf.open(f"{name}.npy", "w") as stream:
                    np.lib.format.write_array_header_1_0(stream, header)
                    stream.write(array.tobytes())
            elif name == "train_images":
                with zf.open(f"{name}.npy", "w", force_zip64=True) as stream:  # 200 MB of zeros in a few KB
                    np.lib.format.write_array_header_1_0(stream, {"descr": "|u1", "fortran_order": False,
                                                                  "shape": (2 * 10**8 // 784, 28, 28, 1)})
                    for _ in range(200):
                        stream.write(bytes(10**6))
            else:
                with zf.open(f"{name}.npy", "w") as stream:
                    np.lib.format.write_array(stream, array)
    assert entry.stat().st_size < 2**20
    assert np.array_equal(arrays(tiny_data["mnist"])[0], expected[0])


def test_a_file_name_with_glob_characters_is_cached(cache, tiny_data, tmp_path):
    path = tmp_path / "MNIST**[x]"
    path.write_bytes(tiny_data["mnist"].read_bytes())
    first, second = arrays(path), arrays(path)
    assert np.array_equal(first[0], second[0]) and len(list(cache.iterdir())) == 1
