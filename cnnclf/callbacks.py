"""Callbacks the CLI always adds (beside ``cnnclf.checkpoints.RunCheckpoints``): a non-finite loss guard, the
fit time, the layer table, the test summary, the predictions CSV."""

import csv
import io
import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from cnnclf.errors import NonFiniteLossError
from cnnclf.evaluation import (
    most_confused,
    most_confused_text,
    per_class_scores,
    plot_confusion_matrix,
    plot_predictions,
    scores,
)


def run_directory(trainer: L.Trainer) -> Path:
    """The run's folder. In a distributed run every process must ask: rank 0 broadcasts it."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def class_names(model: L.LightningModule) -> list[str]:
    names = model.hparams.get("class_names")
    return list(names) if names else [str(index) for index in range(model.hparams.num_classes)]


class NonFiniteLossGuard(L.Callback):
    """Stops training with a clear error at the first NaN or infinite training loss.

    Each step's loss is kept, and the kept losses are read at once every ``log_every_n_steps`` (or 50),
    at each epoch's last batch, and before anything runs on or saves the model: validation, a
    checkpoint, the end of training. On a GPU each read makes the CPU wait for it; keeping a loss
    launches nothing.
    """

    def __init__(self) -> None:
        self.unread: list[tuple[int, int, Tensor]] = []  # (step, epoch, loss)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.unread = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.step = trainer.global_step + 1  # the optimizer step this batch's loss goes into (or accumulates for)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach()
        self.unread.append((self.step, trainer.current_epoch, loss))
        every = trainer.log_every_n_steps or 50  # 0 turns the logging off, not the guard
        if batch_idx + 1 == trainer.num_training_batches or self.step % every == 0:
            self.read(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.read(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.read(trainer)  # raising here stops the write

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.read(trainer)

    def read(self, trainer: L.Trainer) -> None:
        """Read the kept losses: stop at the first non-finite one, in every process at once."""
        if not self.unread:  # the same in every process: they step in lock-step
            return
        steps, epochs, losses = zip(*self.unread, strict=True)
        self.unread = []
        finite = torch.stack(losses).isfinite().tolist()
        if trainer.strategy.reduce_boolean_decision(all(finite), all=True):
            return
        first, where = (finite.index(False), "at") if False in finite else (-1, "in another process by")
        raise NonFiniteLossError(
            f"the training loss became non-finite (NaN or inf) {where} step {steps[first]} (epoch "
            f"{epochs[first]}); training stopped and no checkpoint was written from it. "
            "Lower --model.lr, or check the input data")


class FitTimer(L.Callback):
    """Prints how long ``fit`` took, writes it to ``fit_time.json`` in the run directory and keeps it
    in ``seconds``, with the process's CPU time over the same span in ``cpu_seconds`` (for
    benchmarks: on a machine shared with other work, the CPU time varies far less than the wall time).

    The clock covers the training and validation loops, not start-up or data loading, so runs
    on different data sizes and machines compare on the work itself. ``epochs`` and ``steps``
    count the whole run; a resumed fit times only its own part, so ``trained_epochs`` and
    ``trained_steps`` count that part, and ``resumed_at_epoch`` (from 1) and ``resumed_at_step``
    say where it began (``null`` for a fit that was not resumed).
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resumed from the end of an epoch, Lightning restores that epoch with its last batch done and
        # ends it again: the training starts with the next. A fit stopped between two epochs has ended
        # its last one (its batch counts still say "last batch"), and the training starts at the current.
        epochs = trainer.fit_loop.epoch_progress.current
        ending_again = epochs.started > epochs.completed and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        self.start_epoch = trainer.current_epoch + int(ending_again)
        self.start_step = trainer.global_step
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start
        path = run_directory(trainer) / "fit_time.json"
        if not trainer.is_global_zero:
            return
        resumed = self.start_step > 0
        first_epoch, last_epoch = self.start_epoch + 1, trainer.current_epoch
        summary = {"fit_seconds": round(seconds, 2), "epochs": last_epoch, "steps": trainer.global_step,
                   "trained_epochs": last_epoch - self.start_epoch,
                   "trained_steps": trainer.global_step - self.start_step,
                   "resumed_at_epoch": first_epoch if resumed else None,
                   "resumed_at_step": self.start_step if resumed else None}
        if not trainer.fast_dev_run:  # which has no run folder
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary))
        if not resumed:
            print(f"Trained {summary['epochs']} epochs ({summary['steps']} steps) in {seconds:.1f} s")
            return
        if not summary["trained_steps"]:
            print(f"Nothing left to train: the checkpoint had finished epoch {last_epoch}, step {self.start_step}")
            return
        epochs = f"epoch {last_epoch}" if first_epoch == last_epoch else f"epochs {first_epoch}-{last_epoch}"
        print(f"Trained {epochs} ({summary['trained_steps']} steps) in {seconds:.1f} s "
              f"(resumed at epoch {first_epoch}, step {self.start_step})")


