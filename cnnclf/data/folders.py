"""Folders of image files as a dataset, ``--data.root DIR``: decoded once (``image_files``), cached, and served as
the pickles are, with the folder names as the class names (layouts, bounds and checkpoints: docs/folders.md)."""

import contextlib
import hashlib
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.model_selection import train_test_split

from cnnclf.data.base import PickledImageDataModule, check_channels_and_resize, read_trained_on
from cnnclf.data.convert import cache_entry, read_npz, remove_stale
from cnnclf.data.image_files import EXTENSIONS, Header, decode_all, each_file, read_header
from cnnclf.data.records import ImageSplit, check_splits
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
    if "val" in split_names and "train" not in split_names:
        raise DatasetError(f"{root}: a val/ folder needs a train/ folder beside it")
    found: list[tuple[str, str, str]] = []
    for split in split_names:
        for entry in _entries(root if split == "all" else root / split, real_root, skipped):
            if not entry.is_dir():
                skipped["outside a class folder"] += 1
                continue
            files = _images_under(Path(entry.path), real_root, {Path(entry.path).resolve()}, skipped, digest)
            if not files:
                raise DatasetError(f"{entry.path}: a class folder with no image files "
                                   f"({', '.join(sorted(EXTENSIONS)[:6])}, ...)")
            found += [(path, entry.name, split) for path in files]
    if not found:
        raise DatasetError(f"{root}: no class folders with images (expected DIR/<class>/*.png, or "
                           "DIR/train/<class>/... and DIR/test/<class>/...)")
    paths, names, splits = zip(*found, strict=True)
    class_names = sorted(set(names), key=natural_key)
    index = {name: position for position, name in enumerate(class_names)}
    return Listing(list(paths), class_names, np.array([index[name] for name in names], dtype=np.int64),
                   np.array(splits), skipped, digest.hexdigest())


def _entries(folder: Path, root: Path, skipped: Counter) -> list[os.DirEntry]:
    """The entries of ``folder`` but hidden ones, naturally sorted; a symbolic link that loops, dangles or leaves
    ``root`` is refused."""
    entries = []
    for entry in sorted(os.scandir(folder), key=lambda entry: natural_key(entry.name)):
        if entry.name.startswith("."):
            skipped["hidden"] += 1
            continue
        if entry.is_symlink():
            try:
                target = Path(entry.path).resolve(strict=True)
            except (OSError, RuntimeError):
                raise DatasetError(f"{entry.path}: a symbolic link that loops or points nowhere; remove it") from None
            if not target.is_relative_to(root):
                raise DatasetError(f"{entry.path}: a symbolic link to {target}, outside {root}; copy what it points "
                                   "to into the folder, or set --data.root to a folder that holds both")
        entries.append(entry)
    return entries


def _images_under(folder: Path, root: Path, seen: set[Path], skipped: Counter, digest) -> list[str]:
    """The image files in ``folder`` and its subfolders (a link back into ``seen`` is a loop)."""
    images = []
    for entry in _entries(folder, root, skipped):
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


