"""Writing a file so that a process killed mid-write never leaves it half-written."""

import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(stream)``: readers see the old file or the whole new one.

    The bytes go to a temporary file beside ``path``, are flushed to disk, and the temporary file
    is renamed over ``path`` (atomic on POSIX and Windows). Temporary files left in the folder by
    writers that were killed mid-write are removed by the next write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent)
    temporary = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# In the temporary name: on a shared drive, another machine's writer is not ours to judge.
_HOST = socket.gethostname().replace(".", "-")


def remove_leftovers(folder: Path) -> None:
    """Remove this machine's temporary files of ``write_atomically`` calls in ``folder`` whose process is gone."""
    for leftover in folder.glob(f".*.{_HOST}.*.tmp"):
        pid = leftover.name.removesuffix(".tmp").rpartition(".")[2]
        if pid.isdigit() and not _running(int(pid)):
            with contextlib.suppress(OSError):  # a folder this process may read but not change
                leftover.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
