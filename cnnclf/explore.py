"""Open a finished run (its folder's files, its checkpoint, its data) for the report, sweeps, notebooks and scripts;
checkpoints are read weights only and may name only cnnclf's own classes (docs/safety.md)."""

import json
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

RUN_RECORD = "sweep_run.json"  # what a sweep records of each of its runs


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass(frozen=True)
class Run:
    """What a run folder holds; each file's content is empty where the run did not write it."""

    folder: Path
    checkpoint: Path | None  # absolute: the one given, else the tested one, else best.ckpt, else last.ckpt
    config: dict  # config.yaml, as the fit saved it
    summary: dict  # test/summary.json
    fit: dict  # fit_time.json
    record: dict  # sweep_run.json
    val_accuracy: float | None  # the best epoch's (the tested checkpoint is the best by val/acc)

    name = property(lambda self: self.record.get("name") or f"{self.folder.parent.name}/{self.folder.name}")
    # what a sweep tabulates, by the names of its results.csv
    overrides = property(lambda self: self.record.get("overrides", {}))
    status = property(lambda self: self.record.get("status", "ok"))
    test_accuracy = property(lambda self: self.summary.get("accuracy"))
    test_macro_f1 = property(lambda self: self.summary.get("macro_f1"))
    epochs = property(lambda self: self.fit.get("epochs"))
    fit_seconds = property(lambda self: self.fit.get("fit_seconds"))


def read_run(path: str | Path) -> Run:
    """The run of a run folder, or of a checkpoint inside one (``RUN/checkpoints/x.ckpt``)."""
    path = Path(path)
    folder = path.parents[1] if path.is_file() else path
    summary = read_json(folder / "test" / "summary.json")
    tested = Path(summary.get("checkpoint") or "")
    # The run's own copy first: a run folder that was moved or copied still names the old place.
    candidates = [path, folder / "checkpoints" / tested.name, tested,
                  *(folder / "checkpoints" / name for name in ("best.ckpt", "last.ckpt"))]
    checkpoint = next((file.resolve() for file in candidates if file.name and file.is_file()), None)
    config = folder / "config.yaml"
    return Run(folder, checkpoint, yaml.safe_load(config.read_text()) if config.is_file() else {}, summary,
               read_json(folder / "fit_time.json"), read_json(folder / RUN_RECORD),
               max(read_curve(folder, "val/acc")[1], default=None))


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
    """The checkpoint a notebook opens and why: ``given`` (absolute, or from the working directory or else the
    repository root), or else the one ``--ckpt_path best`` finds among every experiment under ``runs/``."""
    if given:
        path, root = Path(given).expanduser(), _root_above(Path(start or Path.cwd()).resolve())
        path = path if path.exists() or root is None else root / path  # an absolute path stays as it is
        if not path.is_file():
            raise CheckpointError(f"{given}: no such checkpoint file")
        return path, "the checkpoint given"
    try:
        return find_checkpoint(repository_root(start) / "runs", "best", EVERY_EXPERIMENTS_RUNS)
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
    """The data module of the run ``checkpoint`` belongs to, from its config.yaml; a relative data path (a pickle's
    ``path``, an image folder's ``root``) is read from the root of the repository the run lies in, one given as
    ``path=`` or ``root=`` from the working directory."""
    config_path = Path(checkpoint).resolve().parents[1] / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: no run config beside the checkpoint's folder")
    data = yaml.safe_load(config_path.read_text())["data"]
    module = checked_class(data["class_path"], data_modules, PickledImageDataModule, str(config_path))
    arguments = dict(data.get("init_args", {}))
    root = _root_above(config_path.parent)
    for key in ("path", "root"):
        if arguments.get(key) and root is not None:
            arguments[key] = str(root / arguments[key])
    arguments.update(overrides)
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
