"""Check a report-format dataset, ``{'train': [{'image': ndarray, 'label': int}, ...], 'test': [...]}``, and
turn its records into one array per split, in the child process that unpickles the file (``convert``); every
problem is a ``DatasetError`` naming the file, split and record (the checks: docs/safety.md)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnclf.data.safe_pickle import Budget
from cnnclf.errors import DatasetError, describe
from cnnclf.limits import check_limit

SPLITS = ("train", "test")
INT64_RANGE = range(-(2**63), 2**63)


@dataclass(frozen=True)
class ImageSplit:
    """One split held as two arrays: images (N, H, W, C) uint8 or float32, labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def check_records(path: Path, content: object, budget: Budget) -> dict[str, ImageSplit]:
    """The ``train`` and ``test`` splits of ``content``, unpickled from ``path``, as checked arrays."""
    if not isinstance(content, dict) or any(split not in content for split in SPLITS):
        raise DatasetError(f"{path}: expected a dict with keys 'train' and 'test', found {describe(content)}")
    splits = {split: _split_to_arrays(path, split, content[split], budget) for split in SPLITS}
    check_splits(path, splits)
    return splits


def check_splits(where: Path | str, splits: dict[str, ImageSplit]) -> None:
    """The one check of a dataset's arrays, fresh from the reader or from the cache: (N, H, W, C) uint8 or finite
    float32 images, (N,) int64 labels, one image shape in every split, channels and classes within ``limits``."""
    for split, data in splits.items():
        images, labels = data.images, data.labels
        if (images.dtype not in (np.uint8, np.float32) or images.ndim != 4 or 0 in images.shape
                or labels.dtype != np.int64 or labels.shape != (len(images),)):
            raise DatasetError(f"{where}: split '{split}': expected (N, H, W, C) uint8 or float32 images and N int64 "
                               f"labels, found {describe(images)} and {describe(labels)}")
        if images.dtype == np.float32 and not np.isfinite(images).all():
            # after the cast to float32: a float64 1e300 is finite before it and infinite after
            finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
            raise DatasetError(f"{where}: split '{split}', record {int(np.argmin(finite))}: image holds NaN or "
                               "infinite values (as float32, the type images are kept in)")
    (first, shape), *others = ((split, list(data.images.shape[1:])) for split, data in splits.items())
    for split, other in others:
        if other != shape:  # a model trained on one image size or channel count cannot be tested on another
            raise DatasetError(f"{where}: split '{first}' holds images of shape {shape} (H, W, C) but split "
                               f"'{split}' holds {other}; both splits must have the same size and channels")
    check_limit("CHANNELS", shape[2], f"{where}: the images' channels", DatasetError)
    labels = np.unique(np.concatenate([data.labels for data in splits.values()]))
    check_limit("CLASSES", len(labels), f"{where}: the number of distinct labels (classes)", DatasetError)


def _split_to_arrays(path: Path, split: str, records: object, budget: Budget) -> ImageSplit:
    where = f"{path}: split '{split}'"
    if not isinstance(records, (list, tuple)):
        raise DatasetError(f"{where}: expected a list of records, found {describe(records)}")
    if not records:
        raise DatasetError(f"{where}: the split is empty; expected at least one record")
    first = _check_image(where, 0, _record(where, 0, records[0])[0])
    # Records can share one image through the pickle's memo, so a small file could ask for gigabytes here.
    budget.charge(len(records) * first.nbytes, f"split '{split}': {len(records)} images of {first.nbytes} bytes; "
                                               "do its records share one image through the pickle's memo?")
    images = np.empty((len(records), *first.shape), dtype=first.dtype)
    labels = [0] * len(records)
    for index, record in enumerate(records):
        # Record 0 is checked once; every other need only match it (70,000 times for MNIST).
        image, label = _record(where, index, record)
        if not isinstance(image, np.ndarray) or image.shape != first.shape or image.dtype != first.dtype:
            image = _check_image(where, index, image)
            raise DatasetError(f"{where}, record {index}: image is {image.dtype}{list(image.shape)} but record 0 "
                               f"is {first.dtype}{list(first.shape)}; every image of a split must match")
        images[index] = image
        labels[index] = label if type(label) is int and label in INT64_RANGE else _check_label(where, index, label)
    if images.ndim == 3:
        images = images[..., None]  # gray (H, W) -> (H, W, 1)
    return ImageSplit(_compact(images), np.array(labels, dtype=np.int64))


def _record(where: str, index: int, record: object) -> tuple[object, object]:
    if not isinstance(record, dict) or "image" not in record or "label" not in record:
        raise DatasetError(f"{where}, record {index}: expected a dict with keys 'image' and 'label', found "
                           f"{describe(record)}")
    return record["image"], record["label"]


def _check_image(where: str, index: int, image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        problem = f"must be a numpy array, found {describe(image)}"
    elif image.dtype.kind not in "uif":  # bool, complex and text images are refused
        problem = f"must hold integers or floats, found dtype {image.dtype}"
    elif image.ndim not in (2, 3) or 0 in image.shape:
        problem = f"must be (H, W) or (H, W, C), found shape {list(image.shape)}"
    else:
        return image
    raise DatasetError(f"{where}, record {index}: 'image' {problem}")


def _check_label(where: str, index: int, label: object) -> int:
    if isinstance(label, np.ndarray) and label.ndim == 0 and label.dtype.kind in "iu":
        label = label.item()
    if not isinstance(label, (int, np.integer)) or isinstance(label, (bool, np.bool_)):
        raise DatasetError(f"{where}, record {index}: 'label' must be an integer, found {describe(label)}")
    if int(label) not in INT64_RANGE:
        raise DatasetError(f"{where}, record {index}: 'label' {describe(label)} is outside the 64-bit integer range")
    return int(label)


def _compact(images: np.ndarray) -> np.ndarray:
    """Pixel values that fit in a byte are kept as uint8 (8x less memory than int64), others as float32."""
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind in "iu" and images.min() >= 0 and images.max() <= 255:
        return images.astype(np.uint8)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, which check_splits refuses
        return images.astype(np.float32)
