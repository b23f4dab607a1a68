"""An epoch's accuracy and macro F1 from one confusion matrix.

torchmetrics' accuracy and F1 each count (and check) every batch on their own; one confusion
matrix holds both figures, for a fraction of the cost per step on a small network.
"""

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix


class AccuracyAndF1(MulticlassConfusionMatrix):
    """Counts each step's predictions; ``compute`` gives ``{prefix}acc`` and ``{prefix}f1``.

    The labels are checked when the data is loaded, so the per-step argument checks are off.
    """

    def __init__(self, num_classes: int, prefix: str) -> None:
        super().__init__(num_classes, validate_args=False)
        self.prefix = prefix

    def compute(self) -> dict[str, Tensor]:
        accuracy, f1 = accuracy_and_macro_f1(super().compute())
        return {f"{self.prefix}acc": accuracy, f"{self.prefix}f1": f1}

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Checkpoints from before kept torchmetrics' separate counts (acc.tp, f1.fn, ...) of the
        # unfinished epoch; the epoch in progress then starts its figures afresh.
        for key in [key for key in state_dict if key.startswith((f"{prefix}acc.", f"{prefix}f1."))]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def accuracy_and_macro_f1(confusion: Tensor) -> tuple[Tensor, Tensor]:
    """Accuracy, and F1 averaged over the classes that occur as a target or a prediction (as
    torchmetrics and scikit-learn average it), from a confusion matrix (rows: targets)."""
    matrix = confusion.double()
    hits = matrix.diagonal()
    occurrences = matrix.sum(0) + matrix.sum(1)  # 2 TP + FP + FN per class
    seen = occurrences > 0
    f1 = torch.where(seen, 2 * hits / occurrences.clamp(min=1), 0).sum() / seen.sum()
    return (hits.sum() / matrix.sum()).float(), f1.float()