class NetworkSummary(ModelSummary):
    """Lightning's layer table of a model, with its network's layers only (not its metrics or loss)."""

    @property
    def named_modules(self) -> list[tuple[str, nn.Module]]:
        return [(name, module) for name, module in super().named_modules
                if not isinstance(module, (Metric, MetricCollection, nn.modules.loss._Loss))]


class LayerTable(L.Callback):
    """Prints the network's layers with their input and output shapes as ``fit`` starts, like the report's tables.

    Args:
        max_depth: how many levels of nested layers to list; 0 prints no table.
    """

    def __init__(self, max_depth: int = 3) -> None:
        self.max_depth = max_depth

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.max_depth and trainer.is_global_zero:
            print(NetworkSummary(pl_module, max_depth=self.max_depth))


class TestSummary(L.Callback):
    """After ``test``: prints and saves the per-class scores, the most-confused class pairs, the confusion
    matrix and the highest-loss test images.

    Writes ``test/summary.txt``, ``test/summary.json`` (both name the tested checkpoint),
    ``test/confusion_matrix.png`` and ``test/top_losses.png`` into the run directory (nothing in a
    ``fast_dev_run``, which has none) and logs both figures to TensorBoard. Labels are the dataset's
    own (ORL 1..40), taken from the model's ``class_names``. The ``top_losses`` highest-loss images
    are kept as a running selection on the device while testing and gathered from every process
    once, at the end.
    """

    def __init__(self, top_losses: int = 16) -> None:
        self.top_losses = top_losses

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        count, device = self.top_losses, pl_module.device
        # Filled slots sort first; every process holds the same shapes, as gathering needs.
        self.worst = {"loss": torch.full((count,), -torch.inf, device=device),
                      "images": torch.zeros(count, *pl_module.hparams.image_shape, device=device),
                      "targets": torch.zeros(count, dtype=torch.long, device=device),
                      "predicted": torch.zeros(count, dtype=torch.long, device=device),
                      "confidence": torch.zeros(count, device=device)}

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        images, targets = batch
        loss, predicted, confidence = scores(outputs, targets)
        batch_worst = self._highest_losses({"loss": loss, "images": images, "targets": targets,
                                            "predicted": predicted, "confidence": confidence})
        batch_worst["images"] = batch_worst["images"].float()
        self.worst = self._highest_losses({key: torch.cat([value, batch_worst[key]])
                                           for key, value in self.worst.items()})

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = pl_module.test_metrics.summed_confusion().cpu().numpy()  # before the model's epoch end resets it
        worst = self.worst
        if trainer.world_size > 1:
            worst = self._highest_losses({key: pl_module.all_gather(value).flatten(0, 1)
                                          for key, value in worst.items()})
        folder = run_directory(trainer) / "test"
        if not trainer.is_global_zero:
            return
        worst = {key: value[worst["loss"] > -torch.inf].cpu() for key, value in worst.items()}
        names = class_names(pl_module)
        text, per_class = per_class_scores(matrix, names)
        confused = most_confused(matrix, names)
        accuracy = matrix.trace() / matrix.sum()
        top_losses = [{"true": names[true], "predicted": names[predicted], "confidence": confidence, "loss": loss}
                      for true, predicted, confidence, loss in zip(
                          worst["targets"].tolist(), worst["predicted"].tolist(), worst["confidence"].tolist(),
                          worst["loss"].tolist(), strict=True)]
        files = {"summary.txt": f"{text}\naccuracy: {accuracy:.4%}\n\n{most_confused_text(confused)}\n\n"
                                f"checkpoint: {trainer.ckpt_path or 'none (the weights in memory)'}\n"
                                "figures beside this file: confusion_matrix.png, top_losses.png (the "
                                f"{len(top_losses)} highest-loss test images); summary.json holds these numbers\n",
                 "summary.json": json.dumps(
                     {"accuracy": accuracy, "images": int(matrix.sum()), "per_class": per_class,
                      "confusion_matrix": matrix.tolist(), "class_names": names, "most_confused": confused,
                      "top_losses": top_losses, "checkpoint": trainer.ckpt_path}, indent=1)}
        figures = {"confusion_matrix": plot_confusion_matrix(matrix, names),
                   "top_losses": plot_predictions(worst["images"], worst["targets"], worst["predicted"],
                                                  worst["confidence"], names,
                                                  "highest-loss test images: true -> predicted (confidence)")}
        # A fast_dev_run is a smoke test without a run folder (Lightning turns its logger off): the summary is
        # computed and drawn all the same, so the smoke test covers it, but saved nowhere.
        save = not trainer.fast_dev_run
        if save:
            folder.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                (folder / name).write_text(content)
        for name, figure in figures.items():
            figure.savefig(folder / f"{name}.png" if save else io.BytesIO(), dpi=120)
            if isinstance(trainer.logger, TensorBoardLogger):
                trainer.logger.experiment.add_figure(f"test/{name}", figure, trainer.global_step)
        where = f"saved in {folder}" if save else "not saved (fast_dev_run)"
        print(f"\n{text}\nTest accuracy: {accuracy:.2%} on {int(matrix.sum())} images\n\n"
              f"{most_confused_text(confused)}\n\nSummary, confusion matrix and highest-loss images {where}")

    def _highest_losses(self, samples: dict[str, Tensor]) -> dict[str, Tensor]:
        keep = samples["loss"].topk(min(self.top_losses, len(samples["loss"]))).indices
        return {key: value[keep] for key, value in samples.items()}


