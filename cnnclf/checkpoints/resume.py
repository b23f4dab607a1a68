"""What an exact resume needs beyond Lightning's checkpoints, and the saves that keep a stopped fit's work."""

import functools
import signal
import sys
import threading
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cnnclf.errors import ConfigError


class ResumeState(L.Callback):
    """Puts a resumed fit back where its checkpoint left off, and keeps ``last.ckpt`` up with training.

    Every checkpoint also holds each process's random generators (augmentation and dropout draw from
    them), how far into its epoch the training batches had gone, and the steps the learning-rate
    schedule was planned for: Lightning saves none of them. A resumed fit restores the first two and
    refuses to stretch the schedule. The end of training is always in ``last.ckpt``, and a fit stopped
    from outside (SIGTERM, Ctrl-C) saves it between two steps, unless its weights are no longer finite.
    """

    def __init__(self) -> None:
        self.resumed: dict = {}
        self.saved_step: int | None = None
        self.ctrl_c_handler = None  # the one before fit's, while fit's is in place

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        own = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}
        states = [own]
        if trainer.world_size > 1:  # every process builds the checkpoint; rank 0 writes it
            states = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, own)
        checkpoint["rng_states"] = states
        checkpoint["planned_steps"] = trainer.estimated_stepping_batches
        if hasattr(trainer.train_dataloader, "state_dict"):
            checkpoint["train_position"] = trainer.train_dataloader.state_dict()
        self.saved_step = trainer.global_step

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == "fit":
            self.resumed = {key: checkpoint[key] for key in ("rng_states", "planned_steps", "train_position")
                            if key in checkpoint}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.saved_step = trainer.global_step
        if threading.current_thread() is threading.main_thread() and hasattr(trainer.train_dataloader, "stop"):
            self.ctrl_c_handler = signal.signal(signal.SIGINT, functools.partial(self.ask_to_stop, trainer))
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

    def ask_to_stop(self, trainer: L.Trainer, signal_number: int, frame) -> None:
        """Ctrl-C: stop as the next training batch is asked for, where the work so far is whole (mid-step, the
        batch in hand would be saved as trained, and its augmentation drawn); a second Ctrl-C stops at once."""
        trainer.train_dataloader.stop = True
        self.give_back_ctrl_c()
        print("Ctrl-C: stopping before the next training step (Ctrl-C again stops at once)", file=sys.stderr)

    def give_back_ctrl_c(self) -> None:
        if self.ctrl_c_handler is not None:
            signal.signal(signal.SIGINT, self.ctrl_c_handler)
            self.ctrl_c_handler = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The end of training, when ``every_n_epochs`` or ``train_time_interval`` skipped it."""
        last = last_checkpoint_path(trainer)
        if last is not None and self.saved_step != trainer.global_step and not trainer.fast_dev_run:
            trainer.save_checkpoint(last, weights_only=False)  # the whole state, to resume from
        self.give_back_ctrl_c()
        if getattr(trainer.train_dataloader, "stop", False):  # during the last validation: nothing follows it
            trainer.train_dataloader.stop = False
            raise KeyboardInterrupt

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Stopped from outside: the work so far goes into ``last.ckpt``, with the batch position in the epoch.
        Other errors (a bug, a diverged loss) save nothing: the previous ``last.ckpt`` is the one to trust."""
        self.give_back_ctrl_c()
        last = last_checkpoint_path(trainer)
        if (last is None or trainer.state.fn != "fit" or trainer.fast_dev_run
                or not isinstance(exception, (SIGTERMException, KeyboardInterrupt))):
            return
        state = pl_module.state_dict().values()  # batch-norm statistics too: fp16 skips inf steps, not them
        if not all(value.isfinite().all() for value in state if value.is_floating_point()):
            print(f"Stopped at step {trainer.global_step}, after the loss diverged: nothing saved")
            return
        if self.saved_step != trainer.global_step:
            trainer.save_checkpoint(last, weights_only=False)  # the whole state, to resume from
        hint = "; resume with --ckpt_path last" if isinstance(exception, KeyboardInterrupt) else ""  # SIGTERM: the CLI
        print(f"Stopped at step {trainer.global_step}; saved {last}{hint}")


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where the run's unranked checkpoint callback (``--last_checkpoint``) writes; None when it is off."""
    last = next((callback for callback in trainer.checkpoint_callbacks
                 if callback.monitor is None and callback.save_top_k != 0), None)
    return None if last is None else Path(last.format_checkpoint_name({}))
