"""Reading and writing checkpoints safely: every load is ``weights_only``, every save is atomic.

A checkpoint is a pickle, and pickles from a shared drive can run code. Every path that opens
one (test, predict, resume, the notebooks) goes through ``read_checkpoint``: tensors and plain
values only, no retry without the restriction, and the model class it names must be one of
cnnclf's own and fit the model it is loaded into (``check_fits``). Saves go to a temporary file
beside the target and are renamed over it, so a process killed mid-write leaves the previous
checkpoint whole (``cnnclf.files.write_atomically``).
"""

import functools
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from cnnclf.checkpoints.hyperparameters import check_hyperparameters
from cnnclf.errors import CheckpointError
from cnnclf.files import write_atomically


def read_checkpoint(path: str | Path) -> dict:
    """The contents of a checkpoint file, loaded with ``weights_only=True`` onto the CPU, its tensors mapped
    rather than read; clear errors otherwise. A command that opens the same file again (the CLI, the data
    module, Lightning's restore) gets the same contents, read and checked once."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    status = path.stat()
    return _read_once(path.resolve(), status.st_mtime_ns, status.st_size, status.st_ino)


@functools.lru_cache(maxsize=2)
def _read_once(path: Path, *version) -> dict:  # version: the file's stat, so a rewritten file is read again
    try:
        # torch maps only its zip format; the legacy one is read whole
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
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
    check_hyperparameters(content.get("hyper_parameters", {}), content["state_dict"], path)
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
    if found is base:  # the CLI's default model class: the checkpoint's must be an architecture
        raise CheckpointError(f"{where}: class {class_path!r} is the base of the {package.__name__} architectures, "
                              "which leaves features and classifier to them; name one of them")
    return found


def check_fits(checkpoint: dict, model) -> None:
    """Refuse, in one line, a checkpoint trained for other data or of another architecture than ``model``.

    Run before Lightning's ``load_state_dict``, whose error lists every layer over 60 lines.
    """
    saved, wanted = checkpoint.get("hyper_parameters", {}), model.hparams
    if any(key in saved and _plain(saved[key]) != _plain(wanted[key]) for key in ("num_classes", "image_shape")):
        raise CheckpointError(
            f"the checkpoint's model was trained for {saved.get('num_classes')} classes of "
            f"{saved.get('image_shape')} images, but this data has {wanted.num_classes} classes of "
            f"{list(wanted.image_shape)} images (C, H, W); is it the right checkpoint for this data?"
        )
    if _layer_shapes(checkpoint.get("state_dict", {})) != _layer_shapes(model.state_dict()):
        trained = saved.get("_class_path")
        trained = trained.rpartition(".")[2][:100] if isinstance(trained, str) else "another architecture"
        raise CheckpointError(
            f"the checkpoint holds the layers of {trained}, which do not fit this {type(model).__name__}; "
            f"test or predict with --model {trained}, or with a checkpoint of {type(model).__name__}"
        )


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer, loading through ``read_checkpoint`` and saving atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        write_atomically(Path(path), lambda stream: torch.save(checkpoint, stream))

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        # Onto the CPU: a GPU run's tensors would load onto a GPU, which this machine may lack; Lightning
        # moves the restored weights and optimizer state to the run's device itself.
        return read_checkpoint(path)


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _layer_shapes(state_dict: dict) -> dict[str, tuple[int, ...]]:
    """The network's parameter and buffer names and shapes: what differs between architectures."""
    return {name: tuple(getattr(tensor, "shape", ())) for name, tensor in state_dict.items() if name.startswith("net.")}
