"""The checkpoint callback: which checkpoints a run keeps, and what resuming from one needs beyond Lightning."""

import shutil
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cnnclf.checkpoints.runs import remove_unstarted_run
from cnnclf.checkpoints.safe_io import SafeCheckpointIO
from cnnclf.errors import ConfigError
from cnnclf.files import write_atomically


class RunCheckpoints(ModelCheckpoint):
    """Keeps ``best.ckpt`` (by ``val/acc``) and ``last.ckpt`` in the run's ``checkpoints/``; resumes from them exactly.

    Without a validation split there is nothing to rank by: the one checkpoint kept is the newest,
    ``last.ckpt``, written every ``every_n_epochs`` epochs and when training ends (once per save, not
    twice: the report's ORL net makes large checkpoints), and it stands for the best. A fit stopped from outside
    (SIGTERM from a scheduler, Ctrl-C) saves ``last.ckpt`` between two steps, and the end of training is
    always saved.

    Beside Lightning's own state (weights, optimizer, schedule, loop counters) every checkpoint holds
    each process's random generators, which augmentation and dropout draw from, how far into its
    epoch the training batches had gone, and the number of steps the learning-rate schedule was
    planned for. A fit resumed from it restores the first two and refuses to stretch the schedule.

    Args:
        min_save_interval: seconds; an epoch's routine last.ckpt is skipped until this long has passed
            since the previous save began (0: every epoch). For many short epochs, where writing a
            checkpoint costs much of each (small networks on a GPU; presets/gpu sets 30). A new best, the
            end of training and a stop from outside still save; a hard crash loses at most this long and
            an epoch.
    """

    def __init__(self, monitor: str = "val/acc", mode: str = "max", filename: str = "best",
                 save_last: bool = True, min_save_interval: float = 0.0, **kwargs) -> None:
        super().__init__(monitor=monitor, mode=mode, filename=filename, save_last=save_last,
                         auto_insert_metric_name=False, **kwargs)
        if min_save_interval < 0:
            raise ConfigError(f"checkpoint.min_save_interval must be seconds >= 0, found {min_save_interval}")
        self.min_save_interval = min_save_interval
        self.last_save_time = 0.0
        self.resumed: dict = {}
        self.carried_best: tuple[str, torch.Tensor] | None = None
        self.saved_step: int | None = None
        self.first_step: int | None = None  # this fit's, once training starts
        self.configured_state_key = super().state_key

    @property
    def state_key(self) -> str:
        """Lightning's key for the options as configured, kept when ``setup`` drops the monitor for a fit
        without validation: the run's later commands (test, predict, resume) find its state under it."""
        return self.configured_state_key

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default; a user's own plugin stays
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        if stage == "fit" and not getattr(trainer.datamodule, "has_validation", True):
            # Lightning's unranked top-1 checkpoint is the newest one, saved every every_n_epochs epochs.
            self.monitor, self.filename, self.save_last = None, self.CHECKPOINT_NAME_LAST, False
        super().setup(trainer, pl_module, stage)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        own = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}
        states = [own]
        if trainer.world_size > 1:  # every process builds the checkpoint; rank 0 writes it
            states = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, own)
        checkpoint["rng_states"] = states
        self.saved_step, self.last_save_time = trainer.global_step, time.monotonic()
        checkpoint["planned_steps"] = trainer.estimated_stepping_batches
        if hasattr(trainer.train_dataloader, "state_dict"):
            checkpoint["train_position"] = trainer.train_dataloader.state_dict()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == "fit":
            self.resumed = {key: checkpoint[key] for key in ("rng_states", "planned_steps", "train_position")
                            if key in checkpoint}

    def load_state_dict(self, state_dict: dict) -> None:
        """A resumed fit writes into a new run folder, where Lightning ranks afresh: its first epoch would
        become best.ckpt however it compared with the best so far. That best is carried instead, into a
        copy in the new folder as training starts (``_carry_best``)."""
        super().load_state_dict(state_dict)
        earlier = state_dict.get("dirpath")
        if earlier is None or Path(earlier).resolve() == Path(self.dirpath).resolve():
            return  # the same folder: Lightning's own restore
        best, score = state_dict.get("best_model_path"), state_dict.get("best_model_score")
        ranked_alike = self.monitor is not None and state_dict.get("monitor") == self.monitor and self.save_top_k != 0
        self.carried_best = (best, score) if ranked_alike and best and score is not None else None
        self.best_model_path = ""  # the earlier folder's, until a best is carried or ranked here

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Picks up where the checkpoint left off, as the first resumed step is about to be drawn."""
        super().on_train_start(trainer, pl_module)
        self.first_step, self.last_save_time = trainer.global_step, time.monotonic()
        resumed, self.resumed = self.resumed, {}
        planned, steps = resumed.get("planned_steps"), trainer.estimated_stepping_batches
        if trainer.lr_scheduler_configs and planned not in (None, steps):
            raise ConfigError(
                f"the checkpoint's {pl_module.hparams.lr_schedule} learning-rate schedule was planned for {planned} "
                f"steps, this run has {steps}: resume with the --trainer.max_epochs it was started with, or train "
                "longer in a new run"
            )
        # Lightning restores a loader's position only into a loader built after its loops are
        # restored; a step-wise schedule builds the training batches earlier, to count the steps.
        if "train_position" in resumed:
            trainer.train_dataloader.load_state_dict(resumed["train_position"])
        if "rng_states" in resumed:
            own = resumed["rng_states"][trainer.global_rank % len(resumed["rng_states"])]  # any process count
            torch.set_rng_state(own["torch"])
            if own["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(own["cuda"])
        self._carry_best(trainer)

    def _carry_best(self, trainer: L.Trainer) -> None:
        """Copies the best so far into this run's folder and ranks it there: a better epoch replaces the
        copy, and the run's best.ckpt is the best of the whole training. Gone, it is not carried."""
        carried, self.carried_best = self.carried_best, None
        if carried is None or not trainer.strategy.broadcast(Path(carried[0]).is_file()):
            return
        (earlier, score), here = carried, self.format_checkpoint_name({})
        if trainer.is_global_zero:
            with open(earlier, "rb") as source:
                write_atomically(Path(here), lambda stream: shutil.copyfileobj(source, stream))
        trainer.strategy.barrier()
        self.best_model_path = self.kth_best_model_path = here
        self.best_model_score = self.kth_value = score
        self.best_k_models = {here: score}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A fit resumed at an epoch's end runs that end again, without its validation: the checkpoints
        # ranked by it were written before the one resumed from, and there is no val/acc to rank by.
        if self.monitor is not None:
            due = self.monitor in trainer.callback_metrics
        else:  # Lightning's save here is then the routine one, which min_save_interval spaces out
            due = not self._saved_recently(trainer)
        if due:
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        # Lightning writes last.ckpt only beside a new best: once val/acc stops improving, a killed
        # run would lose every epoch since. Here it follows training every every_n_epochs epochs;
        # not when a new best is coming, which Lightning saves with last.ckpt as this epoch ends.
        due = self.every_n_epochs >= 1 and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if (self.save_last and self.monitor is not None and due and self.saved_step != trainer.global_step
                and trainer.state.fn == "fit" and not trainer.sanity_checking and not trainer.fast_dev_run
                and not self._new_best_is_coming(trainer) and not self._saved_recently(trainer)):
            self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            trainer.save_checkpoint(self.last_model_path, weights_only=False)

    def _new_best_is_coming(self, trainer: L.Trainer) -> bool:
        return self.save_top_k != 0 and self.check_monitor_top_k(trainer, trainer.callback_metrics.get(self.monitor))

    def _saved_recently(self, trainer: L.Trainer) -> bool:
        if not self.min_save_interval:
            return False
        # Every process must take rank 0's decision: a save is a collective step.
        return trainer.strategy.broadcast(time.monotonic() - self.last_save_time < self.min_save_interval)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.saved_step == trainer.global_step or trainer.fast_dev_run:
            return
        path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        if self.monitor is None:  # the newest checkpoint stands for the best
            self.best_model_path = path
        elif self.save_last:  # skipped by every_n_epochs or min_save_interval
            self.last_model_path = path
        else:
            return
        trainer.save_checkpoint(path, weights_only=False)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Stopped from outside: keeps the work done so far in ``last.ckpt``, with the batch position in the epoch,
        so ``--ckpt_path last`` carries on exactly where training stopped, unless the weights are no longer finite.
        Other errors (a bug, a diverged loss) save nothing: the previous ``last.ckpt`` is the one to trust."""
        super().on_exception(trainer, pl_module, exception)
        if trainer.state.fn != "fit":
            return
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            state = pl_module.state_dict().values()  # batch-norm statistics too: fp16 skips inf steps, not them
            if not all(value.isfinite().all() for value in state if value.is_floating_point()):
                print(f"Stopped at step {trainer.global_step}, after the loss diverged: nothing saved")
                return
            self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            trainer.save_checkpoint(self.last_model_path, weights_only=False)
            # After a SIGTERM the CLI says how to resume.
            hint = "; resume with --ckpt_path last" if isinstance(exception, KeyboardInterrupt) else ""
            print(f"Stopped at step {trainer.global_step}; saved {self.last_model_path}{hint}")
        elif (self.first_step in (None, trainer.global_step) and trainer.is_global_zero
              and isinstance(trainer.logger, TensorBoardLogger)):
            trainer.logger.finalize("failed")  # closes its event file before the folder goes
            remove_unstarted_run(Path(trainer.logger.log_dir))
