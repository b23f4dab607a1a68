"""Writing a file so that a process killed mid-write never leaves it half-written."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(stream)``: readers see the old file or the whole new one.

    The bytes go to ``.<name>.tmp`` beside ``path``, are flushed to disk, and that file is renamed over
    ``path`` (atomic on POSIX and Windows). One fixed name: what a writer killed mid-write leaves is
    overwritten by the next write of ``path``, so nothing is left to sweep.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
