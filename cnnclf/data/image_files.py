"""Read image files (PNG, JPEG, PGM, anything Pillow opens) into one batch for ``predict``."""

import glob
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from cnnclf.errors import DatasetError


@dataclass(frozen=True)
class ImageFiles:
    paths: list[Path]
    tensor: Tensor  # (N, C, H, W) uint8, resized to the model's input


def expand_patterns(patterns: list[str]) -> list[Path]:
    """Files, glob patterns and folders (every image file in them, sorted by name), in the order given."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise DatasetError(f"{pattern}: no image file matches this pattern")
        for match in map(Path, matches):
            paths.extend(images_in_folder(match) if match.is_dir() else [match])
    return paths


def images_in_folder(folder: Path) -> list[Path]:
    extensions = Image.registered_extensions()  # every suffix Pillow reads: .png, .jpg, .pgm, ...
    images = sorted(path for path in folder.iterdir() if path.suffix.lower() in extensions and path.is_file())
    if not images:
        raise DatasetError(f"{folder}: a folder with no image files ({', '.join(sorted(extensions)[:6])}, ...)")
    return images


def read_image_files(patterns: list[str], image_shape: list[int]) -> ImageFiles:
    """Load each file as gray (1 channel) or RGB (3) and resize it to ``image_shape`` (C, H, W)."""
    channels, height, width = image_shape
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DatasetError(f"predicting from image files needs a 1- or 3-channel model, found {channels}")
    paths = expand_patterns(patterns)
    arrays = []
    for path in paths:
        try:
            _check_regular_file(path)
            with Image.open(path) as image:
                # Pillow only warns between its limit and twice it, and decodes the whole image
                if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(f"Image size ({image.width * image.height} pixels) exceeds "
                                                       f"limit of {Image.MAX_IMAGE_PIXELS} pixels")
                resized = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
        except (FileNotFoundError, IsADirectoryError):
            raise DatasetError(f"{path}: no such image file") from None
        except Image.DecompressionBombError as error:
            raise DatasetError(f"{path}: refused, a possible decompression bomb: {error}") from None
        except (UnidentifiedImageError, OSError) as error:
            raise DatasetError(f"{path}: not a readable image: {error}") from None
        arrays.append(np.asarray(resized, dtype=np.uint8).reshape(height, width, channels))
    tensor = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageFiles(paths, tensor)


def _check_regular_file(path: Path) -> None:
    """Refuse a FIFO, device or socket before opening it: reading one can block forever."""
    mode = path.stat().st_mode  # FileNotFoundError when missing
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(mode):
        raise DatasetError(f"{path}: not a regular file (a FIFO, device or socket); expected an image file")
