"""A cache of checked datasets, so a second run skips unpickling and validating the same file.

The first load of a pickle stores its checked splits as plain arrays (``.npz``, read back
without pickle, so a cache file cannot run code either). The entry's name carries a
fingerprint of the source: its path, device, inode, size, modification and change times and its
first and last MiB, so an edited or replaced file misses the cache and is read and checked again
(the change time follows every write and cannot be set back by ``touch``); the stale entry is
then removed. An entry's arrays are checked as strictly as a fresh read's before use, and one
that fails is read again from the source and rewritten. The folder is ``$CNNCLF_CACHE_DIR``,
else ``$XDG_CACHE_HOME/cnnclf``, else ``~/.cache/cnnclf``.
"""

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from cnnclf.data.records import SPLITS, ImageSplit, check_splits_match, read_pickled_dataset
from cnnclf.errors import DatasetError
from cnnclf.files import write_atomically

FORMAT = "2"  # bump when ImageSplit's arrays change meaning
EDGE_BYTES = 2**20


def cache_folder() -> Path:
    if os.environ.get("CNNCLF_CACHE_DIR"):
        return Path(os.environ["CNNCLF_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnclf"


def read_dataset_cached(path: Path) -> dict[str, ImageSplit]:
    """``read_pickled_dataset(path)``, from the cache when the file is unchanged since it was cached."""
    source = path.resolve()
    prefix = f"{source.name}-{hashlib.sha256(str(source).encode()).hexdigest()[:12]}-"
    entry = cache_folder() / f"{prefix}{_fingerprint(source)}.npz"
    cached = _read_entry(entry) if entry.is_file() else None
    if cached is not None:
        return cached
    splits = read_pickled_dataset(path)
    try:
        _write(entry, splits)
        for stale in entry.parent.glob(f"{prefix}*.npz"):
            if stale != entry:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only or full disk only costs the next run the full read
    return splits


def _read_entry(entry: Path) -> dict[str, ImageSplit] | None:
    """The entry's splits, or None for a damaged or edited entry (which is then rebuilt)."""
    try:
        with np.load(entry, allow_pickle=False) as arrays:
            splits = {split: ImageSplit(arrays[f"{split}_images"], arrays[f"{split}_labels"]) for split in SPLITS}
        check_splits_match(entry, splits)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, DatasetError):
        return None
    return splits if all(_as_read(split) for split in splits.values()) else None


def _as_read(split: ImageSplit) -> bool:
    """Whether ``split`` holds arrays as ``read_pickled_dataset`` makes them."""
    images, labels = split.images, split.labels
    return (images.ndim == 4 and 0 not in images.shape and images.dtype in (np.uint8, np.float32)
            and labels.dtype == np.int64 and labels.shape == (len(images),)
            and (images.dtype == np.uint8 or bool(np.isfinite(images).all())))


def _fingerprint(source: Path) -> str:
    stat = source.stat()
    digest = hashlib.sha256(f"{FORMAT}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|"
                            f"{stat.st_ctime_ns}".encode())
    with source.open("rb") as stream:
        digest.update(stream.read(EDGE_BYTES))
        stream.seek(max(stat.st_size - EDGE_BYTES, 0))
        digest.update(stream.read(EDGE_BYTES))
    return digest.hexdigest()[:16]


def _write(entry: Path, splits: dict[str, ImageSplit]) -> None:
    arrays = {f"{split}_{kind}": getattr(data, kind) for split, data in splits.items() for kind in ("images", "labels")}
    write_atomically(entry, lambda stream: np.savez(stream, **arrays))  # concurrent runs never read half an entry
