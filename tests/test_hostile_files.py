"""Small hostile dataset files: each ends in one line naming the file, never a crash, hang,
memory bomb or traceback.

The files that crashed or hung the interpreter, or allocated gigabytes, are read in one child
process with a time limit, so a regression fails these tests instead of killing or hanging
the test run; the child reports each file's message and its own peak memory (each file is
unpickled in a reader process of its own, whose address space ``cnnclf.data.convert`` limits).
"""

import io
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnclf.checkpoints import SafeCheckpointIO, read_checkpoint
from cnnclf.data import DatasetError, read_pickled_dataset
from tests.conftest import CONFIGS, report_records, write_report_pickle
from tests.test_cli import run

MARKER = 0x5EED5EED  # a label whose pickled bytes are replaced by the hostile opcodes
PEAK_MEMORY_MB = 1500  # the child imports torch (about 500 MB); every bomb below asks for 1.6 to 6 GB


def _with_label(label_opcodes: bytes, image: np.ndarray | None = None) -> bytes:
    """A protocol-2 dataset (no frames, so bytes can be swapped) whose first training label is
    whatever ``label_opcodes`` push."""
    image = np.zeros((4, 4), np.uint8) if image is None else image
    content = {"train": [{"image": image, "label": MARKER}], "test": [{"image": np.zeros((4, 4), np.uint8),
                                                                        "label": 0}]}
    data = pickle.dumps(content, protocol=2)
    marker = b"J" + MARKER.to_bytes(4, "little")
    assert data.count(marker) == 1
    return data.replace(marker, label_opcodes)


def _with_image(image_opcodes: bytes) -> bytes:
    marker = b"X\x0b\x00\x00\x00IMAGEMARKER"
    data = pickle.dumps({"train": [{"image": "IMAGEMARKER", "label": 0}],
                         "test": [{"image": np.zeros((4, 4), np.uint8), "label": 0}]}, protocol=2)
    return data.replace(marker, image_opcodes)


def _int(value: int) -> bytes:
    return b"J" + value.to_bytes(4, "little", signed=True)


def _shape(*sizes: int) -> bytes:
    return b"(" + b"".join(map(_int, sizes)) + b"t"


NDARRAY = b"cnumpy\nndarray\n"
DEEP = 200_000


def _deep_tuple_key() -> bytes:
    """A record whose extra key is a tuple nested 200,000 deep: hashing it overflowed the C stack."""
    data = pickle.dumps({"train": [{"image": np.zeros((4, 4), np.uint8), "label": 0, "KEYMARKER": 1}],
                         "test": [{"image": np.zeros((4, 4), np.uint8), "label": 0}]}, protocol=2)
    return data.replace(b"X\x09\x00\x00\x00KEYMARKER", b")" + b"\x85" * DEEP)


def _tuple_graph_key() -> bytes:
    """t = (t, t) 90 times through the memo, as a dict key: hashing it never ends."""
    graph = b")q\x00" + b"".join(b"h%c\x86q%c" % (i, i + 1) for i in range(90))
    data = pickle.dumps({"train": [{"image": np.zeros((4, 4), np.uint8), "label": 0, "KEYMARKER": 1}],
                         "test": [{"image": np.zeros((4, 4), np.uint8), "label": 0}]}, protocol=2)
    return data.replace(b"X\x09\x00\x00\x00KEYMARKER", graph)


def _shared_image(records: int = 6000) -> bytes:
    """One 1 MB image in every record, shared through the memo: 6 GB once each record is copied."""
    image = np.zeros((1000, 1000), np.uint8)
    return pickle.dumps({"train": [{"image": image, "label": 0} for _ in range(records)],
                         "test": [{"image": image, "label": 0}]}, protocol=4)


