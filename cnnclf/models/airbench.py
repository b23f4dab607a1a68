"""AirbenchNet: the CIFAR-10 speed-record network of airbench94 (Keller Jordan, 2024), 94% in under 10 epochs.

A fixed 2x2 whitening convolution (computed from the training images as a fit starts), then three stages of
convolution, max-pool, batch norm and GELU. airbench trains it with ``cnnclf.models.lookahead.Lookahead``.
"""

import torch
from torch import Tensor, nn

from cnnclf.errors import ConfigError
from cnnclf.models.base import ImageClassifier

WHITENING_IMAGES = 5000  # the sample airbench computes its whitening from


class AirbenchNet(ImageClassifier):
    """Options of AirbenchNet, airbench94's network

    Args:
        widths: output channels of the three stages (airbench94: 64, 256, 256).
        whiten_bias_epochs: train the whitening layer's bias for this many epochs, then freeze it.
    """

    def __init__(self, *args, widths: list[int] = [64, 256, 256], whiten_bias_epochs: int = 3,  # noqa: B006
                 **kwargs) -> None:
        if len(widths) != 3:
            raise ConfigError(f"AirbenchNet has three stages: widths needs 3 channel counts, found {widths}")
        super().__init__(*args, **kwargs)

    def features(self, in_channels: int) -> nn.Sequential:
        patch_values = in_channels * 2 * 2
        whitening = nn.Conv2d(in_channels, 2 * patch_values, kernel_size=2)  # (B, 24, 31, 31) on CIFAR
        whitening.weight.requires_grad_(False)
        nn.init.zeros_(whitening.bias)
        w1, w2, w3 = self.hparams.widths
        return nn.Sequential(
            whitening, nn.GELU(),
            conv_group(2 * patch_values, w1),  # (B, w1, 15, 15)
            conv_group(w1, w2),  # (B, w2, 7, 7)
            conv_group(w2, w3),  # (B, w3, 3, 3)
            nn.MaxPool2d(3),  # (B, w3, 1, 1)
        )

    def classifier(self, in_features: int, num_classes: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(in_features, num_classes, bias=False), Scale(1 / 9))

    @property
    def whitening(self) -> nn.Conv2d:
        return self.net[0][0]

    def setup(self, stage: str) -> None:
        # Fitting from scratch needs the filters; a resumed fit, a test or a prediction then
        # loads them from the checkpoint over these (Lightning restores it after this hook).
        if stage != "fit":
            return
        training_images = getattr(self.trainer.datamodule, "training_images", None)
        if training_images is None:
            raise ConfigError("AirbenchNet computes its first layer from the training images: "
                              "fit it with one of cnnclf's data modules")
        self.set_whitening(training_images(WHITENING_IMAGES))

    @torch.no_grad()
    def set_whitening(self, images: Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from raw-pixel ``images`` (N, C, H, W): the eigenvectors of the patches'
        covariance scaled to unit variance, and their negatives (so the GELU after it keeps both signs)."""
        standardized = (images.float().to(self.input_mean.device) - self.input_mean) / self.input_std
        size = self.whitening.kernel_size
        patches = standardized.unfold(2, size[0], 1).unfold(3, size[1], 1)  # (N, C, H', W', kh, kw)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, standardized.shape[1] * size[0] * size[1])
        covariance = (patches.T @ patches / len(patches)).double()
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0)  # largest first
        filters = filters.reshape(-1, standardized.shape[1], *size).to(self.whitening.weight)
        self.whitening.weight.copy_(torch.cat([filters, -filters]))

    def on_train_epoch_start(self) -> None:
        self.whitening.bias.requires_grad_(self.current_epoch < self.hparams.whiten_bias_epochs)


def conv_group(in_channels: int, out_channels: int) -> nn.Sequential:
    """Convolution, 2x2 max-pool, batch norm, GELU, convolution, batch norm, GELU."""
    return nn.Sequential(
        identity_conv(in_channels, out_channels), nn.MaxPool2d(2), shift_norm(out_channels), nn.GELU(),
        identity_conv(out_channels, out_channels), shift_norm(out_channels), nn.GELU(),
    )


def identity_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution that starts by passing its first input channels through: an implicit
    residual connection that lets the un-skipped stack train from the first step."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])  # nn.init writes without autograd
    return conv


def shift_norm(channels: int) -> nn.BatchNorm2d:
    """Batch norm that learns a shift but no scale (the next layer's weights can scale), with
    airbench's fast-moving running statistics."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


class Scale(nn.Module):
    """Multiply by a constant: airbench shrinks its logits by 9 at the start of training."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.4g}"
