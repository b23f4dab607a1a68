"""CIFAR-10: 32x32 color images of ten object classes, labels 0..9 (50,000 train / 10,000 test)."""

from cnnclf.data.base import PickledImageDataModule


class CIFARDataModule(PickledImageDataModule):
    labels = tuple(range(10))
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    stored_shape = (32, 32, 3)
