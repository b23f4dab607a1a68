"""The report's own figures: sample images per class, and the training curves from ``metrics.csv``."""

import torch
from matplotlib.figure import Figure
from torch import Tensor

# every metric the curves draw, in the order a table lists them
STYLES = {"train/loss": dict(color="tab:blue", alpha=0.35, linewidth=0.8, label="training, per logged step"),
          "train/epoch_loss": dict(color="tab:blue", marker=".", label="training, epoch mean"),
          "val/loss": dict(color="tab:orange", marker=".", label="validation"),
          "train/acc": dict(color="tab:blue", marker=".", label="training"),
          "val/acc": dict(color="tab:orange", marker=".", label="validation"),
          "train/lr": dict(color="tab:green", label="first parameter group")}


def sample_grid(images: Tensor, targets: Tensor, class_names: list[str], title: str) -> Figure:
    """The first few images of each class, each class's first one titled with its name."""
    classes = len(class_names)
    per_class = max(1, min(8, 80 // classes))  # 8 each of 10 classes, 2 each of ORL's 40
    per_row = max(1, 16 // per_class)  # classes side by side in one row of 16 images at most
    rows, columns = -(-classes // per_row), per_row * per_class
    height, width = images.shape[2:]
    cell = 1.1 * max(1.0, width / height) ** 0.5
    figure = Figure(figsize=(min(16, 0.2 + cell * columns), 0.6 + (cell * height / width + 0.3) * rows),
                    layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for index, name in enumerate(class_names):
        chosen = images[torch.nonzero(targets == index).flatten()[:per_class]]
        for slot, image in enumerate(chosen):
            axes = grid[index // per_row, (index % per_row) * per_class + slot]
            pixels = image.float()
            pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min()).clamp_min(1e-12)
            axes.imshow(pixels[0] if len(pixels) == 1 else pixels.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            if slot == 0:
                axes.set_title(name, fontsize=9, loc="left")
    figure.suptitle(f"{title}: the first {per_class} of each class")
    return figure


def curves(points: dict[str, tuple[list[float], list[float]]], x_label: str, title: str) -> Figure:
    """Loss, accuracy and learning rate panels; ``points`` maps a metric's name (``val/acc``) to its x and y values."""
    panels = [("loss", "cross-entropy loss", ["train/loss", "train/epoch_loss", "val/loss"]),
              ("accuracy", "accuracy (%)", ["train/acc", "val/acc"]),
              ("learning rate", "learning rate", ["train/lr"])]
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    for axes, (name, unit, metrics) in zip(figure.subplots(1, 3), panels, strict=True):
        for metric in metrics:
            x, y = points.get(metric, ([], []))
            if len(x) > (metric == "train/loss"):  # one logged step is no curve, only a legend entry
                scale = 100 if name == "accuracy" else 1
                axes.plot(x, [scale * value for value in y], markersize=4 if len(x) < 60 else 0, **STYLES[metric])
        axes.set(title=name, xlabel=x_label, ylabel=unit)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=8)
        else:
            axes.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes.transAxes, color="gray")
    figure.suptitle(title)
    return figure
