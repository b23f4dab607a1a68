"""The report's MNIST CNN: one convolution, two dense layers; 542,230 parameters on 1x28x28."""

from torch import nn

from cnnclf.models.base import ImageClassifier


class ReportMNISTNet(ImageClassifier):
    def features(self, in_channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3),  # (B, 32, 26, 26) on MNIST
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, 13, 13): 5,408 features
        )

    def classifier(self, in_features: int, num_classes: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(in_features, 100),
            nn.ReLU(),
            nn.Linear(100, num_classes),
        )
