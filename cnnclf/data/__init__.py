"""Safe loading of report-format pickles, and one LightningDataModule per dataset; ``PickledImageDataModule``
serves any other pickle in the report's format, ``ImageFolderDataModule`` folders of image files."""

from cnnclf.data.base import PickledImageDataModule
from cnnclf.data.cifar import CIFARDataModule
from cnnclf.data.convert import read_pickled_dataset
from cnnclf.data.digits import DigitsDataModule
from cnnclf.data.folders import ImageFolderDataModule
from cnnclf.data.mnist import MNISTDataModule
from cnnclf.data.orl import ORLDataModule
from cnnclf.data.predict_only import ImageFilesDataModule
from cnnclf.data.records import ImageSplit
from cnnclf.data.safe_pickle import load_pickle
from cnnclf.errors import DatasetError

__all__ = ["CIFARDataModule", "DatasetError", "DigitsDataModule", "ImageFilesDataModule", "ImageFolderDataModule",
           "ImageSplit", "MNISTDataModule", "ORLDataModule", "PickledImageDataModule", "load_pickle",
           "read_pickled_dataset"]
