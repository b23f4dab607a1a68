"""Errors a user can act on; the CLI prints them as one line instead of a traceback."""

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice

import numpy as np


class CnnclfError(ValueError):
    """Bad input from the user: a file, a config value or a checkpoint. The message says what to fix."""


class DatasetError(CnnclfError):
    """A dataset file or its contents are not what cnnclf can train on."""


class ConfigError(CnnclfError):
    """A configuration value that cannot work (a negative batch size, a checkpoint that is not there)."""


class CheckpointError(CnnclfError):
    """A checkpoint that is missing, truncated, refused as unsafe, or made for other data."""


class NonFiniteLossError(CnnclfError):
    """Training diverged: the loss became NaN or infinite."""


#: what the system refuses that a user can change: a read-only or full disk, a folder without permission
REFUSALS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def refused(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in REFUSALS


def one_line(error: BaseException) -> str:
    """A user's error as the commands print it: the message, or the file the system refused and why."""
    return f"{error.filename}: {error.strerror}" if refused(error) and error.filename else str(error)


@contextmanager
def one_line_errors(program: str) -> Iterator[None]:
    """Ends the command with one line for a user's error (``CnnclfError`` or a refusal); a bug still raises."""
    try:
        yield
    except (CnnclfError, OSError) as error:
        if not isinstance(error, CnnclfError) and not refused(error):
            raise
        sys.exit(f"{program}: error: {one_line(error)}")


def describe(value: object) -> str:
    """The type of an untrusted value and a short rendering that is safe to build: never the ``repr`` of a
    container (which can nest or repeat without end) or of a huge integer; a dict's first keys."""
    name = type(value).__name__
    if isinstance(value, (bool, np.bool_)):
        return f"{name} {bool(value)}"
    if isinstance(value, (int, np.integer)):
        bits = int(value).bit_length()
        return f"{name} {int(value)}" if bits <= 64 else f"{name} of {bits} bits"
    if isinstance(value, (float, np.floating)):
        return f"{name} {float(value)!r}"
    if isinstance(value, (str, bytes)):
        return f"{name} {value[:40]!r}{'...' if len(value) > 40 else ''}"
    if isinstance(value, np.ndarray):
        return f"array {value.dtype}{list(value.shape)}"
    if isinstance(value, dict):
        keys = [repr(key[:40]) if isinstance(key, str) else describe(key) for key in islice(value, 10)]
        return f"{name} with keys [{', '.join(sorted(keys))}{', ...' if len(value) > 10 else ''}]"
    if isinstance(value, (list, tuple)):
        return f"{name} of {len(value)} items"
    return name