# name: (file content, what the one-line error must say)
CRASHING_FILES = {
    # ndarray((), "O", b"AAAAAAAA"): an object array whose pointer is 8 bytes of the file
    "object_array_label": (_with_label(NDARRAY + b"(" + b")" + b"X\x01\x00\x00\x00O" + b"C\x08AAAAAAAAtR"),
                           "numpy.ndarray may only be named as the subtype"),
    "deep_tuple_key": (_deep_tuple_key(), "it crashed the reader (SIGSEGV)"),
    "deep_list_label": (_with_label(b"(" * DEEP + b"l" * DEEP), "'label' must be an integer, found list"),
    "tuple_graph_key": (_tuple_graph_key(), "reading it took more than 10 s"),
    # L = [L, L] 30 times through the memo, as a label: the error message's repr grew without end
    "list_graph_label": (_with_label(b"(" * 30 + b"]q\x00" + b"".join(b"h%clq%c" % (i, i + 1) for i in range(30))),
                         "not a readable pickle"),
    # ndarray((40000, 40000), "u1", one byte, 0, strides (0, 0)): 1.6 GB per record once copied
    "zero_stride_image": (_with_image(NDARRAY + b"(" + _shape(40000, 40000) + b"X\x02\x00\x00\x00u1C\x01\x00"
                                      + b"K\x00" + _shape(0, 0) + b"tR"), "numpy.ndarray may only be named"),
    "uninitialized_45000x45000": (_with_image(b"cnumpy._core.multiarray\n_reconstruct\n" + NDARRAY
                                              + _shape(45000, 45000) + b"C\x01b\x87R"),
                                  "_reconstruct only starts an empty numpy.ndarray"),
    "shared_image": (_shared_image(), "cnnclf gives a file of its size (split 'train': 6000 images of 1000000 bytes"),
    # LONG_BINPUT 2**28 in a 12-byte file: the unpickler grew its memo to 4 GB
    "far_memo_index": (b"\x80\x02K\x00r\x00\x00\x00\x10.", "it needs more than the 256 MiB cnnclf gives"),
}

CHILD = """
import json, re, sys
from pathlib import Path
from cnnclf.data import DatasetError, read_pickled_dataset
for path in sys.argv[1:]:
    try:
        read_pickled_dataset(path)
        message = "loaded"
    except DatasetError as error:
        message = str(error)
    print(json.dumps({"path": path, "message": message}), flush=True)
# VmHWM starts afresh at exec; ru_maxrss keeps the forking test process's own peak
peak_kb = int(re.search(r"VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"peak_mb": peak_kb / 1024}), flush=True)
"""


