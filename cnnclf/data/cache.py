"""A cache of checked datasets, so a second run skips unpickling and validating the same file.

The first load of a pickle stores its checked splits as plain arrays (``.npz``, read back
without pickle, so a cache file cannot run code either). The entry's name carries a
fingerprint of the source: its path, size, modification time and its first and last MiB, so an
edited or replaced file misses the cache and is read and checked again; the stale entry is
then removed. The folder is ``$CNNCLF_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnclf``, else
``~/.cache/cnnclf``.
"""

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from cnnclf.data.records import SPLITS, ImageSplit, read_pickled_dataset
from cnnclf.files import write_atomically

FORMAT = "1"  # bump when ImageSplit's arrays change meaning
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
    if entry.is_file():
        try:
            with np.load(entry, allow_pickle=False) as arrays:
                return {split: ImageSplit(arrays[f"{split}_images"], arrays[f"{split}_labels"]) for split in SPLITS}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged entry: read the source again and rewrite it
    splits = read_pickled_dataset(path)
    try:
        _write(entry, splits)
        for stale in entry.parent.glob(f"{prefix}*.npz"):
            if stale != entry:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only or full disk only costs the next run the full read
    return splits


def _fingerprint(source: Path) -> str:
    stat = source.stat()
    digest = hashlib.sha256(f"{FORMAT}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    with source.open("rb") as stream:
        digest.update(stream.read(EDGE_BYTES))
        stream.seek(max(stat.st_size - EDGE_BYTES, 0))
        digest.update(stream.read(EDGE_BYTES))
    return digest.hexdigest()[:16]


def _write(entry: Path, splits: dict[str, ImageSplit]) -> None:
    arrays = {f"{split}_{kind}": getattr(data, kind) for split, data in splits.items() for kind in ("images", "labels")}
    write_atomically(entry, lambda stream: np.savez(stream, **arrays))  # concurrent runs never read half an entry
