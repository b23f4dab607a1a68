"""ORL (AT&T) faces: 112x92 gray photos of 40 people, stored as RGB copies, labels 1..40.

Labels stay 1..40 wherever a user sees them; the network's class indices are 0..39.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnclf.data.base import PickledImageDataModule
from cnnclf.errors import ConfigError


class ORLDataModule(PickledImageDataModule):
    """ORL faces; see ``PickledImageDataModule`` for the shared arguments.

    Args:
        channels: 3 keeps the file's RGB copies (as the report did); 1 keeps one gray channel.
        resize: (H, W) to resize every image to once at load, e.g. [92, 92] as in the report.
    """

    label_values = tuple(range(1, 41))
    file_shape_hwc = (112, 92, 3)

    def __init__(self, path: str, channels: int = 3, resize: list[int] | None = None, **kwargs) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, found {channels}")
        if resize is not None and (len(resize) != 2 or min(resize) < 1):
            raise ConfigError(f"resize must be [height, width] with positive sizes, found {resize}")
        super().__init__(path, **kwargs)
        self.channels = channels
        self.resize = resize

    def transform_images(self, images: Tensor) -> Tensor:
        images = images[:, : self.channels]
        if self.resize is None:
            return images
        resized = F.interpolate(images.float(), size=tuple(self.resize), mode="bilinear", antialias=True)
        return resized.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else resized
