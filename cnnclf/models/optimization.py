"""The optimizer and learning-rate schedule an ``ImageClassifier``'s options ask for (described there).

Schedules other than ``constant`` step every batch; ``triangle`` is airbench's. ``norm_lr_scale`` multiplies
the batch-norm parameters' learning rate and divides their weight decay, so its pull on them stays the same.
"""

from functools import partial
from typing import Literal

import lightning as L
import torch
from torch import nn

from cnnclf.errors import ConfigError

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "onecycle", "cosine", "triangle"]
# torch's public batch norms; SyncBatchNorm is what Lightning's --trainer.sync_batchnorm swaps in before the optimizer
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def check_schedule_has_an_end(lr_schedule: str | None, trainer) -> None:
    """A schedule planned in steps needs the built ``trainer`` to have a last step (``max_epochs -1``: none)."""
    if lr_schedule not in (None, "constant") and trainer.max_epochs == -1 and trainer.max_steps == -1:
        raise ConfigError(f"--trainer.max_epochs -1 trains until stopped, and the {lr_schedule} learning-rate schedule "
                          "is planned to its last step: give --trainer.max_epochs N or --trainer.max_steps N, or "
                          "--model.lr_schedule constant")


def optimizer_and_schedule(model: L.LightningModule):
    """What ``configure_optimizers`` returns for ``model``'s options; a schedule steps every batch."""
    hp = model.hparams
    groups = parameter_groups(model)
    if hp.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum,
                                    nesterov=hp.nesterov, weight_decay=hp.weight_decay)
    else:
        adam = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
        # torch's one-kernel step where it has one (on the CPU and CUDA: docs/results.md, Framework overhead);
        # SGD keeps torch's default, so the report's runs reproduce as measured.
        fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters()) or None
        optimizer = adam(groups, lr=hp.lr, weight_decay=hp.weight_decay, fused=fused)
    if hp.lr_schedule == "constant":
        return optimizer
    steps = model.trainer.estimated_stepping_batches
    if hp.lr_schedule == "onecycle":
        # OneCycleLR divides by zero when its warm-up is exactly one step (pct_start * steps == 1).
        pct_start = 0.3 if steps == 4 else 0.25
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=steps,
                                                        pct_start=pct_start)
    elif hp.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(triangle, steps=steps))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def parameter_groups(model: L.LightningModule) -> list[dict]:
    """One group, or with ``norm_lr_scale`` two: batch-norm parameters and the rest."""
    hp = model.hparams
    if hp.norm_lr_scale == 1:
        return [{"params": list(model.parameters())}]
    norms = {id(p) for module in model.modules() if isinstance(module, BATCH_NORMS) for p in module.parameters()}
    return [
        {"params": [p for p in model.parameters() if id(p) not in norms]},
        {"params": [p for p in model.parameters() if id(p) in norms],
         "lr": hp.lr * hp.norm_lr_scale, "weight_decay": hp.weight_decay / hp.norm_lr_scale},
    ]


def triangle(step: int, steps: int, start: float = 0.2, peak_at: float = 0.23, end: float = 0.07) -> float:
    """airbench's learning-rate factor at ``step`` of ``steps``: up linearly, then down linearly."""
    peak_step = peak_at * steps
    if step < peak_step:
        return start + (1 - start) * step / peak_step
    return 1 + (end - 1) * (step - peak_step) / (steps - peak_step)