class ImageFolderDataModule(PickledImageDataModule):
    """Train, validate and test on folders of image files, one folder per class; the other arguments are
    ``PickledImageDataModule``'s.

    Args:
        root: ``DIR`` holding ``train/<class>/``, ``test/<class>/`` (and optionally ``val/<class>/``), or the class
            folders themselves.
        channels: 1 (gray) or 3 (RGB); default: 1 when every image is gray, else 3.
        resize: [height, width] every image is resized to; default: the size all the images share.
        test_split: for class folders alone: each class's share held out for testing, a fraction (< 1) or a count
            per class (seeded by ``split_seed``); ``all`` tests every image.
        unreadable: a file that cannot be decoded: ``error`` names it and stops; ``skip`` leaves it out and lists it.
        memory_budget_gb: the most the decoded images may take; default: half this machine's memory.
        checkpoint: the model's checkpoint when testing or resuming one (the CLI sets it from ``--ckpt_path``):
            its class names, image shape and channel statistics are used, and what differs is an error.
    """

    def __init__(self, root: str, channels: int | None = None, resize: list[int] | None = None,
                 test_split: float | Literal["all"] = 0.2, unreadable: Literal["skip", "error"] = "error",
                 memory_budget_gb: float | None = None, checkpoint: str | None = None, **kwargs) -> None:
        root = os.path.expanduser(root)
        super().__init__(path=root, unreadable=unreadable, **kwargs)
        check_channels_and_resize(channels, resize)
        if test_split != "all" and not (0 <= test_split < 1 or test_split == int(test_split) > 0):
            raise ConfigError(f"test_split must be a fraction in [0, 1), a count per class or 'all', "
                              f"found {test_split}")
        self.root, self.channels, self.resize, self.test_split = Path(root), channels, resize, test_split
        self.memory_budget = (memory_budget_gb * 1e9 if memory_budget_gb is not None
                              else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2)
        self.trained_on = read_trained_on(checkpoint)

    def read_splits(self) -> dict[str, ImageSplit]:
        listing = list_folder(self.root)
        names = self.trained_on.get("class_names") or listing.class_names
        unknown = [name for name in listing.class_names if name not in names]
        if unknown:
            raise DatasetError(f"{self.root}: class folder '{unknown[0]}' is not one of the checkpoint's "
                               f"{len(names)} classes ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
                               "give --ckpt_path a checkpoint trained on these class folders, or move that one out")
        self.label_values, self.CLASS_NAMES = tuple(range(len(names))), tuple(names)
        labels = np.array([names.index(name) for name in listing.class_names], dtype=np.int64)[listing.labels]
        images, reasons = self._images(listing, labels)
        kept = reasons == ""
        labels, splits, files = labels[kept], listing.splits[kept], np.array(listing.files, dtype=object)[kept]
        if "all" in splits:
            splits = np.where(self._test_rows(labels, names), "test", "train")
        self._report(listing, kept, reasons, splits)
        if "train" not in splits and not self.trained_on:
            raise DatasetError(f"{self.root}: no images to train on (test_split 'all', or no train/ folder); "
                               "to evaluate a checkpoint, pass --ckpt_path")
        self.test_sources = files[splits == "test"].tolist()
        return {split: ImageSplit(images[splits == split], labels[splits == split]) for split in SPLIT_FOLDERS
                if split != "val" or "val" in splits}

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

    def _images(self, listing: Listing, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, C) uint8 images of the files that decoded, and each file's reason ('' if it decoded)."""
        options = f"{CACHE_FORMAT}|{self.channels}|{self.resize}|{self.unreadable}|{listing.fingerprint}"
        entry = cache_entry(self.root, hashlib.sha256(options.encode()).hexdigest())
        cached = self._cached(entry, labels) if self.cache else None
        if cached is not None:
            self._check_against_checkpoint(cached[0].shape[3], cached[0].shape[1:3])
            return cached
        channels, size = self._shape(listing)
        images, errors = decode_all(listing.files, channels, size, f"decoding {self.root}", self.unreadable == "skip")
        reasons = np.array(["" if error is None else str(error) for error in errors])
        if self.cache:
            with contextlib.suppress(OSError):  # a read-only or full disk only costs the next run the decoding
                write_atomically(entry, lambda stream: np.savez(stream, images=images, reasons=reasons))
                remove_stale(entry)
        return images, reasons

    @staticmethod
    def _cached(entry: Path, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        arrays = read_npz(entry, {"images": ("|u1",), "reasons": ("<U",)})
        if arrays is None or arrays["reasons"].shape != labels.shape:
            return None
        images, reasons = arrays["images"], arrays["reasons"]
        try:
            check_splits(entry, {"cached": ImageSplit(images, labels[reasons == ""])})
        except ValueError:  # a DatasetError
            return None
        return images, reasons

    def _shape(self, listing: Listing) -> tuple[int, tuple[int, int]]:
        """The channels and size to decode to, from the files' headers, within the memory budget."""
        headers = each_file(lambda index: read_header(listing.files[index]), len(listing.files),
                            f"reading {self.root}", self.unreadable == "skip")
        readable = [(path, header) for path, header in zip(listing.files, headers, strict=True)
                    if isinstance(header, Header)]
        channels = self.channels or (1 if all(header.gray for _, header in readable) else 3)
        size = tuple(self.resize) if self.resize else (readable[0][1].height, readable[0][1].width)
        other = next(((path, header) for path, header in readable if (header.height, header.width) != size), None)
        if not self.resize and other is not None:
            raise DatasetError(f"{self.root}: images differ in size ({readable[0][0]} is {size[0]}x{size[1]}, "
                               f"{other[0]} is {other[1].height}x{other[1].width}); set --data.resize [H,W]")
        self._check_against_checkpoint(channels, size)
        needed = len(headers) * channels * size[0] * size[1]  # decode_all's array: a row for every file
        if needed > self.memory_budget:
            raise DatasetError(f"{self.root}: {len(headers):,} images of {channels}x{size[0]}x{size[1]} take "
                               f"{needed / 1e9:.1f} GB decoded, over the memory budget of "
                               f"{self.memory_budget / 1e9:.1f} GB; set a smaller --data.resize, or raise "
                               "--data.memory_budget_gb")
        return channels, size

    def _check_against_checkpoint(self, channels: int, size: tuple[int, int]) -> None:
        shape = self.trained_on.get("image_shape")
        if shape is not None and list(shape) != [channels, *size]:
            raise DatasetError(f"{self.root}: its images read as {channels}x{size[0]}x{size[1]} (C, H, W), the "
                               f"checkpoint's model takes {shape[0]}x{shape[1]}x{shape[2]}; set --data.channels "
                               f"{shape[0]} --data.resize [{shape[1]},{shape[2]}]")

    def _report(self, listing: Listing, kept: np.ndarray, reasons: np.ndarray, splits: np.ndarray) -> None:
        """One line: what was read into which split, and what was passed over (with the unreadable files named)."""
        counts = {split: count for split in SPLIT_FOLDERS if (count := int((splits == split).sum()))}
        passed = dict(listing.skipped, unreadable=int((~kept).sum()))
        passed_text = ", ".join(f"{count} {kind}" for kind, count in passed.items() if count)
        named = "; ".join(reasons[~kept][:5].tolist()) + (" ..." if (~kept).sum() > 5 else "")
        classes, images = len(listing.class_names), int(kept.sum())
        print(f"{self.root}: {images:,} image{'s' * (images != 1)} in {classes} class{'es' * (classes != 1)} "
              f"({', '.join(f'{split} {count:,}' for split, count in counts.items())})"
              + (f"; skipped {passed_text}" if passed_text else "") + (f": {named}" if named else ""),
              file=sys.stderr)
