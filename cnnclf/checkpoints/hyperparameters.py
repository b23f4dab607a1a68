"""A checkpoint's hyper-parameters, checked against its weights and each other before anything is built.

``predict`` and ``test`` build the model and its metrics from what the checkpoint says (class
count, image shape, class names, channel statistics), so a file from a shared drive could make
them allocate without bound, index past a list, or divide by a zero ``input_std`` and write NaN
probabilities with exit 0. Weights and statistics that are not finite are refused the same way.
"""

import math

import torch

from cnnclf.errors import CheckpointError
from cnnclf.limits import limit


def check_hyperparameters(hparams: object, state_dict: dict, where: object) -> None:
    """Raise ``CheckpointError`` naming ``where`` unless ``hparams`` describe a model these weights can be."""
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{where}: its hyper_parameters are {type(hparams).__name__}, not a mapping")
    classes, shape = hparams.get("num_classes"), hparams.get("image_shape")
    if classes is not None and (type(classes) is not int or not 2 <= classes <= limit("CLASSES")):
        raise CheckpointError(f"{where}: num_classes must be a whole number from 2 to {limit('CLASSES')} "
                              f"(CNNCLF_MAX_CLASSES), found {_shown(classes)}")
    if shape is not None and (not isinstance(shape, (list, tuple)) or len(shape) != 3
                              or any(type(size) is not int or size < 1 for size in shape)
                              or shape[0] > limit("CHANNELS")):
        raise CheckpointError(f"{where}: image_shape must be [channels, height, width] of positive sizes with at "
                              f"most {limit('CHANNELS')} channels, found {_shown(shape)}")
    names = hparams.get("class_names")
    if names is not None and (not isinstance(names, (list, tuple)) or len(names) != classes
                              or not all(isinstance(name, str) and len(name) <= 200 for name in names)):
        raise CheckpointError(f"{where}: class_names must be {classes} names (one per class) of at most 200 "
                              f"characters, found {_shown(names)}")
    for key, positive in (("input_mean", False), ("input_std", True)):
        values = hparams.get(key)
        if values is not None and (shape is None or not isinstance(values, (list, tuple)) or len(values) != shape[0]
                                   or not all(_finite(value, positive) for value in values)):
            raise CheckpointError(f"{where}: {key} must be {shape[0] if shape else 'one'} finite number(s)"
                                  f"{' above 0' if positive else ''}, one per channel, found {_shown(values)}")
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


def _shown(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)} items"
    text = repr(value) if isinstance(value, (int, float, str, type(None))) else type(value).__name__
    return text[:60]
