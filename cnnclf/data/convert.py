"""Read an untrusted dataset pickle in a child process (numpy, ``safe_pickle`` and ``records`` only, under memory and
CPU limits), which writes the checked arrays as an .npz (with ``cache``, into the dataset cache) that is read back
without pickle: whatever the file does to the reader ends in one line (docs/safety.md)."""

import contextlib
import gc
import hashlib
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from cnnclf.data.records import SPLITS, ImageSplit, check_records, check_splits
from cnnclf.data.safe_pickle import Budget, load_pickle, not_a_file
from cnnclf.errors import CnnclfError, DatasetError
from cnnclf.files import write_atomically
from cnnclf.limits import check_limit

# The reader's memory: its address-space limit, and what the unpickler and the record copy may build from the file
BASE_BYTES, BYTES_PER_FILE_BYTE = 256 * 2**20, 4
BASE_SECONDS, SECONDS_PER_MIB = 10, 0.1
ENTRY_SLACK = 2**16  # an .npz's headers, beyond 4 bytes of arrays per byte of the pickle (int8 -> float32)
#: what a dataset file begins with when it is no pickle at all, and what to tell the user
OTHER_FORMATS = {
    b"PK\x03\x04": "a zip archive (such as numpy's .npz), not a pickle",
    b"\x1f\x8b": "gzip-compressed: decompress it first (gunzip)",
    b"\x93NUMPY": "a numpy .npy array, not a pickle",
}
KINDS = {"images": ("|u1", "<f4"), "labels": ("<i8",)}  # the dtypes check_splits allows, as .npy headers write them
# the child must not import cnnclf.data's __init__, which imports torch (seconds and a GB of address space)
CHILD = ("import sys, types; sys.path.insert(0, sys.argv[1]); package = types.ModuleType('cnnclf.data'); "
         "package.__path__ = [sys.argv[1] + '/cnnclf/data']; sys.modules['cnnclf.data'] = package; "
         "from cnnclf.data.convert import child_main; child_main(*sys.argv[2:])")
ROOT = Path(__file__).resolve().parents[2]
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
FORMAT = b"3"  # bump when the cache entries' arrays change meaning


