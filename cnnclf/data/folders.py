"""Folders of image files as a dataset: ``--data.root DIR`` (how they are read and bounded: docs/folders.md).

``DIR/train/<class>/*`` and ``DIR/test/<class>/*`` (with an optional ``DIR/val/<class>/*``), or
``DIR/<class>/*`` with a seeded test split drawn from each class. The images are decoded once into
uint8 arrays (``image_files``), checked, cached, and from there served as the pickles are: the same
batches, augmentation, GPU path, checkpoints and reports, with the folder names as the class names.
"""

import hashlib
import math
import os
import re
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.model_selection import train_test_split

from cnnclf.checkpoints import read_checkpoint
from cnnclf.data.base import PickledImageDataModule, PreparedData
from cnnclf.data.cache import cache_folder
from cnnclf.data.image_files import EXTENSIONS, decode_all, each_file, read_header
from cnnclf.data.records import ImageSplit
from cnnclf.errors import ConfigError, DatasetError
from cnnclf.files import write_atomically

SPLIT_FOLDERS = ("train", "val", "test")
CACHE_FORMAT = "1"  # bump when an entry's arrays change meaning


def natural_key(name: str) -> list:
    """``s2`` before ``s10``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Listing:
    """Every image file under a root, in natural order, with its class folder and split folder."""

    files: list[str]
    class_names: list[str]  # of the class folders, naturally sorted
    labels: np.ndarray  # (N,) index into class_names
    splits: np.ndarray  # (N,) 'train', 'val', 'test', or 'all' (no split folders)
    skipped: Counter  # what was passed over, by kind
    fingerprint: str  # changes when a file is added, removed, renamed or changed


def list_folder(root: Path) -> Listing:
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; set --data.root to a folder of class folders "
                           "(DIR/<class>/*.png, or DIR/train/<class>/... and DIR/test/<class>/...)")
    real_root, skipped, digest = root.resolve(), Counter(), hashlib.sha256()
    split_names = [name for name in SPLIT_FOLDERS if (root / name).is_dir()] or ["all"]
    found: list[tuple[str, str, str]] = []
    for split in split_names:
        folder = root if split == "all" else root / split
        for entry in sorted(os.scandir(folder), key=lambda entry: natural_key(entry.name)):
            if entry.name.startswith("."):
                skipped["hidden"] += 1
                continue
            class_folder = Path(entry.path)
            if entry.is_symlink():
                _checked_link(class_folder, real_root)
            if not entry.is_dir():
                skipped["outside a class folder"] += 1
            else:
                files = _images_under(class_folder, real_root, {class_folder.resolve()}, skipped, digest)
                if not files:
                    raise DatasetError(f"{class_folder}: a class folder with no image files "
                                       f"({', '.join(sorted(EXTENSIONS)[:6])}, ...)")
                found += [(path, entry.name, split) for path in files]
    if "val" in split_names and "train" not in split_names:
        raise DatasetError(f"{root}: a val/ folder needs a train/ folder beside it")
    if not found:
        raise DatasetError(f"{root}: no class folders with images (expected DIR/<class>/*.png, or "
                           "DIR/train/<class>/... and DIR/test/<class>/...)")
    class_names = sorted({name for _, name, _ in found}, key=natural_key)
    index = {name: position for position, name in enumerate(class_names)}
    return Listing([path for path, _, _ in found], class_names, np.array([index[name] for _, name, _ in found]),
                   np.array([split for _, _, split in found]), skipped, digest.hexdigest())


def _images_under(folder: Path, root: Path, seen: set[Path], skipped: Counter, digest) -> list[str]:
    """The image files in ``folder`` and its subfolders, refusing links that leave ``root`` or loop."""
    images = []
    for entry in sorted(os.scandir(folder), key=lambda entry: natural_key(entry.name)):
        if entry.name.startswith("."):
            skipped["hidden"] += 1
            continue
        if entry.is_symlink():
            _checked_link(Path(entry.path), root)
        if entry.is_dir():
            real = Path(entry.path).resolve()
            if real in seen:
                raise DatasetError(f"{entry.path}: a symbolic link back to {real}, a loop; remove it")
            images += _images_under(Path(entry.path), root, seen | {real}, skipped, digest)
        elif not entry.is_file():
            raise DatasetError(f"{entry.path}: not a regular file (a FIFO, device or socket); remove it from the "
                               "folder")
        elif os.path.splitext(entry.name)[1].lower() not in EXTENSIONS:
            skipped["not an image"] += 1
        else:
            status = entry.stat()  # the change time follows every write, and renames
            digest.update(f"{entry.path}|{status.st_size}|{status.st_mtime_ns}|{status.st_ctime_ns}\n".encode())
            images.append(entry.path)  # a str: 60,000 Path objects cost a second
    return images


def _checked_link(path: Path, root: Path) -> Path:
    """Where the symbolic link ``path`` points, refusing one that loops, dangles or leaves ``root``."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise DatasetError(f"{path}: a symbolic link that loops or points nowhere; remove it") from None
    if not target.is_relative_to(root):
        raise DatasetError(f"{path}: a symbolic link to {target}, outside {root}; copy what it points to into "
                           "the folder, or set --data.root to a folder that holds both")
    return target


