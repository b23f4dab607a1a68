"""ORL (AT&T) faces: 112x92 gray photos of 40 people, stored as RGB copies, labels 1..40 (class indices 0..39)."""

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnclf.data.base import PickledImageDataModule, check_channels_and_resize


class ORLDataModule(PickledImageDataModule):
    """ORL faces; the other arguments are ``PickledImageDataModule``'s.

    Args:
        channels: 3 keeps the file's RGB copies (as the report did); 1 keeps one gray channel.
        resize: (H, W) to resize every image to once at load, e.g. [92, 92] as in the report.
    """

    label_values = tuple(range(1, 41))
    file_shape_hwc = (112, 92, 3)

    def __init__(self, path: str, channels: int = 3, resize: list[int] | None = None, **kwargs) -> None:
        check_channels_and_resize(channels, resize)
        super().__init__(path, **kwargs)
        self.channels, self.resize = channels, resize

    def transform_images(self, images: Tensor) -> Tensor:
        images = images[:, : self.channels]
        if self.resize is None:
            return images
        resized = F.interpolate(images.float(), size=tuple(self.resize), mode="bilinear", antialias=True)
        return resized.round().clamp(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else resized