@pytest.fixture(scope="module")
def crashing_results(tmp_path_factory) -> dict:
    """Each crashing file's message, read by one child process with a time limit, and its peak memory."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = []
    for name, (content, _) in CRASHING_FILES.items():
        (folder / name).write_bytes(content)
        paths.append(str(folder / name))
    try:
        child = subprocess.run([sys.executable, "-c", CHILD, *paths], capture_output=True, text=True, timeout=120,
                               cwd=Path(__file__).resolve().parents[1])
        lines, ending = child.stdout.splitlines(), f"exit status {child.returncode}: {child.stderr[-500:]}"
    except subprocess.TimeoutExpired as timeout:
        lines, ending = (timeout.stdout or b"").decode().splitlines(), "hung: killed after 120 s"
    results = [json.loads(line) for line in lines if line.startswith("{")]
    return {"messages": {Path(r["path"]).name: r["message"] for r in results if "path" in r},
            "peak_mb": next((r["peak_mb"] for r in results if "peak_mb" in r), None), "ending": ending,
            "folder": folder}


@pytest.mark.parametrize("name", list(CRASHING_FILES))
def test_crashing_hanging_and_bomb_files_end_in_one_line(crashing_results, name):
    message = crashing_results["messages"].get(name)
    assert message is not None, f"no answer for {name}: the child process {crashing_results['ending']}"
    assert str(crashing_results["folder"] / name) in message
    assert CRASHING_FILES[name][1] in message
    assert "\n" not in message


def test_the_bombs_never_take_the_memory_they_ask_for(crashing_results):
    assert crashing_results["peak_mb"] is not None, crashing_results["ending"]
    assert crashing_results["peak_mb"] < PEAK_MEMORY_MB, crashing_results["peak_mb"]


def _records(*labels, shape=(4, 4), dtype=np.uint8, fill=0) -> list[dict]:
    return [{"image": np.full(shape, fill, dtype), "label": label} for label in labels]


def _write(tmp_path, train, test) -> Path:
    path = tmp_path / "hostile.pkl"
    path.write_bytes(pickle.dumps({"train": train, "test": test}, protocol=4))
    return path


@pytest.mark.parametrize(("train", "test", "message"), [
    (_records(2**70), _records(0), r"record 0: 'label' int of 71 bits is outside the 64-bit integer range"),
    (_records(np.uint64(2**64 - 1)), _records(0), r"'label' uint64 18446744073709551615 is outside the 64-bit"),
    ([{"image": np.zeros((4, 4), np.uint8), 10**5000: 0}], _records(0),
     r"record 0: expected a dict with keys 'image' and 'label', found dict with keys \['image', int of 16610 bits\]"),
    (_records(0), _records(0, shape=(2, 2), dtype=np.float64, fill=1e300),
     r"split 'test', record 0: image holds NaN or infinite values \(as float32"),
    (_records(0, shape=(8, 8)), _records(0, shape=(16, 16)),
     r"split 'train' holds images of shape \[8, 8, 1\] \(H, W, C\) but split 'test' holds \[16, 16, 1\]"),
    (_records(0, shape=(8, 8)), _records(0, shape=(8, 8, 3)), r"holds images of shape \[8, 8, 1\] .* \[8, 8, 3\]"),
], ids=["label_2**70", "label_uint64_max", "key_10**5000", "1e300_pixel", "8x8_train_16x16_test",
        "gray_train_rgb_test"])
def test_bad_values_are_one_line_naming_file_split_and_record(tmp_path, train, test, message):
    path = _write(tmp_path, train, test)
    with pytest.raises(DatasetError, match=message) as error:
        read_pickled_dataset(path)
    assert str(path) in str(error.value)


def test_a_numpy_scalar_with_an_object_field_is_refused(tmp_path):
    label = np.zeros((), dtype=[("a", "O")])[()]
    path = _write(tmp_path, _records(label), _records(0))
    with pytest.raises(DatasetError, match="not a safe dataset pickle: dtype: dtype 'V8' is not allowed"):
        read_pickled_dataset(path)


@pytest.mark.parametrize(("train", "test", "message"), [
    (_records(2**70), _records(0), "outside the 64-bit integer range"),
    (_records(0, shape=(8, 8)), _records(0, shape=(16, 16)), "but split 'test' holds [16, 16, 1]"),
], ids=["label_2**70", "8x8_train_16x16_test"])
def test_the_cli_prints_one_line(tmp_path, train, test, message):
    path = _write(tmp_path, train, test)
    with pytest.raises(SystemExit) as exit_info:
        run("fit", CONFIGS / "mnist.yaml", tmp_path, "--data.path", str(path), "--data.cache", "false")
    text = str(exit_info.value.code)
    assert text.startswith("cnnclf: error: ") and str(path) in text and message in text
    assert "\n" not in text


def test_the_cli_refuses_a_file_that_crashed_it(crashing_results, tmp_path):
    path = crashing_results["folder"] / "object_array_label"
    child = subprocess.run([sys.executable, "-m", "cnnclf", "fit", "--config", str(CONFIGS / "mnist.yaml"),
                            "--data.path", str(path), "--trainer.default_root_dir", str(tmp_path),
                            "--trainer.logger.init_args.save_dir", str(tmp_path)],
                           capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert child.returncode == 1, child.stderr[-2000:]
    assert child.stderr.strip().splitlines()[-1].startswith(
        f"cnnclf: error: {path}: not a safe dataset pickle: numpy.ndarray may only be named")
    assert "Traceback" not in child.stderr


KILLED_WRITER = """
import sys, time
from pathlib import Path
from cnnclf.files import write_atomically

def write_slowly(stream):
    stream.write(b"half a checkpoint")
    stream.flush()
    time.sleep(600)

