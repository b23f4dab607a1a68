"""CIFAR-10: 32x32 color images of ten object classes, labels 0..9 (50,000 train / 10,000 test)."""

from cnnclf.data.base import PickledImageDataModule


class CIFARDataModule(PickledImageDataModule):
    label_values = tuple(range(10))
    CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    file_shape_hwc = (32, 32, 3)
