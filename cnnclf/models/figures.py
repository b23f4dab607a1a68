"""An epoch's accuracy and macro F1 from one confusion matrix, and its mean loss.

torchmetrics' accuracy and F1 each count (and check) every batch on their own; one confusion
matrix holds both figures, for a fraction of the cost per step on a small network. The loss is
summed beside it on the device and handed to Lightning once per epoch: a ``self.log`` per step
costs Lightning more than a small network's evaluation step.
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix


class AccuracyAndF1(MulticlassConfusionMatrix):
    """Counts each step's predictions; ``counted_figures`` (as ``compute``) gives ``{prefix}acc`` and
    ``{prefix}f1``, and with ``with_loss`` ``{prefix}loss``: the mean loss over the epoch's images (each
    step's mean loss weighted by its batch size, as Lightning averages a loss logged every step); with
    ``with_nll`` also ``{prefix}nll``, the plain cross-entropy, for a loss that is label-smoothed.

    The labels are checked when the data is loaded, so the per-step argument checks are off.
    """

    def __init__(self, num_classes: int, prefix: str, with_loss: bool = False, with_nll: bool = False) -> None:
        super().__init__(num_classes, validate_args=False)
        self.prefix = prefix
        self.with_loss, self.with_nll = with_loss, with_nll
        if with_loss:
            self.add_state("loss_sum", torch.tensor(0.0), dist_reduce_fx="sum")
        if with_nll:
            self.add_state("nll_sum", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, logits: Tensor, targets: Tensor, loss: Tensor | None = None) -> None:
        # Counted here rather than by torchmetrics' torch.bincount, which on a GPU reads the largest
        # value back to size its output: a wait for the device at every step.
        cells = logits.argmax(dim=1).add_(targets, alpha=self.num_classes)
        self.confmat.view(-1).scatter_add_(0, cells, torch.ones_like(cells))
        if self.with_loss:
            self.loss_sum += loss.float() * len(targets)
        if self.with_nll:
            self.nll_sum += F.cross_entropy(logits.float(), targets, reduction="sum")

    def compute(self) -> dict[str, Tensor]:
        return self._figures(super().compute())

    def counted_figures(self) -> dict[str, Tensor]:
        """The figures of what was counted since the last reset, summed over every process; none if nothing was.

        Counted means updated, or restored from a checkpoint of a fit stopped before its epoch's end,
        which ``compute`` takes for "never updated" (and warns).
        """
        with self.sync_context():
            if not self.confmat.sum():
                return {}
            return self._figures(self.confmat.clone())

    def _figures(self, confusion: Tensor) -> dict[str, Tensor]:
        accuracy, f1 = accuracy_and_macro_f1(confusion)
        figures = {f"{self.prefix}acc": accuracy, f"{self.prefix}f1": f1}
        for name, wanted in (("loss", self.with_loss), ("nll", self.with_nll)):
            if wanted:  # the matrix counts the images
                figures[f"{self.prefix}{name}"] = getattr(self, f"{name}_sum").clone() / confusion.sum()
        return figures

    def summed_confusion(self) -> Tensor:
        """The matrix counted so far (rows: targets), summed over every process; the counting goes on."""
        with self.sync_context():
            return self.confmat.clone()


def accuracy_and_macro_f1(confusion: Tensor) -> tuple[Tensor, Tensor]:
    """Accuracy, and F1 averaged over the classes that occur as a target or a prediction (as
    torchmetrics and scikit-learn average it), from a confusion matrix (rows: targets)."""
    matrix = confusion.double()
    hits = matrix.diagonal()
    occurrences = matrix.sum(0) + matrix.sum(1)  # 2 TP + FP + FN per class
    seen = occurrences > 0
    f1 = torch.where(seen, 2 * hits / occurrences.clamp(min=1), 0).sum() / seen.sum()
    return (hits.sum() / matrix.sum()).float(), f1.float()
