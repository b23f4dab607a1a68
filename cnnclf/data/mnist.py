"""MNIST: 28x28 gray handwritten digits, labels 0..9 (60,000 train / 10,000 test in the report's file)."""

from cnnclf.data.base import PickledImageDataModule


class MNISTDataModule(PickledImageDataModule):
    label_values = tuple(range(10))
    file_shape_hwc = (28, 28, 1)
