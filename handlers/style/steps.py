"""Image-to-image steps shared by style transfer and the pix2pix / CycleGAN generators: photos (at most ``max_side``)
through the network, one call per size.

The exported network takes RGB ``uint8`` photos whose sides are multiples of 4 and answers
``uint8`` photos of that size (it converts on its device); photos are padded here by
reflection and cropped back. A generator trained at one size (pix2pix's U-Net, 256x256) sees
its photos resized to it, and its answers are resized back.
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from handlers.core.errors import RequestError
from handlers.core.images import group_by_size, resize_pixels
from handlers.core.options import PNG_COMPRESSION_HELP, choice, flag, integer

STYLE_OPTIONS = {
    "max_side": integer(
        1024,
        16,
        4096,
        "photos larger than this on their longer side are resized down before styling; the answer has that size",
    ),
    "format": choice("jpeg", ("jpeg", "png"), "jpeg or png"),
    "quality": integer(90, 1, 100, "JPEG quality"),
    "png_compression": integer(1, 0, 9, PNG_COMPRESSION_HELP),
}
# Models trained at one size: the answer's size is the caller's choice.
TRAINED_SIZE_OPTIONS = {
    **STYLE_OPTIONS,
    "keep_size": flag(
        True,
        "answer at the photo's size (at most max_side), resized from the model's own; false: the model's own square picture",
    ),
}


SIDE_MULTIPLE = 4  # the network's two stride-2 stages
MIN_SIDE = 8  # the first 9x9 convolution reflects 4 pixels, which needs more than 4 to reflect from


def styled_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The size a photo is styled at: its own, or scaled down so its longer side is ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def check_style_size(size: tuple[int, int], options: Mapping[str, Any]) -> None:
    """Refuse photos whose styled picture would be too small for the network (``RequestError``)."""
    height, width = styled_size(*size, options["max_side"])
    if min(height, width) < MIN_SIDE:
        raise RequestError(
            f"the photo would be answered at {width}x{height} pixels; this model needs at least {MIN_SIDE} on each side "
            f"(a larger photo, or a larger 'max_side' for a long thin one)",
            "InvalidImage",
        )


def coarsest_style_scale(size: tuple[int, int], options: Mapping[str, Any]) -> float:
    """Photo pixels per styled pixel: the coarsest decode that still covers the styled size."""
    return max(size) / options["max_side"]


def coarsest_trained_size_scale(size: tuple[int, int], side: int) -> float:
    """Photo pixels per model pixel for a model trained on ``side`` squares: the coarsest decode still ``side`` pixels
    on each axis."""
    return min(size) / side


def resized_for_style(image: Tensor, size: tuple[int, int], options: Mapping[str, Any]) -> Tensor:
    """``uint8[3, h, w]`` pixels of a photo of ``size`` (decoded at least as large) at its styled size."""
    return resize_pixels(image, styled_size(*size, options["max_side"]))


def stylize(model: torch.nn.Module, images: list[Tensor]) -> list[Tensor]:
    """Each ``uint8[3, H, W]`` photo styled, ``uint8`` at the same size; one model call per distinct size.

    Photos are grouped by size rather than padded together: instance normalisation takes
    statistics over the whole picture, so padding would change the style of every photo.
    The few reflected rows and columns that bring a size to a multiple of 4 are cropped off.
    """
    styled: list[Tensor] = [images[0]] * len(images)
    for (height, width), members in group_by_size([image.shape[-2:] for image in images]).items():
        padding = (0, -width % SIDE_MULTIPLE, 0, -height % SIDE_MULTIPLE)
        photos = torch.nn.functional.pad(torch.stack([images[i] for i in members]), padding, mode="reflect")
        for i, picture in zip(members, model(photos)):
            styled[i] = picture[:, :height, :width]
    return styled


def answer_sizes(
    pictures: list[Tensor], sizes: list[tuple[int, int]], options: list[Mapping[str, Any]]
) -> list[Tensor]:
    """A trained-size model's pictures resized to their photos' styled sizes, where ``keep_size`` asks for it."""
    return [
        resize_pixels(picture, styled_size(*size, option["max_side"])) if option["keep_size"] else picture
        for picture, size, option in zip(pictures, sizes, options)
    ]
