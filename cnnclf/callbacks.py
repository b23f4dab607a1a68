"""Callbacks the CLI always adds (beside checkpointing's): a non-finite loss guard, the fit time, the layer table,
the test summary, the predictions CSV."""

import csv
import hashlib
import io
import json
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from cnnclf.checkpoints import FINISHED_MARKER
from cnnclf.config_text import read_yaml
from cnnclf.csv_cells import safe_cell
from cnnclf.errors import CheckpointError, CnnclfError, ConfigError, NonFiniteLossError
from cnnclf.evaluation import (
    most_confused,
    most_confused_text,
    never_predicted,
    per_class_scores,
    plot_confusion_matrix,
    plot_predictions,
    predictions_from_confusion,
    scores,
)
from cnnclf.stats import accuracy_interval, accuracy_text, macro_f1, macro_f1_interval


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
    """Prints how long ``fit`` took, and writes it to ``fit_time.json`` in the run folder when training ends
    (the mark of a finished run: a fit starting there removes it), with the process's CPU time over the same
    span (``cpu_seconds``: on a shared machine it varies far less than the wall time).

    The clock covers the training and validation loops, not start-up or data loading. ``epochs`` and ``steps``
    count the whole run; ``trained_epochs`` and ``trained_steps`` this fit's part of it, and ``resumed_at_epoch``
    (from 1) and ``resumed_at_step`` say where a resumed fit began (``null`` for one that was not).
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        marker = run_directory(trainer) / FINISHED_MARKER  # every process asks: rank 0 broadcasts it
        if trainer.is_global_zero and not trainer.fast_dev_run:
            marker.unlink(missing_ok=True)
        self.start_step, self.first_epoch = trainer.global_step, None
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.first_epoch is None:
            self.first_epoch = trainer.current_epoch

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start
        marker = run_directory(trainer) / FINISHED_MARKER
        if not trainer.is_global_zero:
            return
        resumed, epochs, steps = self.start_step > 0, trainer.current_epoch, trainer.global_step
        first_epoch = epochs if self.first_epoch is None else self.first_epoch
        summary = {"fit_seconds": round(seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2), "epochs": epochs,
                   "steps": steps, "trained_epochs": epochs - first_epoch, "trained_steps": steps - self.start_step,
                   "resumed_at_epoch": first_epoch + 1 if resumed else None,
                   "resumed_at_step": self.start_step if resumed else None}
        if not trainer.fast_dev_run:  # which has no run folder
            marker.write_text(json.dumps(summary))
        if not resumed:
            print(f"Trained {epochs} epochs ({steps} steps) in {seconds:.1f} s")
        else:
            trained = f"epoch {epochs}" if first_epoch + 1 == epochs else f"epochs {first_epoch + 1}-{epochs}"
            print(f"Trained {trained} ({summary['trained_steps']} steps) in {seconds:.1f} s "
                  f"(resumed at epoch {first_epoch + 1}, step {self.start_step})")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start_step is None and trainer.is_global_zero:  # Lightning found the limits reached
            print(f"Nothing left to train: the checkpoint had reached the run's limits, at step {trainer.global_step}; "
                  "train longer with a larger --trainer.max_epochs or --trainer.max_steps")


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


def test_folder(run: Path, data_path: str | None) -> Path:
    """``test`` in the run for its own data (that of its ``config.yaml``); for other data a folder beside
    it named by that data, so that testing a finished run's checkpoint elsewhere never replaces its results."""
    try:
        trained_on = read_yaml((run / "config.yaml").read_text(encoding="utf-8"), str(run / "config.yaml"))
        trained_on = trained_on["data"]["init_args"]["path"]
    except (OSError, CnnclfError, KeyError, TypeError, UnicodeDecodeError):
        trained_on = None  # no run config (a Python caller's Trainer): the run is this process's own
    if data_path is None or trained_on is None or Path(trained_on).resolve() == Path(data_path).resolve():
        return run / "test"
    digest = hashlib.sha256(str(Path(data_path).resolve()).encode()).hexdigest()[:8]
    return run / f"test-{Path(data_path).name[:40]}-{digest}"


