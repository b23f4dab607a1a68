"""Callbacks the CLI adds for training beside checkpointing's: a non-finite loss guard, the fit time, the layer
table."""

import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch import Tensor, nn

from cnnclf.checkpoints import FINISHED_MARKER
from cnnclf.errors import NonFiniteLossError


def run_directory(trainer: L.Trainer) -> Path:
    """The run's folder. In a distributed run every process must ask: rank 0 broadcasts it."""
    return Path(trainer.log_dir or trainer.default_root_dir)


class NonFiniteLossGuard(L.Callback):
    """Stops training with a clear error at the first NaN or infinite training loss. On a GPU a read makes the CPU
    wait, so each step's loss is kept and the kept ones read together: every ``log_every_n_steps`` (or 50), at each
    epoch's last batch, and before validation, a checkpoint or the end of training run on or save the model."""

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
    """Prints how long ``fit``'s loops took and writes ``fit_time.json`` (the mark of a finished run, removed as a
    fit starts there), with the process's CPU time (``cpu_seconds``: on a shared machine it varies far less than
    the wall time), the whole run's ``epochs`` and ``steps``, this fit's ``trained_epochs`` and ``trained_steps``,
    and where a resumed fit began (``resumed_at_epoch``, from 1, and ``resumed_at_step``; else ``null``)."""

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
            print(f"Trained {epochs} epoch{'s' * (epochs != 1)} ({steps} step{'s' * (steps != 1)}) in {seconds:.1f} s")
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
        return [(name, module) for name, module in super().named_modules if name.split(".")[0] == "net"]


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