class ImageFolderDataModule(PickledImageDataModule):
    """Train, validate and test on folders of image files, one folder per class; see
    ``PickledImageDataModule`` for the shared arguments (batches, ``val_split``, augmentation, ``cache``).

    Args:
        root: ``DIR`` holding ``train/<class>/``, ``test/<class>/`` (and optionally ``val/<class>/``, used
            instead of ``val_split``), or the class folders themselves.
        channels: 1 (gray) or 3 (RGB); default: 1 when every image is gray, else 3.
        resize: [height, width] every image is resized to; default: the size all the images share.
        test_split: for class folders without ``train/``/``test/``: each class's share held out for testing,
            a fraction (< 1) or a count per class (seeded by ``split_seed``); ``all`` tests every image
            (to evaluate a checkpoint on a labelled folder).
        unreadable: a file that cannot be decoded (truncated, not an image): ``error`` names it and stops;
            ``skip`` leaves it out and lists it.
        memory_budget_gb: the most the decoded images may take; default: half this machine's memory.
        checkpoint: the model's checkpoint when testing or resuming one (the CLI sets it from ``--ckpt_path``):
            its class names, image shape and channel statistics are used, and what differs is an error.
    """

    def __init__(self, root: str, channels: int | None = None, resize: list[int] | None = None,
                 test_split: float | Literal["all"] = 0.2, unreadable: Literal["skip", "error"] = "error",
                 memory_budget_gb: float | None = None, checkpoint: str | None = None, **kwargs) -> None:
        super().__init__(path=root, unreadable=unreadable, **kwargs)
        if channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, found {channels}")
        if resize is not None and (len(resize) != 2 or min(resize) < 1):
            raise ConfigError(f"resize must be [height, width] with positive sizes, found {resize}")
        if test_split != "all" and not (0 <= test_split < 1 or test_split == int(test_split)):
            raise ConfigError(f"test_split must be a fraction in [0, 1), a count per class or 'all', "
                              f"found {test_split}")
        self.root, self.channels, self.resize, self.test_split = Path(root), channels, resize, test_split
        self.memory_budget = (memory_budget_gb * 1e9 if memory_budget_gb is not None
                              else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2)
        self.trained_on = (read_checkpoint(checkpoint, mmap=True).get("hyper_parameters") or {}) if checkpoint else {}
        self.val_images: ImageSplit | None = None

    @property
    def class_names(self) -> list[str]:
        if self.trained_on.get("class_names"):
            return list(self.trained_on["class_names"])
        self.data  # noqa: B018 - reading the folder names the classes
        return list(self.data_classes)

    @property
    def input_mean(self) -> list[float] | None:
        return self.trained_on.get("input_mean") if self.trained_on else super().input_mean

    @property
    def input_std(self) -> list[float] | None:
        return self.trained_on.get("input_std") if self.trained_on else super().input_std

    def read_splits(self) -> dict[str, ImageSplit]:
        return self.folder_splits

    @cached_property
    def folder_splits(self) -> dict[str, ImageSplit]:
        listing = list_folder(self.root)
        names = self.trained_on.get("class_names") or listing.class_names
        unknown = [name for name in listing.class_names if name not in names]
        if unknown:
            raise DatasetError(f"{self.root}: class folder '{unknown[0]}' is not one of the checkpoint's "
                               f"{len(names)} classes ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
        self.data_classes, self.label_values = names, tuple(range(len(names)))
        labels = np.array([names.index(listing.class_names[label]) for label in listing.labels], dtype=np.int64)
        images, reasons = self._images(listing)
        kept = reasons == ""
        self._report(listing, kept, reasons)
        labels, splits, files = labels[kept], listing.splits[kept], np.array(listing.files, dtype=object)[kept]
        if "all" in splits:
            splits = np.where(self._test_rows(labels, names), "test", "train")
        self.split_files = {split: files[splits == split].tolist() for split in SPLIT_FOLDERS}
        rows = {split: splits == split for split in SPLIT_FOLDERS}
        if rows["val"].any():
            self.val_images = ImageSplit(images[rows["val"]], labels[rows["val"]])
        return {split: ImageSplit(images[rows[split]], labels[rows[split]]) for split in ("train", "test")}

    def _prepare(self) -> PreparedData:
        splits = self.folder_splits
        if len(splits["train"]) == 0:
            if not self.trained_on:
                raise DatasetError(f"{self.root}: no images to train on (test_split 'all', or no train/ folder); "
                                   "to evaluate a checkpoint, pass --ckpt_path")
            test = self._to_tensors("test", splits["test"], list(self.label_values))
            empty = (test[0][:0], test[1][:0])
            return PreparedData(train=empty, val=empty, test=test, label_values=list(self.label_values))
        if self.val_images is not None:
            self.val_split = 0  # the val/ folder is the validation split
        prepared = super()._prepare()
        if self.val_images is None:
            return prepared
        return replace(prepared, val=self._to_tensors("val", self.val_images, prepared.label_values))

    def predict_dataloader(self):
        batches = super().predict_dataloader()
        if not self.predict_files:  # the test split: name each image's file
            self.predict_sources = [str(path) for path in self.split_files["test"]]
        return batches

    def _test_rows(self, labels: np.ndarray, names: list[str]) -> np.ndarray:
        """Which images are held out for testing: each class's share, drawn with ``split_seed``."""
        test = np.full(len(labels), self.test_split == "all")
        if self.test_split in ("all", 0):
            return test
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            count = int(self.test_split) if self.test_split >= 1 else math.ceil(self.test_split * len(rows))
            if count >= len(rows):
                raise DatasetError(f"{self.root}: class '{names[label]}' has {len(rows)} images, too few to hold "
                                   f"{count} out for testing (test_split={self.test_split}); add images or lower it")
            test[train_test_split(rows, test_size=count, random_state=self.split_seed)[1]] = True
        return test

    def _images(self, listing: Listing) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, C) uint8 images of the files that decoded, and each file's reason ('' if it decoded)."""
        options = f"{CACHE_FORMAT}|{self.channels}|{self.resize}|{self.unreadable}|{listing.fingerprint}"
        entry = cache_folder() / (f"folder-{hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]}-"
                                  f"{hashlib.sha256(options.encode()).hexdigest()[:16]}.npz")
        cached = self._cached(entry, len(listing.files)) if self.cache else None
        if cached is not None:
            self._check_against_checkpoint(cached[0].shape[3], cached[0].shape[1:3])
            return cached
        channels, size = self._shape(listing)
        images, errors = decode_all(listing.files, channels, size, f"decoding {self.root}")
        failed = [error for error in errors if error is not None]
        if failed and self.unreadable == "error":
            raise DatasetError(f"{failed[0]}; --data.unreadable skip leaves such files out")
        reasons = np.array(["" if error is None else str(error) for error in errors])
        images = images[reasons == ""]
        if self.cache:
            try:
                write_atomically(entry, lambda stream: np.savez(stream, images=images, reasons=reasons))
                for stale in entry.parent.glob(f"{entry.name[:20]}*.npz"):
                    if stale != entry:
                        stale.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only or full disk only costs the next run the decoding
        return images, reasons

    def _cached(self, entry: Path, count: int) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            with np.load(entry, allow_pickle=False) as arrays:
                images, reasons = arrays["images"], arrays["reasons"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        fits = (images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] in (1, 3)
                and reasons.shape == (count,) and reasons.dtype.kind == "U" and (reasons == "").sum() == len(images))
        return (images, reasons) if fits else None

    def _shape(self, listing: Listing) -> tuple[int, tuple[int, int]]:
        """The channels and size to decode to, from the files' headers, within the memory budget."""
        headers = each_file(lambda index: read_header(listing.files[index]), len(listing.files),
                            f"reading {self.root}")
        failed = [header for header in headers if isinstance(header, DatasetError)]
        if failed and self.unreadable == "error":
            raise DatasetError(f"{failed[0]}; --data.unreadable skip leaves such files out")
        readable = [(path, header) for path, header in zip(listing.files, headers, strict=True)
                    if not isinstance(header, DatasetError)]
        if not readable:
            raise DatasetError(f"{self.root}: none of the {len(headers)} image files could be read; the first: "
                               f"{failed[0]}")
        channels = self.channels or (1 if all(header.gray for _, header in readable) else 3)
        size = tuple(self.resize) if self.resize else (readable[0][1].height, readable[0][1].width)
        if not self.resize:
            other = next(((path, header) for path, header in readable if (header.height, header.width) != size), None)
            if other is not None:
                raise DatasetError(f"{self.root}: images differ in size ({readable[0][0]} is {size[0]}x{size[1]}, "
                                   f"{other[0]} is {other[1].height}x{other[1].width}); set --data.resize H W")
        self._check_against_checkpoint(channels, size)
        needed = len(readable) * channels * size[0] * size[1]
        if needed > self.memory_budget:
            raise DatasetError(f"{self.root}: {len(readable):,} images of {channels}x{size[0]}x{size[1]} take "
                               f"{needed / 1e9:.1f} GB decoded, over the memory budget of "
                               f"{self.memory_budget / 1e9:.1f} GB; set a smaller --data.resize, or raise "
                               "--data.memory_budget_gb")
        return channels, size

    def _check_against_checkpoint(self, channels: int, size: tuple[int, int]) -> None:
        shape = self.trained_on.get("image_shape")
        if shape is not None and list(shape) != [channels, *size]:
            raise DatasetError(f"{self.root}: its images read as {channels}x{size[0]}x{size[1]} (C, H, W), the "
                               f"checkpoint's model takes {shape[0]}x{shape[1]}x{shape[2]}; set --data.channels "
                               f"{shape[0]} --data.resize {shape[1]} {shape[2]}")

    def _report(self, listing: Listing, kept: np.ndarray, reasons: np.ndarray) -> None:
        """One line: what was read, and what was passed over (with the unreadable files named)."""
        counts = Counter(listing.splits[kept].tolist())
        passed = dict(listing.skipped, unreadable=int((~kept).sum()))
        passed_text = ", ".join(f"{count} {kind}" for kind, count in passed.items() if count)
        named = "; ".join(reasons[~kept][:5].tolist()) + (" ..." if (~kept).sum() > 5 else "")
        print(f"{self.root}: {int(kept.sum()):,} images in {len(listing.class_names)} classes "
              f"({', '.join(f'{split} {count:,}' for split, count in counts.items())})"
              + (f"; skipped {passed_text}" if passed_text else "") + (f": {named}" if named else ""),
              file=sys.stderr)
