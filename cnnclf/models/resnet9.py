"""ResNet-9 after Myrtle's DAWNBench CIFAR-10 record (airbench's ancestor): conv-BN-ReLU stages and two residual
blocks. At ``width`` 64 it is the record net (94% in 24 epochs); narrower ones trade accuracy for CPU time."""

from torch import nn

from cnnclf.models.base import ImageClassifier
from cnnclf.models.blocks import Residual, conv_bn


class ResNet9(ImageClassifier):
    """Options of ResNet9, the fast-CIFAR-record ResNet-9

    Args:
        width: channels of the first stage; later stages use 2x, 4x and 8x.
    """

    def __init__(self, *args, width: int = 64, **kwargs) -> None:
        super().__init__(*args, **kwargs)

    def features(self, in_channels: int) -> nn.Sequential:
        w = self.hparams.width
        return nn.Sequential(
            conv_bn(in_channels, w),  # (B, w, 32, 32)
            conv_bn(w, 2 * w, pool=True),  # (B, 2w, 16, 16)
            Residual(nn.Sequential(conv_bn(2 * w, 2 * w), conv_bn(2 * w, 2 * w))),
            conv_bn(2 * w, 4 * w, pool=True),  # (B, 4w, 8, 8)
            conv_bn(4 * w, 8 * w, pool=True),  # (B, 8w, 4, 4)
            Residual(nn.Sequential(conv_bn(8 * w, 8 * w), conv_bn(8 * w, 8 * w))),
            nn.AdaptiveMaxPool2d(1),  # (B, 8w, 1, 1)
        )

    def classifier(self, in_features: int, num_classes: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(in_features, num_classes, bias=False))
