"""What ``test`` and ``predict`` write: the test summary with its figures, and the predictions CSV. Figures are
``matplotlib.figure.Figure`` objects, never pyplot's: importing cnnclf leaves a notebook's backend alone."""

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, classification_report, confusion_matrix
from torch import Tensor

from cnnclf.callbacks import run_directory
from cnnclf.config_text import read_yaml
from cnnclf.csv_cells import safe_cell
from cnnclf.errors import CheckpointError, CnnclfError, ConfigError
from cnnclf.models import class_names
from cnnclf.stats import accuracy_interval, accuracy_text, macro_f1, macro_f1_interval


def scores(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: the cross-entropy loss, the predicted class and that class's probability."""
    logits = logits.float()
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    loss = F.cross_entropy(logits, targets, reduction="none").abs()  # abs: a certain image's loss is -0.0, not 0
    return loss, predicted, confidence


def per_class_scores(truth, predicted, class_names: list[str]) -> tuple[str, dict]:
    """scikit-learn's ``classification_report`` as text and as a dict, labels named by ``class_names``."""
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


def most_confused_text(pairs: list[dict]) -> str:
    lines = [f"  {pair['true']} -> {pair['predicted']}: {pair['count']}" for pair in pairs]
    return "\n".join(["most confused (true -> predicted: images)", *(lines or ["  none: every image is right"])])


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


def in_split_order(trainer: L.Trainer, rows: list) -> list:
    """Every process's ``rows`` in the split's order: process r evaluated items r, r + W, r + 2W, ..."""
    if trainer.world_size == 1:
        return rows
    shards = [None] * trainer.world_size
    torch.distributed.all_gather_object(shards, rows)
    return [shard[k] for k in range(len(shards[0])) for shard in shards if k < len(shard)]


def test_folder(run: Path, data_path: str | None) -> Path:
    """``test`` in the run for its own data (that of its ``config.yaml``); for other data a folder beside
    it named by that data, so that testing a finished run's checkpoint elsewhere never replaces its results."""
    try:
        trained_on = read_yaml((run / "config.yaml").read_text(encoding="utf-8"), str(run / "config.yaml"))
        trained_on = trained_on["data"]["init_args"].get("path") or trained_on["data"]["init_args"]["root"]
    except (OSError, CnnclfError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        trained_on = None  # no run config (a Python caller's Trainer): the run is this process's own
    if data_path is None or trained_on is None or Path(trained_on).resolve() == Path(data_path).resolve():
        return run / "test"
    digest = hashlib.sha256(str(Path(data_path).resolve()).encode()).hexdigest()[:8]
    return run / f"test-{Path(data_path).name[:40]}-{digest}"


def csv_text(rows) -> str:
    """``rows`` as CSV (quoted where a cell holds a comma or quote: a class name is a folder's name)."""
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return text.getvalue()


class TestSummary(L.Callback):
    """After ``test``: prints the summary and saves it (``summary.txt``, ``summary.json``, ``per_image.csv`` and
    the confusion-matrix and highest-loss figures) into the run's ``test/`` (``test_folder``), logging the figures
    to TensorBoard. The ``top_losses`` highest-loss images are the split's own (``data.test``), chosen by the
    per-image losses once every process's are gathered."""

    def __init__(self, top_losses: int = 16) -> None:
        self.top_losses = top_losses

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []  # each batch's (true, predicted, confidence, loss) per image, on the device

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        loss, predicted, confidence = scores(outputs, batch[1])
        self.rows.append(torch.stack([batch[1].float(), predicted.float(), confidence, loss], dim=1))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = in_split_order(trainer, torch.cat(self.rows).tolist())  # row k is the split's image k
        folder = test_folder(run_directory(trainer), getattr(trainer.datamodule, "path", None))
        if not trainer.is_global_zero:
            return
        table = np.array(rows).reshape(-1, 4)
        order = np.argsort(-table[:, 3], kind="stable")[:self.top_losses]
        worst, images = torch.from_numpy(table[order]), trainer.datamodule.data.test[0][torch.from_numpy(order)]
        names = class_names(pl_module.hparams)
        truth, predicted = table[:, :2].T.astype(np.int64)
        matrix = confusion_matrix(truth, predicted, labels=np.arange(len(names)))
        per_class_text, per_class = per_class_scores(truth, predicted, names)
        confused = most_confused(matrix, names)
        correct, count = int(matrix.trace()), len(truth)
        f1, f1_interval = float(macro_f1(matrix)), macro_f1_interval(truth, predicted, len(names))
        missing = [name for name, support, guesses in zip(names, matrix.sum(1), matrix.sum(0), strict=True)
                   if support and not guesses]
        top_losses = [{"true": names[int(true)], "predicted": names[int(guess)], "confidence": confidence,
                       "loss": loss} for true, guess, confidence, loss in worst.tolist()]
        text = (f"{per_class_text}\naccuracy: {accuracy_text(correct, count)}\nmacro F1: {f1:.4f} (95% CI "
                f"{f1_interval[0]:.4f}-{f1_interval[1]:.4f}, bootstrap over the test images)\n"
                f"never predicted: {', '.join(missing) or 'none'}\n\n{most_confused_text(confused)}\n\n"
                f"checkpoint: {trainer.ckpt_path or 'none (the weights in memory)'}\n")
        files = {"summary.txt": f"{text}figures beside this file: confusion_matrix.png, "
                                f"confusion_matrix_normalized.png, top_losses.png (the {len(top_losses)} highest-loss "
                                "test images)\n",
                 "per_image.csv": csv_text([("index", "source", "true", "predicted", "confidence", "loss"), *(
                     (index, safe_cell(source), safe_cell(names[int(true)]), safe_cell(names[int(guess)]),
                      f"{confidence:.6f}", f"{loss:.6f}")
                     for index, (source, (true, guess, confidence, loss))
                     in enumerate(zip(trainer.datamodule.test_sources, rows, strict=False)))]),  # rows: maybe limited
                 "summary.json": json.dumps(
                     {"accuracy": correct / count, "correct": correct, "images": count,
                      "accuracy_ci95": accuracy_interval(correct, count), "macro_f1": f1, "macro_f1_ci95": f1_interval,
                      "never_predicted": missing, "per_class": per_class, "confusion_matrix": matrix.tolist(),
                      "class_names": names, "most_confused": confused, "top_losses": top_losses,
                      "checkpoint": trainer.ckpt_path}, indent=1)}
        figures = {"confusion_matrix": plot_confusion_matrix(matrix, names),
                   "confusion_matrix_normalized": plot_confusion_matrix(matrix, names, normalize=True),
                   "top_losses": plot_predictions(images, worst[:, 0].long(), worst[:, 1].long(), worst[:, 2], names,
                                                  "highest-loss test images: true -> predicted (confidence)")}
        # A fast_dev_run has no run folder (Lightning turns its logger off): drawn all the same, saved nowhere.
        save = not trainer.fast_dev_run
        if save:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "summary.json").unlink(missing_ok=True)  # written last: a test cut short leaves none
        for name, figure in figures.items():
            figure.savefig(folder / f"{name}.png" if save else io.BytesIO(), dpi=120)
            if isinstance(trainer.logger, TensorBoardLogger):
                trainer.logger.experiment.add_figure(f"test/{name}", figure, trainer.global_step)
        for name, content in files.items() if save else ():  # reports and sweeps take a run without it as untested
            (folder / name).write_text(content, encoding="utf-8", newline="")
        print(f"\n{text}\nSummary, per-image predictions, confusion matrices and highest-loss images "
              + (f"saved in {folder}" if save else "not saved (fast_dev_run)"))


class PredictionCSV(BasePredictionWriter):
    """After ``predict``: writes the predictions (source: the image file or the record index in the pickle's test
    split; label, in the dataset's own labels; probability) as CSV, and the files skipped, with the reason, in
    ``<output>_skipped.csv`` beside it.

    Args:
        output: the CSV file to write; default: ``predictions.csv`` in the checkpoint's run.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        labels, confidences = (torch.cat(column).tolist() for column in zip(*predictions, strict=True))
        rows = in_split_order(trainer, list(zip(labels, confidences, strict=True)))
        path = Path(self.output) if self.output else run_directory(trainer) / "predictions.csv"
        if not trainer.is_global_zero:
            return
        bad = sum(not math.isfinite(confidence) for _, confidence in rows)
        if bad:
            raise CheckpointError(f"{trainer.ckpt_path or 'the model'}: its outputs are NaN or infinite for {bad} of "
                                  f"{len(rows)} images; nothing written")
        names = class_names(pl_module.hparams)
        skipped, listed = trainer.datamodule.predict_skipped, path.with_name(f"{path.stem}_skipped.csv")
        # limit_predict_batches and fast_dev_run predict the first sources only
        sources = trainer.datamodule.predict_sources[:len(rows)]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(csv_text([("source", "label", "probability"), *(
                (safe_cell(source), safe_cell(names[label]), f"{confidence:.6f}")
                for source, (label, confidence) in zip(sources, rows, strict=True))]), encoding="utf-8", newline="")
            listed.unlink(missing_ok=True)  # a previous predict's list
            if skipped:
                listed.write_text(csv_text([("source", "reason"), *(map(safe_cell, row) for row in skipped)]),
                                  encoding="utf-8", newline="")
        except OSError as error:  # a folder, a full or read-only disk
            raise ConfigError(f"--prediction_csv.output {path}: cannot be written: {error.strerror}") from None
        print(f"Wrote {len(rows)} prediction{'s' * (len(rows) != 1)} to {path}"
              + (f"; skipped {len(skipped)} file{'s' * (len(skipped) != 1)}, listed in {listed}" if skipped else ""))
