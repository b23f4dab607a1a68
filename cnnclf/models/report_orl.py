"""The report's ORL CNN: two convolutions, four dense layers with dropout; 42,130,782 parameters on 3x92x92
(the report resized the 112x92 faces to 92x92). Pooled before the ReLU (see report_mnist.py)."""

from torch import nn

from cnnclf.models.base import ImageClassifier


class ReportORLNet(ImageClassifier):
    """Options of ReportORLNet, the report's ORL network

    Args:
        dropout: probability of the dropout layers.
        final_relu: end with a ReLU on the logits, as the report did (see ``ReportMNISTNet``).
    """

    def __init__(self, *args, dropout: float = 0.5, final_relu: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)

    def features(self, in_channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_channels, 36, kernel_size=7),  # (B, 36, 86, 86) on 92x92
            nn.MaxPool2d(2),  # (B, 36, 43, 43)
            nn.ReLU(),
            nn.Conv2d(36, 54, kernel_size=5),  # (B, 54, 39, 39)
            nn.MaxPool2d(2),  # (B, 54, 19, 19): 19,494 features
            nn.ReLU(),
        )

    def classifier(self, in_features: int, num_classes: int) -> nn.Sequential:
        p = self.hparams.dropout
        return nn.Sequential(
            nn.Linear(in_features, 2024), nn.ReLU(), nn.Dropout(p),
            nn.Linear(2024, 1024), nn.ReLU(), nn.Dropout(p),
            nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(p),
            nn.Linear(512, num_classes), *([nn.ReLU()] if self.hparams.final_relu else []),
        )