write_atomically(Path(sys.argv[1]), write_slowly)
"""


def test_a_write_killed_midway_leaves_the_target_whole_and_the_next_write_tidies_up(tmp_path):
    target = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"state_dict": {}, "step": 1}, target)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)],
                              cwd=Path(__file__).resolve().parents[1])
    leftover = target.with_name(".last.ckpt.tmp")
    for _ in range(600):
        if leftover.is_file() and leftover.stat().st_size:
            break
        time.sleep(0.05)
    writer.kill()
    writer.wait()
    assert leftover.is_file() and read_checkpoint(target)["step"] == 1
    SafeCheckpointIO().save_checkpoint({"state_dict": {}, "step": 2}, target)
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"] and read_checkpoint(target)["step"] == 2


def _one_line_exit(*arguments: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run(*arguments)
    text = str(exit_info.value.code)
    assert text.startswith("cnnclf: error: ") and "\n" not in text, text
    return text


@pytest.mark.parametrize(("override", "message"), [
    (["--model.momentum", "-1"], "momentum and weight_decay must be >= 0, found -1.0 and 0.0"),
    (["--model.weight_decay", "-1"], "momentum and weight_decay must be >= 0, found 0.9 and -1.0"),
    (["--model.label_smoothing", "5"], "label_smoothing must be in [0, 1], found 5.0"),
    (["--model.tta_translate", "100"], "smaller than the 8x8 images, found 100"),
])
def test_model_arguments_that_cannot_work_are_one_line(tmp_path, override, message):
    assert message in _one_line_exit("fit", CONFIGS / "digits.yaml", tmp_path, *override)


def _checkpoint(path: Path, **hparams) -> Path:
    from cnnclf.models import ReportMNISTNet

    model = ReportMNISTNet(10, [1, 8, 8])
    torch.save({"hyper_parameters": dict(model.hparams) | hparams, "state_dict": model.state_dict()}, path)
    return path


@pytest.mark.parametrize(("class_path", "message"), [
    ("cnnclf.models_evil.ReportMNISTNet", "refusing class 'cnnclf.models_evil.ReportMNISTNet'"),
    ("cnnclf.models.base.ReportMNISTNet", "refusing class 'cnnclf.models.base.ReportMNISTNet'"),
    ("cnnclf.models.ImageClassifier", "is the base of the cnnclf.models architectures"),
    (7, "the class path must be a string naming one of cnnclf.models's classes, found int"),
])
def test_only_exact_paths_of_concrete_architectures_are_loaded(tmp_path, class_path, message):
    from cnnclf.errors import CheckpointError
    from cnnclf.explore import load_model

    path = _checkpoint(tmp_path / "odd.ckpt", _class_path=class_path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
    assert message in _one_line_exit("test", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", str(path))


def test_the_exact_module_path_of_an_architecture_is_loaded(tmp_path):
    from cnnclf.explore import load_model
    from cnnclf.models import ReportMNISTNet

    path = _checkpoint(tmp_path / "ok.ckpt", _class_path="cnnclf.models.report_mnist.ReportMNISTNet")
    assert isinstance(load_model(path), ReportMNISTNet)


def test_a_legacy_format_checkpoint_loads_weights_only(tmp_path):
    from cnnclf.explore import load_model
    from cnnclf.models import ReportMNISTNet

    path = tmp_path / "legacy.ckpt"
    torch.save(torch.load(_checkpoint(tmp_path / "zip.ckpt", _class_path="cnnclf.models.ReportMNISTNet"),
                          weights_only=True), path,
               _use_new_zipfile_serialization=False)
    assert isinstance(load_model(path), ReportMNISTNet)


def test_a_checkpoint_of_another_architecture_is_tested_as_what_it_is(tmp_path):
    """The CLI takes the architecture from the checkpoint, whatever the config names."""
    run("fit", CONFIGS / "digits.yaml", tmp_path, "--model", "cnnclf.models.ConvBNNet", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2", "--test_after_fit", "false")
    tested = run("test", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", "last")
    assert type(tested.model).__name__ == "ConvBNNet"


def test_a_checkpoint_of_another_architecture_is_one_line_from_python(tmp_path):
    """Loaded into another architecture by hand, before Lightning's 60-line state_dict error."""
    import lightning as L

    from cnnclf.data import DigitsDataModule
    from cnnclf.errors import CheckpointError
    from cnnclf.models import ConvBNNet, ReportMNISTNet

    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--model", "cnnclf.models.ConvBNNet",
                 "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--test_after_fit", "false")
    assert isinstance(fitted.model, ConvBNNet)
    data = DigitsDataModule()
    model = ReportMNISTNet(num_classes=data.num_classes, image_shape=data.image_shape)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(CheckpointError, match="the checkpoint holds the layers of ConvBNNet, which do not fit "
                                              "this ReportMNISTNet"):
        trainer.test(model, datamodule=data, ckpt_path=f"{fitted.trainer.log_dir}/checkpoints/last.ckpt")


