"""Small named building blocks shared by the stronger architectures."""

from torch import Tensor, nn


def conv_bn(in_channels: int, out_channels: int, pool: bool = False) -> nn.Sequential:
    """3x3 convolution (no bias: batch norm's shift replaces it), batch norm, ReLU. With ``pool`` a 2x2 max-pool
    halves the side before batch norm and ReLU (as airbench does), which then see a quarter of the pixels."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        *([nn.MaxPool2d(2)] if pool else []),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """``x + block(x)``: lets a deeper stack train as easily as a shallow one."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)
