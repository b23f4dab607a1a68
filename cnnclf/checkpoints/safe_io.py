"""Reading and writing checkpoints safely: every load is ``weights_only``, every save is atomic.

A checkpoint is a pickle, and pickles from a shared drive can run code. Every path that opens
one (test, predict, resume, the notebooks) goes through ``read_checkpoint``: tensors and plain
values only, no retry without the restriction, and the model class it names must be one of
cnnclf's own and fit the model it is loaded into (``check_fits``). Saves go to a temporary file
beside the target and are renamed over it, so a process killed mid-write leaves the previous
checkpoint whole (``cnnclf.files.write_atomically``).

``predict`` and ``test`` build the model and its metrics from what the checkpoint says (class count,
image shape, class names, channel statistics), so those are checked against the weights and each other
before anything is built: a file from a shared drive could otherwise make them allocate without bound,
index past a list, or divide by a zero ``input_std`` and write NaN probabilities with exit 0.
"""

import functools
import math
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from cnnclf.errors import CheckpointError, describe
from cnnclf.files import write_atomically
from cnnclf.limits import limit


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
        reason = str(error).partition(". ")[0].splitlines()[0] if str(error) else "empty"  # torch's first sentence
        raise CheckpointError(f"{path}: not a complete checkpoint (truncated, or not saved by torch): "
                              f"{type(error).__name__}: {reason}") from None
    if not isinstance(content, dict) or "state_dict" not in content:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict' in it)")
    callbacks = content.get("callbacks", {})  # Lightning hands each state to its callback as a mapping
    if not isinstance(callbacks, dict) or not all(isinstance(state, dict) for state in callbacks.values()):
        raise CheckpointError(f"{path}: its callbacks' states are {describe(callbacks)}, not a mapping of mappings")
    check_hyperparameters(content.get("hyper_parameters", {}), content["state_dict"], path)
    return content


def check_hyperparameters(hparams: object, state_dict: dict, where: object) -> None:
    """Raise ``CheckpointError`` naming ``where`` unless ``hparams`` describe a model these weights can be."""
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{where}: its hyper_parameters are {type(hparams).__name__}, not a mapping")
    classes, shape = hparams.get("num_classes"), hparams.get("image_shape")
    if classes is not None and (type(classes) is not int or not 2 <= classes <= limit("CLASSES")):
        raise CheckpointError(f"{where}: num_classes must be a whole number from 2 to {limit('CLASSES')} "
                              f"(CNNCLF_MAX_CLASSES), found {describe(classes)}")
    if shape is not None and (not isinstance(shape, (list, tuple)) or len(shape) != 3
                              or any(type(size) is not int or size < 1 for size in shape)
                              or shape[0] > limit("CHANNELS")):
        raise CheckpointError(f"{where}: image_shape must be [channels, height, width] of positive sizes with at "
                              f"most {limit('CHANNELS')} channels, found {describe(shape)}")
    names = hparams.get("class_names")
    if names is not None and (not isinstance(names, (list, tuple)) or len(names) != classes
                              or not all(isinstance(name, str) and len(name) <= 200 for name in names)):
        raise CheckpointError(f"{where}: class_names must be {classes} names (one per class) of at most 200 "
                              f"characters, found {describe(names)}")
    for key, positive in (("input_mean", False), ("input_std", True)):
        values = hparams.get(key)
        if values is not None and (shape is None or not isinstance(values, (list, tuple)) or len(values) != shape[0]
                                   or not all(_finite(value, positive) for value in values)):
            raise CheckpointError(f"{where}: {key} must be {shape[0] if shape else 'one'} finite number(s)"
                                  f"{' above 0' if positive else ''}, one per channel, found {describe(values)}")
    not_finite = next((name for name, tensor in state_dict.items() if isinstance(tensor, torch.Tensor)
                       and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())), None)
    if not_finite is not None:
        raise CheckpointError(f"{where}: the weights {not_finite[:100]} hold NaN or infinite values; "
                              "the training that saved them diverged")
    _check_layers(state_dict, classes, shape, where)


def _check_layers(state_dict: dict, classes: object, shape: object, where: object) -> None:
    """The first convolution takes the image's channels and the last dense layer gives one output per class."""
    layers = [tensor for name, tensor in state_dict.items() if name.startswith("net.") and name.endswith(".weight")
              and isinstance(tensor, torch.Tensor)]
    first = next((tensor for tensor in layers if tensor.ndim == 4), None)
    last = next((tensor for tensor in reversed(layers) if tensor.ndim == 2), None)
    if shape is not None and first is not None and first.shape[1] != shape[0]:
        raise CheckpointError(f"{where}: image_shape has {shape[0]} channel(s) but the first convolution takes "
                              f"{first.shape[1]}")
    if classes is not None and last is not None and last.shape[0] != classes:
        raise CheckpointError(f"{where}: num_classes is {classes} but the last layer has {last.shape[0]} outputs")


def _finite(value: object, positive: bool) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value > 0 or not positive)


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
