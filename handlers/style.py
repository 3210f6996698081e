"""Fast neural style transfer steps: photos (at most ``max_side``) through the style network, one call per size.

The exported network takes RGB ``uint8`` photos and answers ``uint8`` photos of the size it
was given (it pads to a multiple of 4 and crops back inside, and converts on its device).
"""

from typing import Any, Mapping

import torch
from torch import Tensor

from humanserve_core.images import group_by_size, resize_pixels
from humanserve_core.options import PNG_COMPRESSION_HELP, choice, integer

STYLE_OPTIONS = {
    "max_side": integer(1024, 16, 4096, "photos larger than this on their longer side are resized down before styling; the answer has that size"),
    "format": choice("jpeg", ("jpeg", "png"), "jpeg or png"),
    "quality": integer(90, 1, 100, "JPEG quality"),
    "png_compression": integer(1, 0, 9, PNG_COMPRESSION_HELP),
}  # fmt: skip


def styled_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The size a photo is styled at: its own, or scaled down so its longer side is ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def coarsest_style_scale(size: tuple[int, int], options: Mapping[str, Any]) -> float:
    """Photo pixels per styled pixel: the coarsest decode that still covers the styled size."""
    return max(size) / options["max_side"]


def resized_for_style(image: Tensor, size: tuple[int, int], options: Mapping[str, Any]) -> Tensor:
    """``uint8[3, h, w]`` pixels of a photo of ``size`` (decoded at least as large) at its styled size."""
    return resize_pixels(image, styled_size(*size, options["max_side"]))


def stylize(model: torch.nn.Module, images: list[Tensor]) -> list[Tensor]:
    """Each ``uint8[3, H, W]`` photo styled, ``uint8`` at the same size; one model call per distinct size.

    Photos are grouped by size rather than padded together: instance normalisation takes
    statistics over the whole picture, so padding would change the style of every photo.
    """
    styled: list[Tensor] = [images[0]] * len(images)
    for members in group_by_size([image.shape[-2:] for image in images]).values():
        for i, picture in zip(members, model(torch.stack([images[i] for i in members]))):
            styled[i] = picture
    return styled
