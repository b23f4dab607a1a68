"""MNIST: 28x28 gray handwritten digits, labels 0..9 (60,000 train / 10,000 test in the report's file)."""

from cnnclf.data.base import PickledImageDataModule


class MNISTDataModule(PickledImageDataModule):
    labels = tuple(range(10))
    stored_shape = (28, 28, 1)