def check_source(path: Path) -> int:
    """Refuse, before reading it, a file that is no dataset pickle or larger than allowed; its size."""
    if not path.is_file():  # also a FIFO or device, whose reading could block or never end
        raise DatasetError(f"{path}: {not_a_file(path)}; set --data.path to a pickle in the report's format")
    size = path.stat().st_size
    if not size:  # also the views of the system under /proc, which read as anything but say they hold nothing
        raise DatasetError(f"{path}: the file is empty (expected a pickled dataset)")
    check_limit("DATASET_MB", -(-size // 2**20), f"{path}: the file's size in MiB", DatasetError)
    try:
        with path.open("rb") as stream:
            head = stream.read(8)
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read: {error.strerror}") from None
    other_format = next((what for magic, what in OTHER_FORMATS.items() if head.startswith(magic)), None)
    if other_format:
        raise DatasetError(f"{path}: {other_format}")
    return size


def read_pickled_dataset(path: str | Path, cache: bool = False) -> dict[str, ImageSplit]:
    """The checked ``train`` and ``test`` splits of the pickle ``path``, read in a child process or, with
    ``cache``, from the entry of a file of the same content."""
    path = Path(path)
    size = check_source(path)
    if cache:
        with path.open("rb") as stream:
            entry = cache_entry(path, hashlib.file_digest(stream, lambda: hashlib.sha256(FORMAT)).hexdigest())
        cached = read_arrays(entry, size)
        if cached is not None:
            return cached
        with contextlib.suppress(OSError):
            entry.parent.mkdir(parents=True, exist_ok=True)
        if os.access(entry.parent, os.W_OK):  # a cache folder that cannot be written costs the next run a full read
            splits = convert(path, entry, size)
            remove_stale(entry)
            return splits
    with tempfile.TemporaryDirectory(prefix="cnnclf-") as folder:
        return convert(path, Path(folder) / "dataset.npz", size)


def cache_entry(source: Path, digest: str) -> Path:
    """Where the arrays made from ``source`` go, ``digest`` naming what they were made from."""
    folder = Path(os.environ.get("CNNCLF_CACHE_DIR")
                  or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnclf")
    return folder / f"{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]}-{digest}.npz"


def remove_stale(entry: Path) -> None:
    """Remove the other entries of the same source (a listing, not a glob: names may hold glob characters)."""
    with contextlib.suppress(OSError):
        for stale in entry.parent.iterdir():
            if stale.name[:17] == entry.name[:17] and stale != entry:
                stale.unlink()


def convert(path: Path, target: Path, size: int) -> dict[str, ImageSplit]:
    """Check the pickle ``path`` of ``size`` bytes in a child process, which writes its arrays to ``target``."""
    seconds = int(BASE_SECONDS + SECONDS_PER_MIB * size / 2**20)
    memory = BASE_BYTES + BYTES_PER_FILE_BYTE * size
    command = [sys.executable, "-P", "-c", CHILD, str(ROOT), str(path), str(target), str(memory), str(seconds)]
    try:
        child = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=2 * seconds,
                               env={**os.environ, **ONE_THREAD})
    except subprocess.TimeoutExpired:
        raise DatasetError(f"{path}: not a safe dataset pickle: reading it took more than {seconds} s") from None
    if child.returncode == 0:
        splits = read_arrays(target, size)
        if splits is not None:
            return splits
    lines, code = child.stdout.strip().splitlines(), child.returncode
    if code == 2 and lines:
        raise DatasetError(lines[-1][:2000])  # the child's DatasetError
    if code == -signal.SIGXCPU:
        why = f"reading it took more than {seconds} s of CPU time"
    elif code == -signal.SIGKILL:
        why = "the reader was killed (out of memory?)"
    elif code < 0:
        why = f"it crashed the reader ({signal.Signals(-code).name}): nested too deeply or malformed"
    else:
        why = f"the reader ended with exit status {code}: {(child.stderr.strip().splitlines() or [''])[-1][:200]}"
    raise DatasetError(f"{path}: not a safe dataset pickle: {why}")


def child_main(path: str, target: str, memory: str, seconds: str) -> None:
    for kind, value in ((resource.RLIMIT_AS, int(memory)), (resource.RLIMIT_CPU, int(seconds))):
        hard = resource.getrlimit(kind)[1]  # a limit can only be lowered: a lower one set by the caller stays
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, hard if kind == resource.RLIMIT_CPU else value))
    # The child builds one dataset and exits: the cycle collector would only walk every record
    # built so far again and again, for much of a large dataset's unpickling time.
    gc.disable()
    budget = Budget(int(memory))  # macOS does not enforce RLIMIT_AS: counted, the same figure holds there
    try:
        splits = check_records(Path(path), load_pickle(path, budget), budget)
        arrays = {f"{split}_{kind}": getattr(data, kind) for split, data in splits.items() for kind in KINDS}
        write_atomically(Path(target), lambda stream: np.savez(stream, **arrays))
    except (CnnclfError, MemoryError, RecursionError) as error:  # a CNNCLF_MAX_* variable's ConfigError too
        message = str(error) if isinstance(error, CnnclfError) else (
            f"{path}: not a safe dataset pickle: it needs more than the {int(memory) >> 20} MiB cnnclf gives a file "
            f"of its size ({str(error) or type(error).__name__})")
        print(message.replace("\n", " "))
        sys.exit(2)


def read_arrays(entry: Path, source_size: int) -> dict[str, ImageSplit] | None:
    """The splits in ``entry``, an .npz written for a pickle of ``source_size`` bytes; None for any entry that
    is not such a file."""
    try:
        if entry.stat().st_size > BYTES_PER_FILE_BYTE * source_size + ENTRY_SLACK:
            return None
        arrays = read_npz(entry, {f"{split}_{kind}": dtypes for split in SPLITS for kind, dtypes in KINDS.items()})
        if arrays is None:
            return None
        splits = {split: ImageSplit(arrays[f"{split}_images"], arrays[f"{split}_labels"]) for split in SPLITS}
        check_splits(entry, splits)
    except (OSError, ValueError):
        return None  # every failure to read an entry is a miss (a DatasetError is a ValueError)
    return splits


def read_npz(entry: Path, members: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray] | None:
    """The arrays ``members`` names (each with the .npy dtype headers it may have, as prefixes) from ``entry``, an
    uncompressed .npz; None for any other file. Each header is checked against the member's stored size before
    anything is allocated, so an entry allocates no more than it holds on disk."""
    arrays = {}
    try:
        with zipfile.ZipFile(entry) as archive:
            for name, dtypes in members.items():
                info = archive.getinfo(f"{name}.npy")
                with archive.open(info) as stream:  # np.savez stores each member with a version 1.0 header
                    if info.compress_type != zipfile.ZIP_STORED or np.lib.format.read_magic(stream) != (1, 0):
                        return None
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
                if not dtype.str.startswith(dtypes) or fortran or math.prod(shape) * dtype.itemsize > info.file_size:
                    return None
                with archive.open(info) as stream:
                    arrays[name] = np.lib.format.read_array(stream, allow_pickle=False)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, MemoryError):
        return None
    return arrays
