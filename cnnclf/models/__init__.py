"""One LightningModule per architecture, all on ``ImageClassifier``.

The report's networks, layer for layer: ``ReportMNISTNet``, ``ReportORLNet``, ``ReportCIFARNet``.
Stronger ones: ``ConvBNNet`` (gray digits and faces), ``ResNet9`` and ``AirbenchNet`` (CIFAR-10),
whose recipes add the ``lookahead.Lookahead`` weight-averaging callback.
"""

from cnnclf.models.airbench import AirbenchNet
from cnnclf.models.base import ImageClassifier, class_names
from cnnclf.models.conv_bn import ConvBNNet
from cnnclf.models.report_cifar import ReportCIFARNet
from cnnclf.models.report_mnist import ReportMNISTNet
from cnnclf.models.report_orl import ReportORLNet
from cnnclf.models.resnet9 import ResNet9

__all__ = ["AirbenchNet", "ConvBNNet", "ImageClassifier", "ReportCIFARNet", "ReportMNISTNet", "ReportORLNet", "ResNet9",
           "class_names"]
