"""scikit-learn's bundled 8x8 handwritten digits (1,797 images): real data that needs no download, its 0..16
intensities scaled to 0..255 bytes like the report's datasets."""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cnnclf.data.base import PickledImageDataModule
from cnnclf.data.records import ImageSplit


class DigitsDataModule(PickledImageDataModule):
    """The embedded demo dataset; the other arguments are ``PickledImageDataModule``'s but ``path``.

    Args:
        test_fraction: the share of the images in the test split (stratified, always with seed 0).
    """

    label_values = tuple(range(10))
    file_shape_hwc = (8, 8, 1)

    def __init__(self, test_fraction: float = 0.25, **kwargs) -> None:
        super().__init__(path="sklearn.datasets.load_digits", **kwargs)
        self.test_fraction = test_fraction

    def read_splits(self) -> dict[str, ImageSplit]:
        digits = load_digits()
        images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
        train_x, test_x, train_y, test_y = train_test_split(images, digits.target.astype(np.int64),
                                                            test_size=self.test_fraction, stratify=digits.target,
                                                            random_state=0)
        return {"train": ImageSplit(train_x, train_y), "test": ImageSplit(test_x, test_y)}