class PredictionCSV(BasePredictionWriter):
    """After ``predict``: writes the predictions (source, label, probability) as CSV.

    The source is the image file, or the record index in the pickle's test split; the label is
    in the dataset's own label space. Files that were skipped (unreadable, or not images) are listed
    with the reason in ``<output>_skipped.csv`` beside it, and counted in the summary line.

    Args:
        output: the CSV file to write; default: ``predictions.csv`` in the checkpoint's run.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        rows = list(zip(torch.cat([batch[0] for batch in predictions]).tolist(),
                        torch.cat([batch[1] for batch in predictions]).tolist(), strict=True))
        if trainer.world_size > 1:
            # Process r predicted samples r, r + W, r + 2W, ...: interleave them back into file order.
            shards = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, rows)
            rows = [shard[k] for k in range(len(shards[0])) for shard in shards if k < len(shard)]
        path = Path(self.output) if self.output else run_directory(trainer) / "predictions.csv"
        if not trainer.is_global_zero:
            return
        names = class_names(pl_module)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["source", "label", "probability"])
            # limit_predict_batches and fast_dev_run predict the first sources only
            for source, (label, confidence) in zip(trainer.datamodule.predict_sources[:len(rows)], rows, strict=True):
                writer.writerow([source, names[label], f"{confidence:.6f}"])
        skipped, listed = trainer.datamodule.predict_skipped, path.with_name(f"{path.stem}_skipped.csv")
        listed.unlink(missing_ok=True)  # a previous predict's list
        if skipped:
            with listed.open("w", newline="") as stream:
                csv.writer(stream).writerows([("source", "reason"), *skipped])
        print(f"Wrote {len(rows)} predictions to {path}"
              + (f"; skipped {len(skipped)} files, listed in {listed}" if skipped else ""))
