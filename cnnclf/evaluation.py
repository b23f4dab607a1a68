"""Per-class reports and confusion-matrix figures, in the dataset's own label space."""

import matplotlib

matplotlib.use("Agg")  # figures are written to files; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import classification_report


def predictions_from_confusion(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (true, predicted) class-index pairs a confusion matrix counts, in row order.

    The matrix is what every process sums, so the report built from it covers each test
    image exactly once however the test set was sharded.
    """
    classes = np.arange(len(matrix))
    truth = np.repeat(classes, matrix.sum(axis=1))
    predicted = np.concatenate([np.repeat(classes, row) for row in matrix])
    return truth, predicted


def classification_reports(matrix: np.ndarray, class_names: list[str]) -> tuple[str, dict]:
    """scikit-learn's ``classification_report`` as text and as a dict, labels named by ``class_names``."""
    truth, predicted = predictions_from_confusion(matrix)
    options = dict(labels=np.arange(len(class_names)), target_names=class_names, zero_division=0)
    text = classification_report(truth, predicted, digits=4, **options)
    return text, classification_report(truth, predicted, output_dict=True, **options)


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], title: str = "") -> Figure:
    size = min(4 + 0.3 * len(class_names), 16)
    figure, axes = plt.subplots(figsize=(size, size), layout="constrained")
    axes.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=90 if len(class_names) > 10 else 45)
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title or f"confusion matrix ({matrix.sum()} images)")
    if len(class_names) <= 20:
        threshold = matrix.max() / 2
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, int(count), ha="center", va="center", fontsize=8,
                      color="white" if count > threshold else "black")
    return figure
