"""An epoch's accuracy and macro F1 from one confusion matrix, and its mean loss.

One matrix holds both figures, counted on the device and read once per epoch: torchmetrics' accuracy and F1
would each count every batch, and a ``self.log`` per step costs Lightning more than a small network's step.
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from cnnclf.stats import macro_f1


class AccuracyAndF1(MulticlassConfusionMatrix):
    """``{prefix}acc`` and ``{prefix}f1``; with ``with_loss`` also ``{prefix}loss``, the mean over the images (as
    Lightning averages a loss logged every step), and with ``with_nll`` ``{prefix}nll``, the plain cross-entropy
    beside a label-smoothed loss."""

    def __init__(self, num_classes: int, prefix: str, with_loss: bool = False, with_nll: bool = False) -> None:
        super().__init__(num_classes, validate_args=False)  # the labels were checked when the data was loaded
        self.prefix = prefix
        self.sums = [name for name, wanted in (("loss", with_loss), ("nll", with_nll)) if wanted]
        for name in self.sums:
            self.add_state(f"{name}_sum", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, logits: Tensor, targets: Tensor, loss: Tensor | None = None) -> None:
        # Not torchmetrics' torch.bincount, which on a GPU reads the largest value back: a wait at every step.
        cells = logits.argmax(dim=1).add_(targets, alpha=self.num_classes)
        self.confmat.view(-1).scatter_add_(0, cells, torch.ones_like(cells))
        if "loss" in self.sums:
            self.loss_sum += loss.float() * len(targets)
        if "nll" in self.sums:
            self.nll_sum += F.cross_entropy(logits.float(), targets, reduction="sum")

    def counted_figures(self) -> dict[str, float]:
        """The figures since the last reset, summed over every process; none if nothing was counted. Not
        ``compute``, which takes counts restored from a checkpoint stopped mid-epoch for "never updated"."""
        with self.sync_context():
            matrix = self.confmat.cpu().numpy()
            images = matrix.sum()
            if not images:
                return {}
            figures = {"acc": matrix.trace() / images, "f1": macro_f1(matrix)}
            figures |= {name: getattr(self, f"{name}_sum").item() / images for name in self.sums}
        return {f"{self.prefix}{name}": float(value) for name, value in figures.items()}
