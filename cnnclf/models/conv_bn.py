"""A VGG-style net with batch norm for gray digits and faces: stages of convolution, 2x2 max-pool, batch norm and
ReLU, then global average pooling and one linear layer."""

from torch import nn

from cnnclf.models.base import ImageClassifier
from cnnclf.models.blocks import conv_bn


class ConvBNNet(ImageClassifier):
    """Options of ConvBNNet, convolution stages with batch norm

    Args:
        widths: output channels of each stage (each halves the image side).
        dropout: probability of the dropout layer before the linear one.
    """

    def __init__(self, *args, widths: list[int] = [32, 64, 128], dropout: float = 0.5,  # noqa: B006
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)

    def features(self, in_channels: int) -> nn.Sequential:
        widths = self.hparams.widths
        stages = [conv_bn(width_in, width_out, pool=True)  # (B, width_out, H/2, W/2)
                  for width_in, width_out in zip([in_channels, *widths[:-1]], widths, strict=True)]
        return nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1))  # (B, widths[-1], 1, 1)

    def classifier(self, in_features: int, num_classes: int) -> nn.Sequential:
        return nn.Sequential(nn.Dropout(self.hparams.dropout), nn.Linear(in_features, num_classes))
