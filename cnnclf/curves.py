"""Every figure a run logs, also as ``step,epoch,name,value`` rows of the run's ``metrics.csv``, which a resumed fit
and a later test append to (Lightning's ``CSVLogger`` deletes the file of a run folder that is not empty)."""

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from cnnclf.callbacks import run_directory

CURVES_FILE = "metrics.csv"


class CSVCurveLogger(Logger):
    """Appends each logged scalar to ``path`` as ``step,epoch,name,value`` (the first process only)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)

    name = "csv_curves"
    version = ""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        epoch = metrics.get("epoch", "")
        rows = [(step, "" if epoch == "" else int(epoch), name, float(value))
                for name, value in metrics.items() if name != "epoch"]
        new = not self.path.is_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as stream:
            writer = csv.writer(stream)
            if new:
                writer.writerow(["step", "epoch", "name", "value"])
            writer.writerows(rows)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The run's config.yaml holds them."""


class CurvesCSV(L.Callback):
    """Writes the run's curves to ``metrics.csv`` (``CSVCurveLogger``) beside its other loggers, and logs
    each training epoch's mean loss (``train/epoch_loss``) and its last learning rate (``train/lr``)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.loggers and not trainer.fast_dev_run and not any(
                isinstance(logger, CSVCurveLogger) for logger in trainer.loggers):
            trainer.loggers = [*trainer.loggers, CSVCurveLogger(run_directory(trainer) / CURVES_FILE)]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.loss_sum, self.images = torch.zeros((), device=pl_module.device), 0

    # A fit resumed mid-epoch starts without an epoch start: its mean covers the batches it trains.
    on_train_start = on_train_epoch_start

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self.loss_sum += outputs["loss"].detach().float() * len(batch[1])  # on the device: no wait for it
        self.images += len(batch[1])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.images:
            pl_module.log("train/epoch_loss", self.loss_sum / self.images, sync_dist=True)
        if trainer.optimizers:
            pl_module.log("train/lr", float(trainer.optimizers[0].param_groups[0]["lr"]))


def read_curve(run_dir: str | Path, name: str) -> tuple[list[int], list[float]]:
    """The steps and values logged under ``name`` (``val/acc``) in a run's ``metrics.csv``, a step logged twice (a
    fit resumed from before it) with its latest value; two empty lists when none is."""
    path = Path(run_dir) / CURVES_FILE
    if not path.is_file():
        return [], []
    with path.open(newline="") as stream:
        points = {int(row["step"]): float(row["value"]) for row in csv.DictReader(stream) if row["name"] == name}
    steps = sorted(points)
    return steps, [points[step] for step in steps]
