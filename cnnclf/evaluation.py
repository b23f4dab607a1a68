"""What a test run shows: per-class scores, the most-confused classes, and figures of them.

Figures are plain ``matplotlib.figure.Figure`` objects, never pyplot's: the CLI saves them with
``savefig`` without a display, and a notebook shows them with its own backend, which importing
cnnclf leaves alone.
"""

import numpy as np
import torch.nn.functional as F
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, classification_report
from torch import Tensor


def predictions_from_confusion(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (true, predicted) class-index pairs a confusion matrix counts, in row order.

    The matrix is what every process sums, so the report built from it covers each test
    image exactly once however the test set was sharded.
    """
    classes = np.arange(len(matrix))
    truth = np.repeat(classes, matrix.sum(axis=1))
    predicted = np.concatenate([np.repeat(classes, row) for row in matrix])
    return truth, predicted


def per_class_scores(matrix: np.ndarray, class_names: list[str]) -> tuple[str, dict]:
    """scikit-learn's ``classification_report`` as text and as a dict, labels named by ``class_names``."""
    truth, predicted = predictions_from_confusion(matrix)
    options = dict(labels=np.arange(len(class_names)), target_names=class_names, zero_division=0)
    text = classification_report(truth, predicted, digits=4, **options)
    return text, classification_report(truth, predicted, output_dict=True, **options)


def most_confused(matrix: np.ndarray, class_names: list[str], limit: int = 10) -> list[dict]:
    """The off-diagonal cells of the confusion matrix with the most images, largest first."""
    mistakes = matrix.copy()
    np.fill_diagonal(mistakes, 0)
    rows, columns = np.unravel_index(np.argsort(-mistakes, axis=None, kind="stable")[:limit], mistakes.shape)
    return [{"true": class_names[row], "predicted": class_names[column], "count": int(mistakes[row, column])}
            for row, column in zip(rows, columns, strict=True) if mistakes[row, column] > 0]


def never_predicted(matrix: np.ndarray, class_names: list[str]) -> list[str]:
    """The classes the test split holds that the model never predicts (the report's ReLU on the logits did this)."""
    return [name for name, support, guesses in zip(class_names, matrix.sum(1), matrix.sum(0), strict=True)
            if support and not guesses]


def most_confused_text(pairs: list[dict]) -> str:
    lines = [f"  {pair['true']} -> {pair['predicted']}: {pair['count']}" for pair in pairs]
    return "\n".join(["most confused (true -> predicted: images)", *(lines or ["  none: every image is right"])])


def scores(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: the cross-entropy loss, the predicted class and that class's probability."""
    logits = logits.float()
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    return F.cross_entropy(logits, targets, reduction="none"), predicted, confidence


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], title: str = "",
                          normalize: bool = False) -> Figure:
    """Counts, or with ``normalize`` each row divided by its images (the share of each true class)."""
    if normalize:
        rows = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = min(4 + 0.3 * len(class_names), 16)
    figure = Figure(figsize=(size, size), layout="constrained")
    axes = figure.add_subplot()
    # Counts in the cells stay legible up to 20 classes; beyond, the colour alone tells.
    ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(
        ax=axes, cmap="Blues", colorbar=False, include_values=len(class_names) <= 20,
        values_format=".2f" if normalize else "d",
        xticks_rotation=90 if len(class_names) > 10 else 45, text_kw={"fontsize": 8})
    axes.set_xlabel("predicted")
    axes.set_ylabel("true (each row sums to 1)" if normalize else "true")
    axes.set_title(title or ("confusion matrix, normalized by true class" if normalize
                             else f"confusion matrix ({matrix.sum()} images)"))
    return figure


def plot_predictions(images: Tensor, targets: Tensor, predicted: Tensor, confidence: Tensor,
                     class_names: list[str], title: str) -> Figure:
    """A grid of images (N, C, H, W), each titled ``true -> predicted`` and the confidence; mistakes in red."""
    columns = max(1, min(8, len(images)))
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows + 0.4), layout="constrained")
    for axes in figure.subplots(rows, columns, squeeze=False).flat:
        axes.axis("off")
    for axes, image, true, guess, probability in zip(figure.axes, images, targets.tolist(), predicted.tolist(),
                                                    confidence.tolist(), strict=False):
        pixels = image.detach().float().cpu()
        # Each image scaled to its own range: raw pixels are 0..255 bytes or floats of any range.
        pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min()).clamp_min(1e-12)
        # matplotlib draws 1 channel as gray and 3 as colour; any other count is shown as its first channel
        axes.imshow(pixels.permute(1, 2, 0) if len(pixels) == 3 else pixels[0], cmap="gray", vmin=0, vmax=1)
        axes.set_title(f"{class_names[true]} -> {class_names[guess]}\n{probability:.0%}", fontsize=8,
                       color="black" if true == guess else "red")
    figure.suptitle(title)
    return figure
