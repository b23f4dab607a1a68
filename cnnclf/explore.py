"""Open a finished run from its checkpoint or its TensorBoard curves, for notebooks and scripts.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values only, so
a crafted file cannot run code. The classes a checkpoint and its run's config name are only
ever taken from cnnclf's own models and data modules.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor

from cnnclf import data as data_modules
from cnnclf import models
from cnnclf.checkpoints import checked_class, read_checkpoint
from cnnclf.data import PickledImageDataModule
from cnnclf.errors import ConfigError
from cnnclf.models import ImageClassifier


def load_model(checkpoint: str | Path) -> ImageClassifier:
    """The trained model of ``checkpoint``, in eval mode on the CPU."""
    content = read_checkpoint(checkpoint)
    hparams = dict(content.get("hyper_parameters", {}))
    architecture = checked_class(hparams.pop("_class_path", ""), models, ImageClassifier, str(checkpoint))
    model = architecture(**{key: value for key, value in hparams.items() if not key.startswith("_")})
    model.load_state_dict(content["state_dict"])
    return model.eval()


def load_datamodule(checkpoint: str | Path, **overrides) -> PickledImageDataModule:
    """The data module of the run ``checkpoint`` belongs to, from the run's saved config.yaml."""
    config_path = Path(checkpoint).resolve().parent.parent / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: no run config beside the checkpoint's folder")
    data = yaml.safe_load(config_path.read_text())["data"]
    module = checked_class(data["class_path"], data_modules, PickledImageDataModule, str(config_path))
    return module(**{**data.get("init_args", {}), **overrides})


@dataclass(frozen=True)
class Predictions:
    images: Tensor  # (N, C, H, W) raw pixels
    targets: Tensor  # (N,) class indices
    predicted: Tensor  # (N,) class indices
    confidence: Tensor  # (N,) probability of the predicted class


@torch.no_grad()
def predict_split(model: ImageClassifier, images: Tensor, targets: Tensor, batch_size: int = 1000) -> Predictions:
    """The model's predictions and their probabilities for a whole split."""
    probabilities = torch.cat([model.evaluation_logits(images[start:start + batch_size]).softmax(dim=1)
                               for start in range(0, len(images), batch_size)])
    confidence, predicted = probabilities.max(dim=1)
    return Predictions(images, targets, predicted, confidence)


def read_curve(run_dir: str | Path, tag: str) -> tuple[list[int], list[float]]:
    """The steps and values logged under the scalar ``tag`` (e.g. ``val/acc``) in a run's TensorBoard files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    points = {}
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):  # a resumed run adds a file
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    stored_as_tensor = value.WhichOneof("value") == "tensor"
                    points[event.step] = float(make_ndarray(value.tensor)) if stored_as_tensor else value.simple_value
    steps = sorted(points)
    return steps, [points[step] for step in steps]