class TestSummary(L.Callback):
    """After ``test``: prints and saves the accuracy with its exact 95% interval, macro F1 with a bootstrap
    interval, the per-class scores, the classes never predicted, the most-confused class pairs, the confusion
    matrix (counts and normalized by true class) and the highest-loss test images.

    Writes ``summary.txt``, ``summary.json`` (both name the tested checkpoint), ``per_image.csv`` (each test
    image's index, true and predicted label, confidence and loss: what ``cnnclf compare`` pairs),
    ``confusion_matrix.png``, ``confusion_matrix_normalized.png`` and ``top_losses.png`` into the run's ``test/``
    (``test-<data>-<digest>/`` for data other than the run's own: ``test_folder``; nothing in a
    ``fast_dev_run``, which has none) and logs the figures to TensorBoard. Labels are the dataset's own (ORL
    1..40), taken from the model's ``class_names``. The ``top_losses`` highest-loss images are kept as a running
    selection on the device while testing and gathered from every process once, at the end.
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
        self.per_image = []  # (targets, predicted, confidence, loss) of each batch, on the device

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        images, targets = batch
        loss, predicted, confidence = scores(outputs, targets)
        self.per_image.append(torch.stack([targets.float(), predicted.float(), confidence, loss]))
        batch_worst = self._highest_losses({"loss": loss, "images": images, "targets": targets,
                                            "predicted": predicted, "confidence": confidence})
        batch_worst["images"] = batch_worst["images"].float()
        self.worst = self._highest_losses({key: torch.cat([value, batch_worst[key]])
                                           for key, value in self.worst.items()})

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = pl_module.test_metrics.summed_confusion().cpu().numpy()  # before the model's epoch end resets it
        worst = self.worst
        per_image = torch.cat(self.per_image, dim=1).T.tolist() if self.per_image else []
        if trainer.world_size > 1:
            worst = self._highest_losses({key: pl_module.all_gather(value).flatten(0, 1)
                                          for key, value in worst.items()})
            # Process r tested images r, r + W, r + 2W, ...: interleave them back into the split's order.
            shards = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, per_image)
            per_image = [shard[k] for k in range(len(shards[0])) for shard in shards if k < len(shard)]
        folder = test_folder(run_directory(trainer), getattr(trainer.datamodule, "path", None))
        if not trainer.is_global_zero:
            return
        worst = {key: value[worst["loss"] > -torch.inf].cpu() for key, value in worst.items()}
        names = class_names(pl_module)
        text, per_class = per_class_scores(matrix, names)
        confused = most_confused(matrix, names)
        correct, images = int(matrix.trace()), int(matrix.sum())
        f1, f1_interval = float(macro_f1(matrix)), macro_f1_interval(*predictions_from_confusion(matrix), len(names))
        missing = never_predicted(matrix, names)
        headline = (f"accuracy: {accuracy_text(correct, images)}\nmacro F1: {f1:.4f} (95% CI {f1_interval[0]:.4f}-"
                    f"{f1_interval[1]:.4f}, bootstrap over the test images)\n"
                    f"never predicted: {', '.join(missing) or 'none'}")
        top_losses = [{"true": names[true], "predicted": names[predicted], "confidence": confidence, "loss": loss}
                      for true, predicted, confidence, loss in zip(
                          worst["targets"].tolist(), worst["predicted"].tolist(), worst["confidence"].tolist(),
                          worst["loss"].tolist(), strict=True)]
        rows = "".join(f"{index},{names[int(true)]},{names[int(guess)]},{confidence:.6f},{loss:.6f}\n"
                       for index, (true, guess, confidence, loss) in enumerate(per_image))
        files = {"summary.txt": f"{text}\n{headline}\n\n{most_confused_text(confused)}\n\n"
                                f"checkpoint: {trainer.ckpt_path or 'none (the weights in memory)'}\n"
                                "figures beside this file: confusion_matrix.png, confusion_matrix_normalized.png, "
                                f"top_losses.png (the {len(top_losses)} highest-loss test images); summary.json holds "
                                "these numbers, per_image.csv each image's prediction\n",
                 "summary.json": json.dumps(
                     {"accuracy": correct / images, "correct": correct, "images": images,
                      "accuracy_ci95": accuracy_interval(correct, images), "macro_f1": f1, "macro_f1_ci95": f1_interval,
                      "never_predicted": missing, "per_class": per_class, "confusion_matrix": matrix.tolist(),
                      "class_names": names, "most_confused": confused, "top_losses": top_losses,
                      "checkpoint": trainer.ckpt_path}, indent=1),
                 "per_image.csv": "index,true,predicted,confidence,loss\n" + rows}
        figures = {"confusion_matrix": plot_confusion_matrix(matrix, names),
                   "confusion_matrix_normalized": plot_confusion_matrix(matrix, names, normalize=True),
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
        print(f"\n{text}\nTest {headline}\n\n{most_confused_text(confused)}\n\n"
              f"Summary, per-image predictions, confusion matrices and highest-loss images {where}")

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
        if not all(math.isfinite(confidence) for _, confidence in rows):
            bad = sum(not math.isfinite(confidence) for _, confidence in rows)
            raise CheckpointError(f"{trainer.ckpt_path or 'the model'}: its outputs are NaN or infinite for {bad} of "
                                  f"{len(rows)} images; nothing written")
        names = class_names(pl_module)
        skipped, listed = trainer.datamodule.predict_skipped, path.with_name(f"{path.stem}_skipped.csv")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="", encoding="utf-8") as stream:
                writer = csv.writer(stream)
                writer.writerow(["source", "label", "probability"])
                # limit_predict_batches and fast_dev_run predict the first sources only
                for source, (label, confidence) in zip(trainer.datamodule.predict_sources[:len(rows)], rows,
                                                       strict=True):
                    writer.writerow([safe_cell(source), safe_cell(names[label]), f"{confidence:.6f}"])
            listed.unlink(missing_ok=True)  # a previous predict's list
            if skipped:
                with listed.open("w", newline="", encoding="utf-8") as stream:
                    csv.writer(stream).writerows([("source", "reason"), *(map(safe_cell, row) for row in skipped)])
        except OSError as error:  # a folder, a full or read-only disk
            raise ConfigError(f"--prediction_csv.output {path}: cannot be written: {error.strerror}") from None
        print(f"Wrote {len(rows)} predictions to {path}"
              + (f"; skipped {len(skipped)} files, listed in {listed}" if skipped else ""))
