"""The shared DataModule: a report-format pickle held in memory as CHW tensors. Subclasses (one small file per
dataset) declare the labels, names and image shape they expect; loading, checks, splits and statistics live here."""

import os
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold
from torch import Tensor

from cnnclf.checkpoints import read_checkpoint
from cnnclf.data.augment import Padding, mirror_seeded_half, random_hflip, random_translate
from cnnclf.data.batches import EpochOrder, TensorBatches
from cnnclf.data.convert import read_pickled_dataset
from cnnclf.data.image_files import ImageFiles, read_image_files
from cnnclf.data.records import ImageSplit
from cnnclf.errors import ConfigError, DatasetError


@dataclass(frozen=True)
class PreparedData:
    """Every split as images (N, C, H, W) uint8 or float32 and targets (N,) class indices; ``label_values``:
    the label each class index stands for, ascending; ``class_names``: each class's name."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    label_values: list[int]
    class_names: list[str]


def check_channels_and_resize(channels: int | None, resize: list[int] | None) -> None:
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, found {channels}")
    if resize is not None and (len(resize) != 2 or min(resize) < 1):
        raise ConfigError(f"resize must be [height, width] with positive sizes, found {resize}")


def read_trained_on(checkpoint: str | None) -> dict:
    """The hyper-parameters of the checkpoint a model was trained with, which the data must match; {} without one."""
    return (read_checkpoint(checkpoint).get("hyper_parameters") or {}) if checkpoint else {}


class PickledImageDataModule(L.LightningDataModule):
    """Train, validate and test on a pickle in the report's format.

    The file is read and checked once, by the first use of ``data``: under the CLI, the argument links that size
    the model, so a bad file stops a command before it creates a run.

    Args:
        path: the pickle file, ``{'train': [{'image', 'label'}, ...], 'test': [...]}``.
        batch_size: training mini-batch size.
        eval_batch_size: mini-batch size for validation, test and predict (default: ``batch_size``).
        val_split: held out of the training split for validation, stratified: a fraction (< 1) or a count; 0: none.
        normalize: standardize each channel with the training split's mean and std; off feeds raw pixel values.
        split_seed: seed of the validation split and of the folds (independent of the training seed).
        predict_files: image files, folders or glob patterns for ``predict``; default: the test split.
        translate: training augmentation: shift each image by up to this many pixels.
        translate_padding: what fills the border a shift uncovers: ``zeros`` or ``reflect``.
        hflip: training augmentation: mirror a random half of the images; ``alternate`` (airbench94's): a seeded
            half starts mirrored and every odd epoch mirrors all.
        cache: keep the checked arrays in the dataset cache, so the next run loads the unchanged file faster.
        folds: cross-validation: this many stratified folds of the training split, replacing ``val_split``; 0: none.
        fold: which fold validates, from 0 to ``folds - 1``.
        unreadable: an image file predict cannot read: ``skip`` (listed beside the predictions) or ``error``.
    """

    #: the label values the file uses, ascending; ``None`` infers them from the data
    label_values: tuple[int, ...] | None = None
    #: display names per class; default: the label values as text
    CLASS_NAMES: tuple[str, ...] | None = None
    #: (H, W, C) every image in the file must have, when the dataset fixes it
    file_shape_hwc: tuple[int, int, int] | None = None

    def __init__(self, path: str, batch_size: int = 128, eval_batch_size: int | None = None,
                 val_split: float = 0.1, normalize: bool = True, split_seed: int = 42,
                 predict_files: list[str] | None = None, translate: int = 0, translate_padding: Padding = "zeros",
                 hflip: bool | Literal["alternate"] = False, cache: bool = True, folds: int = 0,
                 fold: int = 0, unreadable: Literal["skip", "error"] = "skip") -> None:
        super().__init__()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ConfigError(f"batch sizes must be positive, found batch_size={batch_size}, "
                              f"eval_batch_size={eval_batch_size}")
        if translate < 0:
            raise ConfigError(f"translate must be a number of pixels >= 0, found {translate}")
        if translate_padding not in ("zeros", "reflect"):
            raise ConfigError(f"translate_padding must be 'zeros' or 'reflect', found {translate_padding!r}")
        if hflip not in (True, False, "alternate"):
            raise ConfigError(f"hflip must be true, false or 'alternate', found {hflip!r}")
        if val_split < 0 or (val_split >= 1 and val_split != int(val_split)):  # 1.5: a fraction, or a count?
            raise ConfigError(f"val_split must be a fraction in [0, 1) or a count >= 1, found {val_split}")
        if folds == 1 or folds < 0 or not 0 <= fold < max(folds, 1):
            raise ConfigError(f"folds must be 0 (none) or at least 2, and fold one of 0..folds-1, found folds={folds}, "
                              f"fold={fold}")
        path = os.path.expanduser(path) if isinstance(path, str) else path  # `--data.path=~/x`: no shell expands it
        self.path, self.batch_size, self.eval_batch_size = path, batch_size, eval_batch_size or batch_size
        self.val_split, self.folds, self.fold, self.split_seed = val_split, folds, fold, split_seed
        self.normalize, self.cache, self.unreadable = normalize, cache, unreadable
        self.translate, self.translate_padding, self.hflip = translate, translate_padding, hflip
        self.predict_files = predict_files
        self.predict_skipped: list[tuple[str, str]] = []
        self.trained_on: dict = {}  # a checkpoint's hyper-parameters, where the data must follow them
        self.test_sources: list[str] = []  # what each test image is named by: its file, else (once read) its row

    # -- what the model is built from (linked into the model by the CLI), the checkpoint's where there is one --

    @property
    def num_classes(self) -> int:
        return self.trained_on.get("num_classes") or len(self.data.label_values)

    @property
    def image_shape(self) -> list[int]:
        return list(self.trained_on.get("image_shape") or self.data.train[0].shape[1:])

    @property
    def class_names(self) -> list[str]:
        return list(self.trained_on.get("class_names") or self.data.class_names)

    @property
    def input_mean(self) -> list[float] | None:
        if self.trained_on:
            return self.trained_on.get("input_mean")
        return self.channel_stats[0] if self.normalize else None

    @property
    def input_std(self) -> list[float] | None:
        if self.trained_on:
            return self.trained_on.get("input_std")
        return self.channel_stats[1] if self.normalize else None

    def training_images(self, count: int) -> Tensor:
        """The first ``count`` training images in raw pixels: the sample AirbenchNet's whitening is computed from."""
        return self.data.train[0][:count]

    # -- loading ------------------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        self.data  # noqa: B018 - loads the data now
        if stage == "predict" and self.predict_files:
            self.predict_images  # noqa: B018 - an empty folder or a bad file stops before the checkpoint loads

    @cached_property
    def predict_images(self) -> ImageFiles:
        return read_image_files(self.predict_files, self.image_shape, skip_unreadable=self.unreadable == "skip")

    def read_splits(self) -> dict[str, ImageSplit]:
        """The raw train and test splits (and a ``val`` split, where the data has one of its own)."""
        return read_pickled_dataset(self.path, cache=self.cache)

    def transform_images(self, images: Tensor) -> Tensor:
        """Per-dataset change to the (N, C, H, W) images after loading; none by default."""
        return images

    @cached_property
    def data(self) -> PreparedData:
        """Every split, read and checked on first use."""
        splits = self.read_splits()
        for name, split in splits.items():
            if self.file_shape_hwc is not None and split.images.shape[1:] != self.file_shape_hwc:
                raise DatasetError(f"{self.path}: split '{name}': {type(self).__name__} expects images of shape "
                                   f"{list(self.file_shape_hwc)} (H, W, C), found {list(split.images.shape[1:])}; "
                                   "is this the right file?")
        labels = list(self.label_values or np.union1d(splits["train"].labels, splits["test"].labels).tolist())
        names = list(self.CLASS_NAMES or map(str, labels))  # a dataset that names no classes: its labels as text
        if len(labels) < 2 and not self.trained_on:  # a checkpoint tested on one class's images is fine
            raise DatasetError(f"{self.path}: every image is of one class ({names[0] if names else 'none'}); a "
                               "classifier needs at least two")
        test_only = np.isin(labels, splits["test"].labels) & ~np.isin(labels, splits["train"].labels)
        untaught = [name for name, only in zip(names, test_only, strict=True) if only]
        if untaught and len(splits["train"].labels) and not self.trained_on:  # its test images count, unlearnable
            print(f"{self.path}: class(es) {', '.join(untaught[:5])}{' ...' if len(untaught) > 5 else ''} in the "
                  "test split only: no training image teaches them", file=sys.stderr)
        train_x, train_y = self._to_tensors("train", splits["train"], labels)
        test = self._to_tensors("test", splits["test"], labels)
        self.test_sources = self.test_sources or [str(index) for index in range(len(test[1]))]
        if not len(train_y):  # only a test split: a checkpoint tested on a labelled folder
            return PreparedData((train_x, train_y), (train_x, train_y), test, labels, names)
        # Zero-filled, such a shift blanks whole images; reflected, it has no image to reflect.
        if self.translate >= min(train_x.shape[2:]):
            raise ConfigError(f"translate must be smaller than the {train_x.shape[2]}x{train_x.shape[3]} images of "
                              f"{self.path}, found translate={self.translate}")
        if "val" in splits:  # a validation split of its own (an image folder's val/)
            return PreparedData((train_x, train_y), self._to_tensors("val", splits["val"], labels), test, labels, names)
        train, val = self._split_indices(train_y.numpy(), labels)
        return PreparedData((train_x[train], train_y[train]), (train_x[val], train_y[val]), test, labels, names)

    def _to_tensors(self, split: str, data: ImageSplit, label_values: list[int]) -> tuple[Tensor, Tensor]:
        known = np.isin(data.labels, label_values)
        if not known.all():
            first = int(np.argmin(known))
            raise DatasetError(
                f"{self.path}: split '{split}', record {first}: label {data.labels[first]} is not one of "
                f"the {len(label_values)} labels {type(self).__name__} expects ({label_values[0]}..{label_values[-1]})"
            )
        # label_values are sorted, so a label's class index is its position among them (ORL: 1..40 -> 0..39)
        targets = torch.from_numpy(np.searchsorted(label_values, data.labels))
        # HWC -> CHW once here, so batches never need it.
        images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()
        return self.transform_images(images), targets

    def _split_indices(self, targets: np.ndarray, label_values: list[int]) -> tuple[Tensor, Tensor]:
        """The training and validation indices: fold ``fold`` of ``folds``, or a stratified ``val_split``."""
        counts = np.bincount(targets, minlength=len(label_values))
        if self.folds:
            if (few := np.flatnonzero((counts > 0) & (counts < self.folds))).size:
                raise DatasetError(f"{self.path}: label {label_values[few[0]]} has {counts[few[0]]} training "
                                   f"images, fewer than folds={self.folds}: every fold must hold one of each")
            folds = StratifiedKFold(self.folds, shuffle=True, random_state=self.split_seed)
            train, val = list(folds.split(targets, targets))[self.fold]
            return torch.from_numpy(train), torch.from_numpy(val)
        size = len(targets)
        count = round(self.val_split * size) if self.val_split < 1 else int(self.val_split)
        if count >= size:
            raise DatasetError(f"{self.path}: val_split={self.val_split} leaves no training images out of {size}")
        # Stratified even when fewer images are held out than there are classes (ORL's 10%: 36 of 40 people),
        # which scikit-learn's splitters refuse: in a seeded order, each image's place within its class
        # over the class's size; the lowest go to validation, so each class gives its share.
        order = np.random.default_rng(self.split_seed).permutation(size)
        place = np.empty(size)
        for label in range(len(label_values)):
            members = order[targets[order] == label]
            place[members] = (np.arange(len(members)) + 0.5) / len(members)
        ranked = torch.from_numpy(order[np.argsort(place[order], kind="stable")])
        train, val = ranked[count:].sort().values, ranked[:count].sort().values
        left = np.bincount(targets[train.numpy()], minlength=len(label_values))
        if count and (starved := np.flatnonzero((left == 0) & (counts > 0))).size:
            raise DatasetError(f"{self.path}: label {label_values[starved[0]]} has {counts[starved[0]]} training "
                               f"image(s), all held out by val_split={self.val_split}; lower val_split or set it to 0")
        return train, val

    @cached_property
    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split, in raw pixel units: two passes in float64, a few
        thousand images at a time, so that values far from zero lose no precision to the sum of squares."""
        chunks = self.data.train[0].split(4096)
        count = sum(chunk.numel() for chunk in chunks) // chunks[0].shape[1]
        mean = sum(chunk.sum(dim=(0, 2, 3), dtype=torch.float64) for chunk in chunks) / count
        squares = sum((chunk - mean.view(1, -1, 1, 1)).square().sum(dim=(0, 2, 3)) for chunk in chunks)
        return mean.tolist(), (squares / max(count - 1, 1)).sqrt().clamp(min=1e-6).tolist()

    # -- batches ------------------------------------------------------------------------------------------------

    @property
    def has_validation(self) -> bool:
        return len(self.data.val[1]) > 0

    def train_dataloader(self) -> TensorBatches:
        images, targets = self.data.train
        if self.hflip == "alternate":
            images = mirror_seeded_half(images, self.split_seed)
        return self._batches("train", images, targets, self.batch_size, training=True)

    def val_dataloader(self) -> TensorBatches | list:
        return self._batches("validation", *self.data.val, self.eval_batch_size) if self.has_validation else []

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", *self.data.test, self.eval_batch_size)

    def predict_dataloader(self) -> TensorBatches:
        if self.predict_files:
            images = self.predict_images
            self.predict_sources, self.predict_skipped = [str(path) for path in images.paths], images.skipped
            return self._batches("predict", images.tensor, torch.full((len(images.paths),), -1),
                                 self.eval_batch_size)
        test = self.data.test  # first: reading the data names its test images
        self.predict_sources = self.test_sources
        return self._batches("test", *test, self.eval_batch_size)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        training = self.trainer is not None and self.trainer.training
        # Lightning also passes the model's example input through here, as a bare tensor.
        if not (training and (self.translate or self.hflip)) or not isinstance(batch, (tuple, list)):
            return batch
        images, targets = batch
        if self.translate:
            images = random_translate(images, self.translate, self.translate_padding)
        if self.hflip == "alternate":
            # current_epoch is the epoch this batch belongs to, restored on resume: the sampler's epoch.
            if self.trainer.current_epoch % 2 == 1:
                images = images.flip(3)
        elif self.hflip:
            images = random_hflip(images)
        return images, targets

    def _batches(self, split: str, images: Tensor, targets: Tensor, batch_size: int,
                 training: bool = False) -> TensorBatches:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        order = EpochOrder(len(targets), shuffle=training, seed=torch.initial_seed() % 2**31,
                           rank=rank, world_size=world_size, drop_uneven=training)
        # A model replaying its training step as a CUDA graph takes batches of one size (cnnclf.models.graphs).
        drop_last = training and getattr(trainer and trainer.lightning_module, "training_graph", None) is not None
        # A process with no batch would leave the others waiting for it forever; in training, a
        # share smaller than one batch means the configured batch size is never used.
        if len(order) == 0 or (training and (world_size > 1 or drop_last) and len(order) < batch_size):
            raise DatasetError(
                f"{self.path}: the {split} split has {len(targets)} images, {len(order)} for each of {world_size} "
                f"processes: fewer than one batch of {batch_size} each; lower --data.batch_size"
                f"{' or --data.eval_batch_size' if not training else ''} or use fewer devices"
            )
        # On a GPU the whole split lives in device memory, so a batch never crosses the bus.
        return TensorBatches(images.to(device), targets.to(device), batch_size, order, drop_last)
