"""Reading and writing checkpoints safely: every load is ``weights_only``, every save is atomic.

A checkpoint is a pickle, and pickles from a shared drive can run code. Every path that opens
one (test, predict, resume, the notebooks) goes through ``read_checkpoint``: tensors and plain
values only, no retry without the restriction, and the model class it names must be one of
cnnclf's own. Saves go to a temporary file beside the target and are renamed over it, so a
process killed mid-write leaves the previous checkpoint whole; the temporary files such kills
leave (hundreds of MB each) are removed beside every checkpoint read, and in every run of the
experiment when a run saves, since a resumed run writes into a new ``version_N``.
"""

import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from cnnclf.errors import CheckpointError
from cnnclf.files import remove_leftovers, write_atomically


def read_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """The contents of a checkpoint file, loaded with ``weights_only=True``; clear errors otherwise.

    ``mmap`` maps the tensors' bytes instead of reading them: for checks of the other contents.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    remove_leftovers(path.parent)
    if not zipfile.is_zipfile(path) and _starts_with(path, LEGACY_MAGIC):
        raise CheckpointError(f"{path}: a checkpoint in torch's legacy format (torch < 1.6, or saved with "
                              "_use_new_zipfile_serialization=False); cnnclf reads torch.save's zip format: "
                              "load it with torch.load(path, weights_only=True) and save it again with torch.save")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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


def checked_class(class_path: object, package, base: type, where: str) -> type:
    """The class ``class_path`` names, if it is one of ``package``'s concrete ``base`` classes, named
    ``<package>.<Name>`` or ``<package>.<module>.<Name>`` where it is defined; never imports anything."""
    if not isinstance(class_path, str):
        raise CheckpointError(f"{where}: the class path must be a string naming one of {package.__name__}'s "
                              f"classes, found {type(class_path).__name__}")
    module, _, name = class_path.rpartition(".")
    found = getattr(package, name, None)
    if (not (isinstance(found, type) and issubclass(found, base)) or module not in (package.__name__, found.__module__)
            or not found.__module__.startswith(f"{package.__name__}.")):
        raise CheckpointError(f"{where}: refusing class {class_path[:200]!r}; expected one of {package.__name__}'s "
                              f"{base.__name__} classes")
    abstract = sorted(name for name in dir(found) if _left_to_subclasses(getattr(found, name, None)))
    if abstract:
        raise CheckpointError(f"{where}: class {class_path!r} is a base that leaves {', '.join(abstract)} to its "
                              f"subclasses; name one of them, such as the other {package.__name__} classes")
    return found


LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # torch's pre-zip format: pickled 0x1950a86a20f9469cfc6c


def _starts_with(path: Path, prefix: bytes) -> bool:
    with path.open("rb") as stream:
        return stream.read(len(prefix)) == prefix


def _left_to_subclasses(method: object) -> bool:
    """Whether ``method``'s whole body is ``raise NotImplementedError``: a hook a subclass must define."""
    code = getattr(method, "__code__", None)
    return code is not None and code.co_names == ("NotImplementedError",)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer, loading through ``read_checkpoint`` and saving atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        for folder in _checkpoint_folders_of_the_experiment(path.parent):
            remove_leftovers(folder)
        write_atomically(path, lambda stream: torch.save(checkpoint, stream))

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(path, map_location=map_location)


#: written by ``FitTimer`` when training ends normally; a run without it stopped early or is still running
FINISHED_MARKER = "fit_time.json"


def find_checkpoint(runs_root: Path, which: str) -> tuple[Path, str]:
    """The checkpoint ``--ckpt_path best|last`` stands for under ``runs_root``, and why that one.

    ``last``: the newest run's ``last.ckpt`` (to resume). ``best``: the newest finished run's
    ``best.ckpt``, or its ``last.ckpt`` when it trained without validation. A run that stopped
    early is never taken for ``best``.
    """
    lasts = sorted(runs_root.glob("*/checkpoints/last.ckpt"), key=lambda path: path.stat().st_mtime)
    if not lasts:
        raise CheckpointError(f"--ckpt_path {which}: no checkpoint under {runs_root}/*/checkpoints; train with "
                              "'cnnclf fit' first, or pass a checkpoint file")
    if which == "last":
        return lasts[-1], "the newest run's last checkpoint"
    finished = [last for last in lasts if (last.parents[1] / FINISHED_MARKER).is_file()]
    if not finished:
        raise CheckpointError(f"--ckpt_path best: no run under {runs_root} finished training (the newest, "
                              f"{lasts[-1].parents[1]}, stopped early or is still running); resume it with "
                              "--ckpt_path last, or pass a checkpoint file")
    best = finished[-1].with_name("best.ckpt")
    if best.is_file():
        return best, "the best checkpoint of the newest finished run"
    return finished[-1], "the newest finished run trained without validation: its last checkpoint"


def run_folder(checkpoint: Path) -> Path | None:
    """The run directory that wrote ``checkpoint`` (``<run>/checkpoints/x.ckpt``), if it is in one."""
    folder = checkpoint.resolve().parent
    return folder.parent if folder.name == "checkpoints" else None


def _checkpoint_folders_of_the_experiment(folder: Path) -> list[Path]:
    """``folder`` and, in Lightning's layout ``<experiment>/version_N/checkpoints``, the same folder of every run."""
    if folder.name == "checkpoints" and folder.parent.name.startswith("version_"):
        return [*folder.parent.parent.glob(f"version_*/{folder.name}")]
    return [folder]
