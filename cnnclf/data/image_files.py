"""Decode image files (anything Pillow opens) into uint8 arrays: the one reader of predict's files and image folders.
Each file is checked before its pixels are decoded (orientation, bit depths, modes, the thread pool: docs/folders.md).
"""

import glob
import os
import stat
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from cnnclf.errors import DatasetError

GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
EXTENSIONS = frozenset(Image.registered_extensions())  # every suffix Pillow reads: .png, .jpg, .pgm, ...
SWAPPED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that turn the image a quarter
# Pillow only warns of an image between its pixel limit and twice it; _opened refuses every such image in one line
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass(frozen=True)
class Header:
    height: int  # after EXIF orientation
    width: int
    gray: bool


def read_header(path: Path) -> Header:
    """The size and kind of an image, read from its header without decoding its pixels."""
    with _opened(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112) in SWAPPED_ORIENTATIONS:
            width, height = height, width
        return Header(height, width, image.mode in GRAY_MODES)


def decode(path: Path, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """The image as an (H, W, channels) uint8 array, resized to ``size`` (H, W) when it differs."""
    with _opened(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode.startswith("I"):  # 16-bit (or 32-bit integer) gray: 0..65535 onto 0..255
            image = Image.fromarray((np.clip(np.asarray(image), 0, 65535) // 257).astype(np.uint8))
        image = image.convert("L" if channels == 1 else "RGB")
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, channels)


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` after the file checks, every way a file can fail turned into one ``DatasetError`` line."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, device or socket)"
            raise DatasetError(f"{path}: {kind}; expected an image file")
        with Image.open(path) as image:
            pixels = image.width * image.height
            if pixels > Image.MAX_IMAGE_PIXELS:  # Pillow only warns between its limit and twice it
                raise DatasetError(f"{path}: refused, a possible decompression bomb: Image size ({pixels} pixels) "
                                   f"exceeds limit of {Image.MAX_IMAGE_PIXELS} pixels")
            yield image
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such image file") from None
    except Image.DecompressionBombError as error:
        raise DatasetError(f"{path}: refused, a possible decompression bomb: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise DatasetError(f"{path}: not a readable image: {error}") from None


def each_file(work: Callable[[int], object], count: int, what: str, skip: bool) -> list[object]:
    """``work(i)`` for i < count in a thread pool, in order. A ``DatasetError`` stops it unless ``skip``, which
    returns the error in that file's place (and stops only when every file failed). A progress line goes to
    stderr every 10 seconds once the work has taken two."""
    def attempt(index: int) -> object:
        try:
            return work(index)
        except DatasetError as error:
            return error

    results, start, shown = [], time.monotonic(), 0.0
    with ThreadPool(min(16, (os.cpu_count() or 1) + 2)) as pool:
        for result in pool.imap(attempt, range(count), chunksize=256):
            if isinstance(result, DatasetError) and not skip:  # leaving the pool ends the work still queued
                raise DatasetError(f"{result}; --data.unreadable skip leaves such files out")
            results.append(result)
            elapsed = time.monotonic() - start
            if elapsed > 2 and (elapsed - shown > 10 or len(results) == count):
                shown = elapsed
                print(f"{what}: {len(results):,}/{count:,} images, {elapsed:.0f} s", file=sys.stderr, flush=True)
    failed = [result for result in results if isinstance(result, DatasetError)]
    if failed and len(failed) == count:
        raise DatasetError(f"{what}: none of the {count} image files could be read; the first: {failed[0]}")
    return results


def decode_all(paths: list, channels: int, size: tuple[int, int], what: str,
               skip: bool) -> tuple[np.ndarray, list[DatasetError | None]]:
    """The files that decode, as one (N, H, W, C) array, and each file's error (``None`` where it decoded)."""
    out = np.empty((len(paths), *size, channels), dtype=np.uint8)

    def work(index: int) -> None:
        out[index] = decode(paths[index], channels, size)

    errors = each_file(work, len(paths), what, skip)
    decoded = [error is None for error in errors]
    return (out if all(decoded) else out[decoded]), errors


# -- predict's files ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFiles:
    paths: list[Path]
    tensor: Tensor  # (N, C, H, W) uint8, resized to the model's input
    skipped: list[tuple[str, str]]  # (file, why) of each file given or found that was not predicted


def expand_patterns(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, glob patterns and folders (their image files, sorted) in the order given; and the folders' other
    files but hidden ones."""
    paths, others = [], []
    for pattern in patterns:
        if not glob.has_magic(pattern) and not os.path.exists(pattern):  # mistyped, not an unreadable image
            raise DatasetError(f"{pattern}: no such file or folder")
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if "**" in pattern:  # every file below: the folders it also matches are on the way
            matches = [match for match in matches if not os.path.isdir(match)]
        if not matches:
            raise DatasetError(f"{pattern}: no image file matches this pattern")
        for match in map(Path, matches):
            if not match.is_dir():
                paths.append(match)
                continue
            found = sorted(path for path in match.iterdir() if not path.name.startswith("."))
            images = [path for path in found if path.suffix.lower() in EXTENSIONS]
            if not images and any(path.is_dir() for path in found):
                raise DatasetError(f"{match}: no image files in it, only folders: '{match}/**' (quoted) takes every "
                                   f"image below it; --data.root {match} with --ckpt_path tests on class folders")
            if not images:
                raise DatasetError(f"{match}: a folder with no image files ({', '.join(sorted(EXTENSIONS)[:6])}, ...)")
            paths.extend(images)
            others.extend((str(path), "not an image file (by its suffix)") for path in found
                          if path.suffix.lower() not in EXTENSIONS)
    return paths, others


def read_image_files(patterns: list[str], image_shape: list[int], skip_unreadable: bool = False) -> ImageFiles:
    """Each file as gray or RGB resized to ``image_shape`` (C, H, W); an unreadable one is a ``DatasetError``,
    or with ``skip_unreadable`` listed in ``skipped`` (unless none is readable)."""
    channels, height, width = image_shape
    if channels not in (1, 3):
        raise DatasetError(f"predicting from image files needs a 1- or 3-channel model, found {channels}")
    paths, skipped = expand_patterns(patterns)
    images, errors = decode_all(paths, channels, (height, width), "decoding images to predict", skip_unreadable)
    skipped += [(str(path), str(error).removeprefix(f"{path}: ")) for path, error in zip(paths, errors, strict=True)
                if error is not None]
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return ImageFiles([path for path, error in zip(paths, errors, strict=True) if error is None], tensor, skipped)
