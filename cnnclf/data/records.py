"""Check a report-format dataset and turn its records into one array per split.

The report's format, one pickle per dataset::

    {'train': [{'image': ndarray, 'label': int}, ...], 'test': [...]}

Images are 2-D gray (H, W) or (H, W, C) arrays of any integer or float dtype (the course's
MNIST file stores int64); labels are Python or numpy integers. Every problem is reported as
a ``DatasetError`` naming the file, the split and the record index. ``cnnclf.data.convert``
runs these checks in the child process that unpickles the file.
"""

from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from cnnclf.errors import DatasetError
from cnnclf.limits import check_limit

SPLITS = ("train", "test")
NUMERIC_KINDS = "uif"  # unsigned, signed, float; bool, complex and object images are refused
IMAGE_BYTES_FACTOR = 2  # the images of all records, before compaction, against the file's size
INT64_RANGE = range(-(2**63), 2**63)


@dataclass(frozen=True)
class ImageSplit:
    """One split held as two arrays: images (N, H, W, C) uint8 or float32, labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def check_records(path: Path, content: object) -> dict[str, ImageSplit]:
    """The validated ``train`` and ``test`` splits of ``content``, unpickled from ``path``."""
    if not isinstance(content, dict):
        raise DatasetError(
            f"{path}: expected a dict with keys 'train' and 'test', found {describe(content)}"
        )
    missing = [split for split in SPLITS if split not in content]
    if missing:
        raise DatasetError(
            f"{path}: missing key(s) {missing}; expected 'train' and 'test', found {describe_keys(content)}"
        )
    # Records can share one image through the pickle's memo, so a small file could otherwise
    # ask for gigabytes once every record's image is copied.
    budget = IMAGE_BYTES_FACTOR * max(path.stat().st_size, 2**20)
    splits = {}
    for split in SPLITS:
        splits[split], used = _split_to_arrays(path, split, content[split], budget)
        budget -= used
    check_splits_match(path, splits)
    return splits


def check_splits_match(path: Path | str, splits: dict[str, ImageSplit]) -> None:
    """A model trained on one image size or channel count cannot be tested on another; and the
    channels and classes, which size the model and its metrics, stay within ``cnnclf.limits``."""
    train, test = (tuple(splits[split].images.shape[1:]) for split in SPLITS)
    if train != test:
        raise DatasetError(f"{path}: split 'train' holds images of shape {list(train)} (H, W, C) but split 'test' "
                           f"holds {list(test)}; both splits must have the same size and channels")
    check_limit("CHANNELS", train[2], f"{path}: the images' channels", DatasetError)
    labels = np.unique(np.concatenate([splits[split].labels for split in SPLITS]))
    check_limit("CLASSES", len(labels), f"{path}: the number of distinct labels (classes)", DatasetError)


def _split_to_arrays(path: Path, split: str, records: object, budget: int) -> tuple[ImageSplit, int]:
    """The split's arrays, and how many bytes its images took before compaction."""
    where = f"{path}: split '{split}'"
    if not isinstance(records, (list, tuple)):
        raise DatasetError(f"{where}: expected a list of records, found {describe(records)}")
    if not records:
        raise DatasetError(f"{where}: the split is empty; expected at least one record")

    first = _check_image(where, 0, _record(where, 0, records[0])[0])
    needed = len(records) * first.nbytes
    if needed > budget:
        raise DatasetError(
            f"{where}: {len(records)} images of {first.nbytes} bytes need {needed} bytes, more than "
            f"{IMAGE_BYTES_FACTOR} times the file's size; records share images through the pickle's memo?"
        )
    images = np.empty((len(records), *first.shape), dtype=first.dtype)
    labels = [0] * len(records)
    for index, record in enumerate(records):
        # The checks of record 0, once; then each record only needs to match it (70,000 times for MNIST).
        image, label = _record(where, index, record)
        if not isinstance(image, np.ndarray) or image.shape != first.shape or image.dtype != first.dtype:
            image = _check_image(where, index, image)
            raise DatasetError(
                f"{where}, record {index}: image is {image.dtype}{list(image.shape)} but record 0 "
                f"is {first.dtype}{list(first.shape)}; every image of a split must match"
            )
        images[index] = image
        labels[index] = label if type(label) is int and label in INT64_RANGE else _check_label(where, index, label)

    images = _compact(images.reshape(len(records), *_hwc(first.shape)))
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        # after the cast to float32: a float64 1e300 is finite before it and infinite after
        finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        raise DatasetError(f"{where}, record {int(np.argmin(finite))}: image holds NaN or infinite values "
                           "(as float32, the type images are kept in)")
    return ImageSplit(images, np.array(labels, dtype=np.int64)), needed


def _record(where: str, index: int, record: object) -> tuple[object, object]:
    if not isinstance(record, dict) or "image" not in record or "label" not in record:
        found = describe_keys(record) if isinstance(record, dict) else describe(record)
        raise DatasetError(
            f"{where}, record {index}: expected a dict with keys 'image' and 'label', found {found}"
        )
    return record["image"], record["label"]


def _check_image(where: str, index: int, image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise DatasetError(
            f"{where}, record {index}: 'image' must be a numpy array, found {describe(image)}"
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
            f"{where}, record {index}: 'label' must be an integer, found {describe(label)}"
        )
    if int(label) not in INT64_RANGE:
        raise DatasetError(f"{where}, record {index}: 'label' {describe(label)} is outside the 64-bit integer range")
    return int(label)


def describe(value: object) -> str:
    """The type of an untrusted value and a short rendering of it that is safe to build: never the
    ``repr`` of a container (which can nest or repeat without end) or of a huge integer."""
    name = type(value).__name__
    if isinstance(value, (bool, np.bool_)):
        return f"{name} {bool(value)}"
    if isinstance(value, (int, np.integer)):
        bits = int(value).bit_length()
        return f"{name} {int(value)}" if bits <= 64 else f"{name} of {bits} bits"
    if isinstance(value, (float, np.floating)):
        return f"{name} {float(value)!r}"
    if isinstance(value, (str, bytes)):
        return f"{name} {value[:40]!r}{'...' if len(value) > 40 else ''}"
    if isinstance(value, np.ndarray):
        return f"array {value.dtype}{list(value.shape)}"
    if isinstance(value, (list, tuple, dict)):
        return f"{name} of {len(value)} items"
    return name


def describe_keys(mapping: dict, shown: int = 10) -> str:
    keys = [repr(key[:40]) if isinstance(key, str) else describe(key) for key in islice(mapping, shown)]
    return f"[{', '.join(sorted(keys))}{', ...' if len(mapping) > shown else ''}]"


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (*shape, 1) if len(shape) == 2 else shape


def _compact(images: np.ndarray) -> np.ndarray:
    """Pixel values that fit in a byte are kept as uint8 (8x less memory than int64)."""
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind in "iu" and images.min() >= 0 and images.max() <= 255:
        return images.astype(np.uint8)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, which the caller refuses
        return images.astype(np.float32)
