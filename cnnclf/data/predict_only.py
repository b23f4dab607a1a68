"""Predict on image files with nothing but a checkpoint: ``cnnclf predict --ckpt_path FILE --data.predict_files DIR``.

The checkpoint's hyper-parameters hold what the training data decided (classes, names, image shape, channel
statistics); the CLI picks this data module when predict gets image files and no config.
"""

from typing import Literal

from cnnclf.data.base import PickledImageDataModule, read_trained_on
from cnnclf.errors import CheckpointError, ConfigError


class ImageFilesDataModule(PickledImageDataModule):
    """Image files to predict on, shaped and normalized as the checkpoint's training data was.

    Args:
        checkpoint: the checkpoint to predict with (the CLI sets it from ``--ckpt_path``).
        predict_files: image files, folders of them, or glob patterns.
        batch_size: images per forward pass.
        unreadable: ``skip`` (list an unreadable file beside the predictions) or ``error`` (stop at it).
    """

    def __init__(self, checkpoint: str | None = None, predict_files: list[str] | None = None,
                 batch_size: int = 256, unreadable: Literal["skip", "error"] = "skip") -> None:
        super().__init__(path=checkpoint or "", batch_size=batch_size, predict_files=predict_files,
                         unreadable=unreadable)
        if not predict_files:
            raise ConfigError("ImageFilesDataModule predicts on image files: set --data.predict_files")
        if checkpoint is None:
            raise ConfigError("ImageFilesDataModule needs the checkpoint to predict with: set --ckpt_path")
        self.trained_on = read_trained_on(checkpoint)
        if not {"num_classes", "image_shape"} <= self.trained_on.keys():
            raise CheckpointError(f"{checkpoint}: its hyper-parameters do not say the classes and image shape it "
                                  "was trained for (not saved by 'cnnclf fit'); predict with --config and --data.path")
        # A model built without the CLI may have no class names; its classes are then its label values 0..N-1.
        names = self.trained_on.get("class_names") or [str(label) for label in range(self.trained_on["num_classes"])]
        self.trained_on = {**self.trained_on, "class_names": names}
        self.predict_images  # noqa: B018 - read now: an empty folder or a bad file stops before the model is built

    def setup(self, stage: str | None = None) -> None:
        if stage != "predict":
            raise ConfigError(f"ImageFilesDataModule only predicts; '{stage}' needs a dataset (--config, --data.path)")
