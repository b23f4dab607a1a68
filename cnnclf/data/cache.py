"""A cache of checked datasets, so a second run skips unpickling (or decoding) and checking the same files.

An entry is named by a digest of its source's resolved path, so a changed source's stale entry can be found and
removed, and by a digest of what it was made from, so a changed source always misses. Every failure to read an
entry is a miss. The folder is ``$CNNCLF_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnclf``, else ``~/.cache/cnnclf``.
"""

import contextlib
import hashlib
import os
from pathlib import Path

from cnnclf.data.convert import check_source, convert, read_arrays, read_pickled_dataset
from cnnclf.data.records import ImageSplit

FORMAT = b"3"  # bump when the entries' arrays change meaning


def cache_folder() -> Path:
    if os.environ.get("CNNCLF_CACHE_DIR"):
        return Path(os.environ["CNNCLF_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnclf"


def cache_entry(source: Path, digest: str) -> Path:
    """Where the arrays made from ``source`` go, ``digest`` naming what they were made from."""
    return cache_folder() / f"{hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]}-{digest}.npz"


def remove_stale(entry: Path) -> None:
    """Remove the other entries of the same source (a listing, not a glob: names may hold glob characters)."""
    with contextlib.suppress(OSError):
        for stale in entry.parent.iterdir():
            if stale.name[:17] == entry.name[:17] and stale != entry:
                stale.unlink()


def read_dataset_cached(path: Path) -> dict[str, ImageSplit]:
    """``read_pickled_dataset(path)``, from the cache when a file of the same content was cached."""
    size = check_source(path)
    with path.open("rb") as stream:
        entry = cache_entry(path, hashlib.file_digest(stream, lambda: hashlib.sha256(FORMAT)).hexdigest())
    cached = read_arrays(entry, size)
    if cached is not None:
        return cached
    with contextlib.suppress(OSError):
        entry.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(entry.parent, os.W_OK):  # a cache folder that cannot be written costs the next run a full read
        return read_pickled_dataset(path)
    splits = convert(path, entry, size)
    remove_stale(entry)
    return splits
