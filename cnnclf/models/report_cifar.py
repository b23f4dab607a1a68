"""The report's CIFAR CNN: three padded convolution blocks, three dense layers with dropout; 154,454 parameters
on 3x32x32. Pooled before the ReLU (see report_mnist.py)."""

from torch import nn

from cnnclf.models.base import ImageClassifier


class ReportCIFARNet(ImageClassifier):
    """Options of ReportCIFARNet, the report's CIFAR-10 network

    Args:
        dropout: probability of the dropout layers.
        final_relu: end with a ReLU on the logits, as the report did (see ``ReportMNISTNet``).
    """

    def __init__(self, *args, dropout: float = 0.5, final_relu: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)

    def features(self, in_channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # (B, 16, 16, 16)
            nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # (B, 32, 8, 8)
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # (B, 64, 4, 4)
        )

    def classifier(self, in_features: int, num_classes: int) -> nn.Sequential:
        p = self.hparams.dropout
        return nn.Sequential(
            nn.Dropout(p),
            nn.Linear(in_features, 120), nn.ReLU(), nn.Dropout(p),
            nn.Linear(120, 60), nn.ReLU(), nn.Dropout(p),
            nn.Linear(60, num_classes), *([nn.ReLU()] if self.hparams.final_relu else []),
        )
