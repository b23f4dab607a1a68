"""Predict on image files with nothing but a checkpoint: ``cnnclf predict --ckpt_path FILE --data.predict_files DIR``.

The checkpoint's hyper-parameters hold what the training data decided: the classes, their
names, the image shape and the channel statistics. The CLI picks this data module when predict
gets image files and no config.
"""

from typing import Literal

from cnnclf.checkpoints import read_checkpoint
from cnnclf.data.base import PickledImageDataModule
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
        self.trained_on = read_checkpoint(checkpoint, mmap=True).get("hyper_parameters") or {}
        if "num_classes" not in self.trained_on or "image_shape" not in self.trained_on:
            raise CheckpointError(f"{checkpoint}: its hyper-parameters do not say the classes and image shape it "
                                  "was trained for (not saved by 'cnnclf fit'); predict with --config and --data.path")
        self.predict_images  # noqa: B018 - read now: an empty folder or a bad file stops before the model is built

    @property
    def num_classes(self) -> int:
        return self.trained_on["num_classes"]

    @property
    def image_shape(self) -> list[int]:
        return list(self.trained_on["image_shape"])

    @property
    def class_names(self) -> list[str]:
        return list(self.trained_on.get("class_names") or map(str, range(self.num_classes)))

    @property
    def input_mean(self) -> list[float] | None:
        return self.trained_on.get("input_mean")

    @property
    def input_std(self) -> list[float] | None:
        return self.trained_on.get("input_std")

    def setup(self, stage: str | None = None) -> None:
        if stage != "predict":
            raise ConfigError(f"ImageFilesDataModule only predicts; '{stage}' needs a dataset (--config, --data.path)")
