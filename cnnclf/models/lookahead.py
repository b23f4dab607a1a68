"""Lookahead weight averaging, as airbench trains CIFAR-10: an exponential moving average of the weights that
the network is pulled back onto every few steps and at each epoch's end, so the network tested and saved is a
smoothed one. In a config's ``trainer.callbacks``: ``- class_path: cnnclf.models.lookahead.Lookahead``.
"""

import lightning as L
import torch
from torch import Tensor


class Lookahead(L.Callback):
    """Args:
        start_epoch: begin averaging at this epoch (the first weights move too fast to average).
        every_n_steps: average, and copy the average back into the network, every this many steps.
        decay: per-step decay of the average; it is raised to ``every_n_steps``, and scaled by
            (progress through training) ** ``decay_power``, so it averages ever more strongly.
        decay_power: see ``decay``.
    """

    def __init__(self, start_epoch: int = 3, every_n_steps: int = 5, decay: float = 0.95,
                 decay_power: float = 3.0) -> None:
        self.start_epoch, self.every_n_steps = start_epoch, every_n_steps
        self.decay, self.decay_power = decay, decay_power
        self.average: dict[str, Tensor] | None = None
        self.pairs: tuple[list[Tensor], list[Tensor]] | None = None  # (averages, weights), in one order

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pairs = None  # moving the model to its device may have replaced its tensors

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step  # already counts this batch's optimizer step
        if trainer.current_epoch < self.start_epoch or step % self.every_n_steps:
            return
        if self.average is None:
            self.average = {name: value.detach().clone() for name, value in _averaged(pl_module)}
            return
        progress = step / trainer.estimated_stepping_batches
        self._pull(pl_module, self.decay ** self.every_n_steps * progress**self.decay_power)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.average is not None:
            self._pull(pl_module, 1.0)  # the network takes the average, for evaluation and checkpoints

    @torch.no_grad()
    def _pull(self, pl_module: L.LightningModule, decay: float) -> None:
        if self.pairs is None:
            weights = dict(_averaged(pl_module))
            self.pairs = [self.average[name] for name in weights], list(weights.values())
        averages, weights = self.pairs
        # One kernel each for all the tensors, instead of two per tensor: on a GPU a small network's
        # step launches fewer kernels than this would. The multi-tensor ops torch's optimizers use.
        torch._foreach_lerp_(averages, weights, 1 - decay)
        torch._foreach_copy_(weights, averages)

    def state_dict(self) -> dict:
        return {"average": self.average}

    def load_state_dict(self, state: dict) -> None:
        self.average = state["average"]


def _averaged(pl_module: L.LightningModule):
    """The floating-point weights and buffers (batch-norm statistics too), by name."""
    return ((name, value) for name, value in pl_module.state_dict(keep_vars=True).items()
            if value.is_floating_point())
