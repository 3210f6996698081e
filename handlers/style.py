"""Fast neural style transfer steps: photos (at most ``max_side``) through the style network, one call per size.

The exported network takes RGB values in 0..255 and answers the same range, at the size
it was given (it pads to a multiple of 4 and crops back inside).
"""

from typing import Any, Mapping

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from humanserve_core.images import group_by_size
from humanserve_core.options import choice, integer

STYLE_OPTIONS = {
    "max_side": integer(1024, 16, 4096, "photos larger than this on their longer side are resized down before styling; the answer has that size"),
    "format": choice("jpeg", ("jpeg", "png"), "jpeg or png"),
    "quality": integer(90, 1, 100, "JPEG quality"),
}  # fmt: skip


def styled_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The size a photo is styled at: its own, or scaled down so its longer side is ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resized_for_style(image: Tensor, options: Mapping[str, Any]) -> Tensor:
    """``uint8[3, H, W]`` photo at its styled size (antialiased when shrunk)."""
    size = styled_size(*image.shape[-2:], options["max_side"])
    return image if size == tuple(image.shape[-2:]) else F.resize(image, list(size), antialias=True)


def stylize(model: torch.nn.Module, images: list[Tensor]) -> list[Tensor]:
    """Each ``uint8[3, H, W]`` photo styled, ``uint8`` at the same size; one model call per distinct size.

    Photos are grouped by size rather than padded together: instance normalisation takes
    statistics over the whole picture, so padding would change the style of every photo.
    """
    styled: list[Tensor] = [images[0]] * len(images)
    for members in group_by_size([image.shape[-2:] for image in images]).values():
        out = model(torch.stack([images[i] for i in members]).float())
        for i, picture in zip(members, out.clamp(0, 255).round().to(torch.uint8)):
            styled[i] = picture
    return styled
