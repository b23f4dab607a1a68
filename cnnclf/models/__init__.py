"""One LightningModule per architecture, all on ``ImageClassifier``."""

from cnnclf.models.base import ImageClassifier
from cnnclf.models.report_cifar import ReportCIFARNet
from cnnclf.models.report_mnist import ReportMNISTNet
from cnnclf.models.report_orl import ReportORLNet

__all__ = ["ImageClassifier", "ReportCIFARNet", "ReportMNISTNet", "ReportORLNet"]