def _png_header(width: int, height: int) -> bytes:
    """The start of a gray PNG of ``width`` x ``height``: all Pillow reads before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(
        b"IEND", b"")


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (12000, 12000)], ids=["error", "warning"])
def test_a_decompression_bomb_image_is_one_line(tmp_path, width, height):
    from cnnclf.data.image_files import read_image_files

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(width, height))
    with pytest.raises(DatasetError, match=f"{path}: refused, a possible decompression bomb: Image size "
                                           rf"\({width * height} pixels\) exceeds limit"):
        read_image_files([str(path)], [1, 8, 8])


def test_a_decompression_bomb_image_is_refused_without_pillows_warning_before(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(12000, 12000))  # over Pillow's limit, under twice it: Pillow only warns
    reading = subprocess.run([sys.executable, "-c", "from cnnclf.data.image_files import read_image_files\n"
                              f"try: read_image_files([{str(path)!r}], [1, 8, 8])\n"
                              "except Exception as error: print(error)"], capture_output=True, text=True)
    assert "refused, a possible decompression bomb" in reading.stdout and "Warning" not in reading.stderr


FIFO_READER = """
import sys
from cnnclf.data import DatasetError
from cnnclf.data.image_files import read_image_files
try:
    read_image_files([sys.argv[1]], [1, 8, 8])
except DatasetError as error:
    print(error)
"""


def test_a_fifo_named_as_an_image_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    child = subprocess.run([sys.executable, "-c", FIFO_READER, str(fifo)], capture_output=True, text=True,
                           timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert child.stdout.startswith(f"{fifo}: not a regular file (a FIFO, device or socket); expected an image file")


# -- second round: what the data sizes, files read whole, special files --------------------------

def test_images_that_would_size_a_huge_dense_layer_are_refused_before_it_is_built():
    from cnnclf.errors import ConfigError
    from cnnclf.models import ReportMNISTNet

    with pytest.raises(ConfigError, match=r"ReportMNISTNet for 10 classes of 1x724x724 \(C, H, W\) images: its weights "
                                          r"in millions: 417, more than the 200 cnnclf allows \(set "
                                          "CNNCLF_MAX_MILLION_WEIGHTS"):
        ReportMNISTNet(10, [1, 724, 724])


@pytest.mark.parametrize("gigabytes", [4, 8])
def test_a_huge_sparse_file_is_refused_by_its_size_before_it_is_read(tmp_path, gigabytes):
    path = tmp_path / "huge.pkl"
    with path.open("wb") as stream:  # sparse: no disk used
        stream.write(pickle.dumps({"train": [], "test": []}, protocol=4))
        stream.truncate(gigabytes * 2**30)
    with pytest.raises(DatasetError, match=f"^{path}: the file's size in MiB: {gigabytes * 1024}, more than the 2048 "
                                           "cnnclf allows \\(set CNNCLF_MAX_DATASET_MB to raise it\\)$"):
        read_pickled_dataset(path)


@pytest.mark.parametrize("target", ["/proc/self/pagemap", "/proc/self/mem"])
def test_a_dataset_path_linking_to_a_view_of_the_system_is_refused_unread(tmp_path, target):
    if not Path(target).exists():
        pytest.skip(f"no {target} here")
    path = tmp_path / "MNIST"
    path.symlink_to(target)
    with pytest.raises(DatasetError, match=f"^{path}: the file is empty \\(expected a pickled dataset\\)$"):
        read_pickled_dataset(path)


def test_a_dataset_in_a_memory_backed_folder_is_read(tmp_path):
    """/dev/shm (a RAM disk) is where a cluster job may copy its data: it is a folder like any other."""
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm here")
    records = report_records(6, (4, 4), [0, 1])
    path = write_report_pickle(Path(tempfile.mkdtemp(dir="/dev/shm")) / "MNIST", records[:5], records[5:])
    try:
        assert len(read_pickled_dataset(path)["train"]) == 5
    finally:
        shutil.rmtree(path.parent)


def _alias_bomb(levels: int = 9) -> str:
    """840 bytes whose aliases expand to 9**9 values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "message"), [
    (_alias_bomb(), "more than 100000 values once its aliases are expanded"),
    # libyaml stops at 1000 levels itself
    ("max_steps: " + "[" * 50_000 + "]" * 50_000 + "\n", "collections nested deeper than 64|exceeded maximum nesting"),
    ("# " + "x" * 2**21 + "\n", r"its size in KiB: 2049, more than the 1024 cnnclf allows \(set CNNCLF_MAX_CONFIG_KB"),
], ids=["alias_bomb", "deep_flow_sequence", "2_MB"])
def test_a_config_that_would_hang_or_crash_the_parser_is_one_line(tmp_path, text, message):
    from cnnclf.errors import ConfigError
    from cnnclf.sweeps.spec import load_sweep

    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    assert re.search(message, _one_line_exit("fit", path, tmp_path))
    if len(text) < 2**20:
        assert re.search(message, _one_line_exit("fit", text.replace("\n", ", ").join("{}"), tmp_path))
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def test_a_config_with_a_few_aliases_still_reads():
    from cnnclf.config_text import read_yaml

    assert read_yaml("a: &n 3\nb: *n\nc: &l [1, 2]\nd: [*l, *l]\n", "x") == {"a": 3, "b": 3, "c": [1, 2],
                                                                           "d": [[1, 2], [1, 2]]}


