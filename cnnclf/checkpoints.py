"""Reading and writing checkpoints safely: every load is ``weights_only``, every save is atomic.

A checkpoint is a pickle, and pickles from a shared drive can run code. Every path that opens
one (test, predict, resume, the notebooks) goes through ``read_checkpoint``: tensors and plain
values only, no retry without the restriction, and the model class it names must be one of
cnnclf's own. Saves go to a temporary file beside the target and are renamed over it, so a
process killed mid-write leaves the previous checkpoint whole.
"""

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from cnnclf.errors import CheckpointError


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """The contents of a checkpoint file, loaded with ``weights_only=True``; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... by what is wrong
        refused = next((line.strip() for line in str(error).splitlines() if "GLOBAL" in line), None)
        if refused is not None:
            raise CheckpointError(f"{path}: refused, it asks to load code, which a checkpoint never needs "
                                  f"(nothing was run): {refused}") from None
        raise CheckpointError(f"{path}: not a complete checkpoint (truncated, or not saved by torch): "
                              f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'empty'}"
                              ) from None
    if not isinstance(content, dict) or "state_dict" not in content:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict' in it)")
    return content


def checked_class(class_path: str, package, base: type, where: str) -> type:
    """The class ``class_path`` names, if it is one of ``package``'s ``base`` classes; never imports anything."""
    module, _, name = class_path.rpartition(".")
    found = getattr(package, name, None)
    if not module.startswith(package.__name__) or not (isinstance(found, type) and issubclass(found, base)):
        raise CheckpointError(f"{where}: refusing class {class_path!r}; expected one of {package.__name__}'s "
                              f"{base.__name__} classes")
    return found


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer, loading through ``read_checkpoint`` and saving atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        _remove_leftovers(path)
        try:
            with temporary.open("wb") as stream:
                torch.save(checkpoint, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)  # atomic on POSIX and Windows: readers see the old or the new file
        finally:
            temporary.unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(path, map_location=map_location)


def _remove_leftovers(path: Path) -> None:
    """Temporary files of earlier saves to ``path`` whose process was killed mid-write."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        pid = leftover.name.removeprefix(f".{path.name}.").removesuffix(".tmp")
        if pid.isdigit() and not _running(int(pid)):
            leftover.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
