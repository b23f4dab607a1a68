"""Open a finished run from its checkpoint or its curves (``metrics.csv``), for notebooks and scripts.

The notebooks' default paths are resolved against the repository root, found from the working
directory: JupyterLab starts a kernel in ``notebooks/``, ``jupyter nbconvert`` wherever it runs. A
path given in full opens from any folder, a copy of a notebook outside the repository included.

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
from cnnclf.checkpoints import checked_class, find_checkpoint, read_checkpoint
from cnnclf.checkpoints.runs import EVERY_EXPERIMENTS_RUNS
from cnnclf.curves import read_curve
from cnnclf.data import PickledImageDataModule
from cnnclf.data.safe_pickle import not_a_file
from cnnclf.errors import CheckpointError, ConfigError, DatasetError
from cnnclf.models import ImageClassifier
from cnnclf.summary import scores

__all__ = ["checkpoint_to_explore", "load_datamodule", "load_model", "predict_split", "read_curve",
           "repository_root"]


def repository_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (the working directory) with ``pyproject.toml`` and ``configs/``."""
    start = Path(start or Path.cwd()).resolve()
    root = _root_above(start)
    if root is None:
        raise ConfigError(f"{start}: not inside the cnnclf repository (no folder at or above it holds "
                          "pyproject.toml and configs/); give the notebook the full path of what to open instead (its "
                          "CHECKPOINT or SWEEP, or the environment variable CNNCLF_CHECKPOINT or CNNCLF_SWEEP)")
    return root


def _root_above(start: Path) -> Path | None:
    return next((folder for folder in (start, *start.parents)
                 if (folder / "pyproject.toml").is_file() and (folder / "configs").is_dir()), None)


def checkpoint_to_explore(given: str | Path | None = None, start: str | Path | None = None) -> tuple[Path, str]:
    """The checkpoint a notebook opens, and why that one.

    ``given``, when set, works from any folder: absolute, or relative to the working directory or
    else to the repository root. Without it, the checkpoint ``--ckpt_path best`` means without a
    config: the newest finished run of any experiment under the repository's ``runs/``, its
    ``best.ckpt``, or its ``last.ckpt`` when it trained without validation.
    """
    if given:
        path = Path(given).expanduser()
        root = None if path.is_absolute() or path.exists() else _root_above(Path(start or Path.cwd()).resolve())
        path = root / path if root is not None else path
        if not path.is_file():
            raise CheckpointError(f"{given}: no such checkpoint file")
        return path, "the checkpoint given"
    runs = repository_root(start) / "runs"
    try:
        return find_checkpoint(runs, "best", EVERY_EXPERIMENTS_RUNS)
    except CheckpointError as error:
        raise CheckpointError(f"no checkpoint to explore by default ({error}); train one with `make demo`, or give "
                              "the notebook a checkpoint file") from None


def load_model(checkpoint: str | Path) -> ImageClassifier:
    """The trained model of ``checkpoint``, in eval mode on the CPU."""
    content = read_checkpoint(checkpoint)
    hparams = dict(content.get("hyper_parameters") or {})
    if "_class_path" not in hparams:
        raise CheckpointError(f"{checkpoint}: its hyper-parameters do not name its model class (not saved by "
                              "'cnnclf fit')")
    architecture = checked_class(hparams.pop("_class_path"), models, ImageClassifier, str(checkpoint))
    model = architecture(**{key: value for key, value in hparams.items() if not key.startswith("_")})
    model.load_state_dict(content["state_dict"])
    return model.eval()


def load_datamodule(checkpoint: str | Path, **overrides) -> PickledImageDataModule:
    """The data module of the run ``checkpoint`` belongs to, from the run's saved config.yaml.

    A relative data ``path`` is read from the root of the repository the run lies in, where the
    run was started, so a notebook finds the data whatever its working directory. Where the data
    is elsewhere (the run was copied, or trained on another machine), pass ``path=``.
    """
    config_path = Path(checkpoint).resolve().parent.parent / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: no run config beside the checkpoint's folder")
    data = yaml.safe_load(config_path.read_text())["data"]
    module = checked_class(data["class_path"], data_modules, PickledImageDataModule, str(config_path))
    arguments = dict(data.get("init_args", {}))
    root = _root_above(config_path.parent)
    if arguments.get("path") and root is not None:
        arguments["path"] = str(root / arguments["path"])
    arguments.update(overrides)  # a path given here is the caller's, from their working directory
    path = Path(arguments.get("path") or "")
    if arguments.get("path") and not path.is_file():
        origin = "as given" if "path" in overrides else f"{config_path} gives data.path {data['init_args']['path']!r}"
        raise DatasetError(f"{path}: {not_a_file(path)} ({origin}); pass the dataset's pickle file: "
                           "load_datamodule(checkpoint, path=...)")
    return module(**arguments)


@dataclass(frozen=True)
class Predictions:
    images: Tensor  # (N, C, H, W) raw pixels
    targets: Tensor  # (N,) class indices
    predicted: Tensor  # (N,) class indices
    confidence: Tensor  # (N,) probability of the predicted class
    loss: Tensor  # (N,) cross-entropy of each image


@torch.no_grad()
def predict_split(model: ImageClassifier, images: Tensor, targets: Tensor, batch_size: int = 1000) -> Predictions:
    """The model's predictions, their probabilities and losses for a whole split."""
    logits = torch.cat([model.evaluation_logits(images[start:start + batch_size])
                        for start in range(0, len(images), batch_size)])
    loss, predicted, confidence = scores(logits, targets)
    return Predictions(images, targets, predicted, confidence, loss)