def _nan_weights(path: Path) -> Path:
    content = torch.load(_checkpoint(path), weights_only=True)
    next(iter(content["state_dict"].values())).fill_(float("nan"))
    torch.save(content, path)
    return path


@pytest.mark.parametrize(("hparams", "message"), [
    ({"num_classes": 30_000}, "num_classes must be a whole number from 2 to 1000 (CNNCLF_MAX_CLASSES), found int "
                              "30000"),
    ({"class_names": ["a", "b"]}, "class_names must be 10 names (one per class) of at most 200 characters, found list"),
    ({"input_mean": [0.0, 0.0, 0.0], "input_std": [1.0]}, "input_mean must be 1 finite number(s), one per channel"),
    ({"input_mean": [0.0], "input_std": [0.0]}, "input_std must be 1 finite number(s) above 0"),
    ({"image_shape": [3, 8, 8]}, "image_shape has 3 channel(s) but the first convolution takes 1"),
    ({"num_classes": 12, "class_names": None}, "num_classes is 12 but the last layer has 10 outputs"),
], ids=["30000_classes", "short_class_names", "mean_of_3_channels", "std_0", "rgb_shape", "12_classes"])
def test_checkpoint_hyperparameters_are_checked_against_the_weights_and_each_other(tmp_path, hparams, message):
    from cnnclf.errors import CheckpointError

    path = _checkpoint(tmp_path / "odd.ckpt", **hparams)
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: {re.escape(message)}"):
        read_checkpoint(path)


