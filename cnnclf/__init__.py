"""cnnclf: train and evaluate CNN image classifiers on pickled image datasets with Lightning."""

__version__ = "0.1.0"
