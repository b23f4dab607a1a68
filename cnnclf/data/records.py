"""Check a report-format dataset and turn its records into one array per split.

The report's format, one pickle per dataset::

    {'train': [{'image': ndarray, 'label': int}, ...], 'test': [...]}

Images are 2-D gray (H, W) or (H, W, C) arrays of any integer or float dtype (the course's
MNIST file stores int64); labels are Python or numpy integers. Every problem is reported as
a ``DatasetError`` naming the file, the split and the record index.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnclf.data.safe_pickle import load_pickle
from cnnclf.errors import DatasetError

SPLITS = ("train", "test")
NUMERIC_KINDS = "uif"  # unsigned, signed, float; bool, complex and object images are refused


@dataclass(frozen=True)
class ImageSplit:
    """One split held as two arrays: images (N, H, W, C) uint8 or float32, labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def read_pickled_dataset(path: str | Path) -> dict[str, ImageSplit]:
    """Safely unpickle ``path`` and return its validated ``train`` and ``test`` splits."""
    path = Path(path)
    content = load_pickle(path)
    if not isinstance(content, dict):
        raise DatasetError(
            f"{path}: expected a dict with keys 'train' and 'test', found {type(content).__name__}"
        )
    missing = [split for split in SPLITS if split not in content]
    if missing:
        raise DatasetError(
            f"{path}: missing key(s) {missing}; expected 'train' and 'test', found {sorted(map(str, content))}"
        )
    return {split: _split_to_arrays(path, split, content[split]) for split in SPLITS}


def _split_to_arrays(path: Path, split: str, records: object) -> ImageSplit:
    where = f"{path}: split '{split}'"
    if not isinstance(records, (list, tuple)):
        raise DatasetError(f"{where}: expected a list of records, found {type(records).__name__}")
    if not records:
        raise DatasetError(f"{where}: the split is empty; expected at least one record")

    first = _check_image(where, 0, _record(where, 0, records[0])[0])
    images = np.empty((len(records), *_hwc(first.shape)), dtype=first.dtype)
    labels = np.empty(len(records), dtype=np.int64)
    for index, record in enumerate(records):
        image, label = _record(where, index, record)
        image = _check_image(where, index, image)
        if image.shape != first.shape or image.dtype != first.dtype:
            raise DatasetError(
                f"{where}, record {index}: image is {image.dtype}{list(image.shape)} but record 0 "
                f"is {first.dtype}{list(first.shape)}; every image of a split must match"
            )
        images[index] = image.reshape(images.shape[1:])
        labels[index] = _check_label(where, index, label)

    if images.dtype.kind == "f":
        finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise DatasetError(f"{where}, record {bad}: image holds NaN or infinite values")
    return ImageSplit(_compact(images), labels)


def _record(where: str, index: int, record: object) -> tuple[object, object]:
    if not isinstance(record, dict) or "image" not in record or "label" not in record:
        found = sorted(map(str, record)) if isinstance(record, dict) else type(record).__name__
        raise DatasetError(
            f"{where}, record {index}: expected a dict with keys 'image' and 'label', found {found}"
        )
    return record["image"], record["label"]


def _check_image(where: str, index: int, image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise DatasetError(
            f"{where}, record {index}: 'image' must be a numpy array, found {type(image).__name__}"
        )
    if image.dtype.kind not in NUMERIC_KINDS:
        raise DatasetError(
            f"{where}, record {index}: 'image' must hold integers or floats, found dtype {image.dtype}"
        )
    if image.ndim not in (2, 3) or 0 in image.shape:
        raise DatasetError(
            f"{where}, record {index}: 'image' must be (H, W) or (H, W, C), found shape {list(image.shape)}"
        )
    return image


def _check_label(where: str, index: int, label: object) -> int:
    is_integer = isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_))
    if isinstance(label, np.ndarray) and label.ndim == 0 and label.dtype.kind in "iu":
        is_integer, label = True, label.item()
    if not is_integer:
        raise DatasetError(
            f"{where}, record {index}: 'label' must be an integer, found {type(label).__name__} {label!r:.40}"
        )
    return int(label)


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (*shape, 1) if len(shape) == 2 else shape


def _compact(images: np.ndarray) -> np.ndarray:
    """Pixel values that fit in a byte are kept as uint8 (8x less memory than int64)."""
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind in "iu" and images.min() >= 0 and images.max() <= 255:
        return images.astype(np.uint8)
    return images.astype(np.float32)