def test_a_checkpoint_with_nan_weights_is_an_error_not_a_result(tmp_path):
    path = _nan_weights(tmp_path / "nan.ckpt")
    for subcommand in ("test", "predict"):
        text = _one_line_exit(subcommand, CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", str(path))
        assert f"{path}: the weights net." in text and "hold NaN or infinite values" in text


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralized():
    from cnnclf.csv_cells import safe_cell

    assert [safe_cell(v) for v in ["=cmd|' /C calc'!A0", "=HYPERLINK(\"x\")", "+1", "@SUM(A1)", "cat", 0.5, -2]] == [
        "'=cmd|' /C calc'!A0", "'=HYPERLINK(\"x\")", "'+1", "'@SUM(A1)", "cat", 0.5, -2]
    assert safe_cell(b"caf\xe9.png".decode("utf-8", "surrogateescape")) == "caf\ufffd.png"  # a Latin-1 file name


@pytest.fixture(scope="module")
def formula_checkpoint(tmp_path_factory) -> Path:
    """A digits checkpoint whose class names are spreadsheet formulas."""
    folder = tmp_path_factory.mktemp("formulas")
    fitted = run("fit", CONFIGS / "digits.yaml", folder, "--trainer.max_epochs", "1", "--trainer.limit_train_batches",
                 "2", "--test_after_fit", "false")
    content = torch.load(f"{fitted.trainer.log_dir}/checkpoints/last.ckpt", weights_only=True)
    content["hyper_parameters"]["class_names"] = ["=cmd|' /C calc'!A0"] * 10
    torch.save(content, folder / "formulas.ckpt")
    return folder / "formulas.ckpt"


def test_formula_class_names_and_odd_file_names_are_written_safely_to_the_predictions(formula_checkpoint, tmp_path,
                                                                                     monkeypatch):
    """Without a config, predict takes the class names from the checkpoint."""
    import csv

    from PIL import Image

    from cnnclf.cli import cli_main

    (tmp_path / "images").mkdir()
    image = tmp_path / "images" / os.fsdecode(b"caf\xe9=1.png")  # a Latin-1 name: not UTF-8, found in the folder
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    output = tmp_path / "predictions.csv"
    monkeypatch.chdir(tmp_path)
    cli_main(["predict", "--ckpt_path", str(formula_checkpoint), "--data.predict_files", str(image.parent),
              "--prediction_csv.output", str(output), "--trainer.enable_progress_bar", "false"])
    with output.open(encoding="utf-8") as stream:
        (row,) = list(csv.DictReader(stream))
    assert row["label"] == "'=cmd|' /C calc'!A0" and row["source"].endswith("caf\ufffd=1.png")


def test_a_prediction_output_that_is_a_folder_is_one_line(formula_checkpoint, tmp_path):
    text = _one_line_exit("predict", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", str(formula_checkpoint),
                          "--prediction_csv.output", str(tmp_path))
    assert f"--prediction_csv.output {tmp_path}: cannot be written: Is a directory" in text


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_the_image_grid_draws_any_channel_count(channels):
    from cnnclf.summary import plot_predictions

    images = torch.rand(3, channels, 6, 6)
    figure = plot_predictions(images, torch.tensor([0, 1, 0]), torch.tensor([0, 0, 0]), torch.rand(3), ["a", "b"], "t")
    figure.savefig(io.BytesIO(), format="png")


def test_testing_a_finished_run_on_other_data_never_replaces_its_results(tiny_data, tmp_path):
    fitted = run("fit", CONFIGS / "mnist.yaml", tmp_path, "--data.path", str(tiny_data["mnist"]),
                 "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--test_after_fit", "true",
                 "--data.cache", "false")
    run_dir = Path(fitted.trainer.log_dir)
    own = (run_dir / "test" / "summary.json").read_bytes()
    other = tmp_path / "other" / "MNIST"
    other.parent.mkdir()
    other.write_bytes(tiny_data["mnist"].read_bytes())
    run("test", CONFIGS / "mnist.yaml", tmp_path, "--data.path", str(other), "--ckpt_path",
        str(sorted((run_dir / "checkpoints").glob("*.ckpt"))[0]), "--data.cache", "false")
    assert (run_dir / "test" / "summary.json").read_bytes() == own
    (beside,) = run_dir.glob("test-MNIST-*")
    assert (beside / "summary.json").is_file()


def test_predictions_that_are_not_finite_are_an_error_naming_the_checkpoint(formula_checkpoint, tmp_path):
    """Weights finite but so large that the logits overflow: the outputs are checked too."""
    content = torch.load(formula_checkpoint, weights_only=True)
    last = [name for name, tensor in content["state_dict"].items() if name.startswith("net.") and tensor.ndim == 2][-1]
    content["state_dict"][last].fill_(3e38)
    path = tmp_path / "overflow.ckpt"
    torch.save(content, path)
    text = _one_line_exit("predict", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", str(path))
    assert f"{path}: its outputs are NaN or infinite for " in text and "nothing written" in text
    assert not list(tmp_path.rglob("predictions.csv"))


# -- as a hostile colleague would: the cnnclf command on each kind, under 3 GB and a time limit -----

COMMAND_MEMORY = 3 * 2**30


def _hostile_inputs(folder: Path, tiny_mnist: Path) -> dict[str, list[str]]:
    """Each kind's input and the cnnclf command line it is given to."""
    def pickle_of(name, train, test=None):
        return str(write_report_pickle(folder / name, train, test or train))

    sparse = folder / "sparse"
    with sparse.open("wb") as stream:
        stream.truncate(4 * 2**30)
    bomb = folder / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    config = str(CONFIGS / "mnist.yaml")
    fit = ["fit", "--config", config, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
           "--trainer.limit_val_batches", "2", "--data.batch_size", "2"]
    return {
        "huge_images": [*fit, "--data.path", pickle_of("big", report_records(2, (724, 724), [0, 1]))],
        "20000_labels": [*fit, "--data.path", pickle_of("labels", report_records(20_000, (1, 1), list(range(20_000))))],
        "1000000_channels": [*fit, "--data.path", pickle_of("channels", report_records(2, (1, 1, 10**6), [0, 1]))],
        "sparse_4_GB": [*fit, "--data.path", str(sparse)],
        "proc_self_mem": [*fit, "--data.path", "/proc/self/mem"],
        "alias_bomb": ["fit", "--config", str(bomb)],
        "nan_checkpoint": ["test", "--config", str(CONFIGS / "digits.yaml"), "--ckpt_path",
                           str(_nan_weights(folder / "nan.ckpt"))],
        "30000_classes": ["test", "--config", str(CONFIGS / "digits.yaml"), "--ckpt_path",
                          str(_checkpoint(folder / "classes.ckpt", num_classes=30_000))],
        "5_channels": [*fit, "--data", "cnnclf.data.PickledImageDataModule", "--data.path",
                       pickle_of("five", report_records(8, (8, 8, 5), [0, 1])), "--test_after_fit", "true",
                       "--model", "cnnclf.models.ConvBNNet"],
    }


def _limited() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (COMMAND_MEMORY, COMMAND_MEMORY))


@pytest.mark.slow
def test_the_cnnclf_command_on_every_kind_ends_in_one_line_or_a_correct_run(tiny_data, tmp_path):
    failures = []
    for name, arguments in _hostile_inputs(tmp_path, tiny_data["mnist"]).items():
        runs = tmp_path / f"runs-{name}"
        try:
            child = subprocess.run([sys.executable, "-m", "cnnclf", *arguments, "--trainer.default_root_dir", str(runs),
                                    "--trainer.logger.init_args.save_dir", str(runs)], capture_output=True, text=True,
                                   timeout=120, preexec_fn=_limited, env={**os.environ, "CNNCLF_CACHE_DIR": str(runs)},
                                   cwd=Path(__file__).resolve().parents[1])
        except subprocess.TimeoutExpired:
            failures.append(f"{name}: hung (killed after 120 s)")
            continue
        last = (child.stderr.strip().splitlines() or [""])[-1]
        if child.returncode < 0:
            failures.append(f"{name}: killed by signal {-child.returncode}")
        elif "Traceback" in child.stderr:
            failures.append(f"{name}: a traceback: {last}")
        elif child.returncode == 0 and re.search(r"\b(nan|inf)\b", child.stdout, re.IGNORECASE):
            failures.append(f"{name}: exit 0 with a non-finite figure")
        elif child.returncode not in (0, 1) or (child.returncode == 1 and not last.startswith("cnnclf: error: ")):
            failures.append(f"{name}: exit {child.returncode}: {last}")
        elif name == "5_channels" and child.returncode != 0:
            failures.append(f"{name}: a legitimate input failed: {last}")
    assert not failures, "\n".join(failures)
