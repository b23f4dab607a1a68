"""One LightningModule per architecture, all on ``ImageClassifier``: the report's networks layer for layer
(``Report*Net``), and stronger ones (``ConvBNNet`` for gray images, ``ResNet9`` and ``AirbenchNet`` for CIFAR-10)."""

from cnnclf.models.airbench import AirbenchNet
from cnnclf.models.base import ImageClassifier, class_names
from cnnclf.models.conv_bn import ConvBNNet
from cnnclf.models.report_cifar import ReportCIFARNet
from cnnclf.models.report_mnist import ReportMNISTNet
from cnnclf.models.report_orl import ReportORLNet
from cnnclf.models.resnet9 import ResNet9

__all__ = ["AirbenchNet", "ConvBNNet", "ImageClassifier", "ReportCIFARNet", "ReportMNISTNet", "ReportORLNet", "ResNet9",
           "class_names"]
