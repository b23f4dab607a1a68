"""Unpickling refuses everything but numpy arrays and plain data, and never runs a payload."""

import gzip
import os
import pickle

import numpy as np
import pytest

from cnnclf.data import DatasetError, load_pickle, read_pickled_dataset


class _CallOnLoad:
    """Pickles as ``func(*args)``: what an attacker's file would contain."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(sentinel):
    import builtins
    import importlib
    import posix
    import subprocess

    command = f"touch {sentinel}"
    return {
        "os.system": _CallOnLoad(os.system, command),
        "posix.system": _CallOnLoad(posix.system, command),
        "builtins.eval": _CallOnLoad(builtins.eval, f"open({str(sentinel)!r}, 'w')"),
        "subprocess.Popen": _CallOnLoad(subprocess.Popen, ["touch", str(sentinel)]),
        "importlib.import_module": _CallOnLoad(importlib.import_module, "this"),
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("name", ["os.system", "posix.system", "builtins.eval", "subprocess.Popen",
                                  "importlib.import_module"])
def test_payload_is_refused_and_never_runs(tmp_path, name, protocol):
    sentinel = tmp_path / "pwned"
    payload = _payloads(sentinel)[name]
    module, function = payload.func.__module__, payload.func.__name__
    path = tmp_path / "evil.pkl"
    record = {"image": np.zeros((2, 2), np.uint8), "label": payload}
    path.write_bytes(pickle.dumps({"train": [record], "test": [dict(record)]}, protocol=protocol))

    with pytest.raises(DatasetError) as error:
        load_pickle(path)

    assert not sentinel.exists()
    assert str(path) in str(error.value)
    assert f"{module}.{function}" in str(error.value) or function in str(error.value)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, np.float64])
def test_numpy_arrays_and_scalars_round_trip(tmp_path, protocol, dtype):
    image = (np.arange(24).reshape(2, 4, 3) % 7).astype(dtype)
    content = {"train": [{"image": image, "label": np.int64(3)}, {"image": image.T.copy(), "label": 4}]}
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(content, protocol=protocol))

    loaded = load_pickle(path)

    np.testing.assert_array_equal(loaded["train"][0]["image"], image)
    assert loaded["train"][0]["image"].dtype == dtype
    assert loaded["train"][0]["label"] == 3 and isinstance(loaded["train"][0]["label"], np.int64)
    np.testing.assert_array_equal(loaded["train"][1]["image"], image.T)


def test_numpy_1_module_paths_are_accepted(tmp_path):
    """Files written with numpy 1.x name numpy.core.multiarray, not numpy._core."""
    data = pickle.dumps(np.arange(6, dtype=np.int64).reshape(2, 3), protocol=2)
    old_style = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old_style != data
    path = tmp_path / "old.pkl"
    path.write_bytes(old_style)
    np.testing.assert_array_equal(load_pickle(path), np.arange(6).reshape(2, 3))


def test_codecs_encode_with_another_codec_is_refused(tmp_path):
    import _codecs

    path = tmp_path / "codec.pkl"
    path.write_bytes(pickle.dumps(_CallOnLoad(_codecs.encode, "abc", "rot13"), protocol=2))
    with pytest.raises(DatasetError, match="rot13"):
        load_pickle(path)


@pytest.mark.parametrize("content", [b"", b"\x80\x04\x95", b"not a pickle at all", b"PK\x03\x04zipdata"],
                         ids=["empty", "truncated", "text", "zip"])
def test_unreadable_files_give_one_clear_error(tmp_path, content):
    path = tmp_path / "broken"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=str(path)):
        read_pickled_dataset(path)


def test_a_file_that_is_no_pickle_says_how_it_begins(tmp_path):
    path = tmp_path / "photo.pkl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DatasetError, match=r"photo.pkl: .*it begins with b'\\x89PNG\\r\\n\\x1a\\n', and a"):
        read_pickled_dataset(path)


def test_truncated_real_pickle(tmp_path):
    full = pickle.dumps({"train": [{"image": np.zeros((28, 28)), "label": 1}] * 5}, protocol=4)
    path = tmp_path / "cut"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        read_pickled_dataset(path)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        read_pickled_dataset(tmp_path / "nope")


def test_a_folder_given_for_a_dataset_file_names_the_pickles_in_it(tmp_path):
    for name in ["MNIST", "ORL", "CIFAR", "a.pkl", "b.pickle", "c"]:
        (tmp_path / name).write_bytes(pickle.dumps({"train": [], "test": []}, protocol=4))
    (tmp_path / "README.txt").write_text("the seed pickles")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DatasetError, match=f"^{tmp_path}: a folder, not a pickle file; pickles in it: CIFAR, MNIST, "
                                           "ORL, a.pkl, b.pickle, ...; set --data.path to a pickle in the report's "
                                           "format$"):
        read_pickled_dataset(tmp_path)
    with pytest.raises(DatasetError, match="sub: a folder, not a pickle file; set --data.path"):
        read_pickled_dataset(tmp_path / "sub")


def _npz(path):
    np.savez(path, images=np.zeros((2, 3)))
    return path.with_suffix(".npz").read_bytes()


@pytest.mark.parametrize(("write", "message"), [
    (_npz, "a zip archive \\(such as numpy's .npz\\), not a pickle"),
    (lambda path: gzip.compress(pickle.dumps({"train": [], "test": []})), "gzip-compressed: decompress it first"),
    (lambda path: np.save(path.with_suffix(".npy"), np.zeros(3)) or path.with_suffix(".npy").read_bytes(),
     "a numpy .npy array, not a pickle"),
], ids=["npz", "gzip", "npy"])
def test_a_file_of_another_format_is_named_as_such(tmp_path, write, message):
    path = tmp_path / "dataset"
    path.write_bytes(write(tmp_path / "made"))
    with pytest.raises(DatasetError, match=f"^{path}: {message}"):
        read_pickled_dataset(path)
