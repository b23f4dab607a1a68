"""A cache of checked datasets, so a second run skips unpickling and validating the same file.

The child process that checks a pickle (``cnnclf.data.convert``) writes its arrays straight into
the cache, as an uncompressed ``.npz`` read back without pickle. An entry is named by a SHA-256
digest of the source's content (and of its resolved path, so a changed file's stale entry can be
found and removed), so an edited or replaced file always misses. A hit is read as strictly as a
fresh conversion's output: at most 4 bytes of arrays per byte of the source, stored members
whose headers are checked before anything is allocated, and arrays as ``records`` makes them;
every failure to read an entry is a miss, and the source is converted again. The folder is
``$CNNCLF_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnclf``, else ``~/.cache/cnnclf``.
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


def read_dataset_cached(path: Path) -> dict[str, ImageSplit]:
    """``read_pickled_dataset(path)``, from the cache when a file of the same content was cached."""
    size = check_source(path)
    prefix = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16] + "-"
    with path.open("rb") as stream:
        digest = hashlib.file_digest(stream, lambda: hashlib.sha256(FORMAT)).hexdigest()
    entry = cache_folder() / f"{prefix}{digest}.npz"
    cached = read_arrays(entry, size)
    if cached is not None:
        return cached
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return read_pickled_dataset(path)  # a cache folder that cannot be made only costs the next run the full read
    if not os.access(entry.parent, os.W_OK):
        return read_pickled_dataset(path)
    splits = convert(path, entry, size)
    with contextlib.suppress(OSError):
        for stale in entry.parent.iterdir():  # a listing, not a glob: names may hold glob characters
            if stale.name.startswith(prefix) and stale != entry:
                stale.unlink()
    return splits

