"""Person segmentation steps: photos to person log-odds in one model call per image size, then masks and pictures.

The exported model answers one map per image, the log-odds that each pixel shows a person
(``export/architectures.PersonLogOdds``). Here the map is resized to the photo on the
model's device before the threshold, so masks match the photo pixel for pixel.
"""

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
from pycocotools import mask as coco_mask
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from humanserve_core.errors import RequestError
from humanserve_core.images import ImageLimits, decode_image, group_by_size, normalize
from humanserve_core.options import Option, choice, integer, number
from humanserve_core.responses import Answer, image_answer, json_answer

BACKGROUND_WORDS = ("transparent", "blur")
_HEX_COLOUR = re.compile(r"#?([0-9a-fA-F]{6})")


@dataclass(frozen=True)
class SegmenterSpec:
    """How the model sees a photo: the short side it is resized to, and its normalisation (archive config)."""

    short_side: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SegmenterSpec":
        """Read the ``input`` section written by the export recipe."""
        image = config["input"]
        return cls(int(image["short_side"]), tuple(image["mean"]), tuple(image["std"]))

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """The size a photo is resized to: short side ``short_side``, aspect ratio kept."""
        scale = self.short_side / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))


def _background(name: str, value: Any) -> Union[str, tuple[int, int, int], bytes]:
    """transparent | blur | #rrggbb | an image (base64 text, or a multipart file)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    text = str(value).strip() if isinstance(value, str) else ""
    if text.lower() in BACKGROUND_WORDS:
        return text.lower()
    colour = _HEX_COLOUR.fullmatch(text)
    if colour:
        rgb = int(colour.group(1), 16)
        return (rgb >> 16, (rgb >> 8) & 255, rgb & 255)
    if len(text) > 64:  # long text: a base64 image
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            pass
    shown = text if len(text) <= 40 else text[:37] + "..."
    raise RequestError(
        f"option {name!r} must be transparent, blur, a colour #rrggbb or a base64 image, got {shown!r}",
        "InvalidOption",
    )


SEGMENTER_OPTIONS = {
    "background": Option(_background, None, "transparent (PNG cut-out), blur, #rrggbb, or an image (base64, or a multipart file) resized to cover the photo; answers a picture"),
    "feather": number(2.0, 0.0, 50.0, "softens the mask edge over about this many pixels (Gaussian sigma); 0 for a hard edge"),
    "threshold": number(0.5, 0.01, 0.99, "person probability above which a pixel belongs to the mask"),
    "format": choice(None, ("json", "png", "jpeg"), "json (mask as COCO RLE; default without background), png or jpeg (a picture)"),
    "quality": integer(90, 1, 100, "JPEG quality"),
}  # fmt: skip


def check_segmenter_options(options: Mapping[str, Any], limits: ImageLimits) -> Optional[Tensor]:
    """Validate the option combination; decode a background image (``uint8[3, H, W]``) if one was sent."""
    background, image_format = options["background"], options["format"]
    if background is None and image_format in ("png", "jpeg"):
        raise RequestError(f"format={image_format} answers a picture: say which background (transparent, blur, #rrggbb or an image)", "InvalidOption")
    if background is not None and image_format == "json":
        raise RequestError("a background answers a picture; format must be png or jpeg", "InvalidOption")
    if background == "transparent" and image_format == "jpeg":
        raise RequestError("background=transparent needs format=png: JPEG has no transparency", "InvalidOption")
    if not isinstance(background, bytes):
        return None
    try:
        return decode_image(background, limits)
    except RequestError as error:
        raise type(error)(f"the background image: {error.message}", error.kind) from None


def person_log_odds(model: torch.nn.Module, images: list[Tensor], spec: SegmenterSpec) -> list[Tensor]:
    """Each photo's person log-odds ``[H, W]`` at its own size; one model call per distinct model size."""
    sizes = [spec.model_size(*image.shape[-2:]) for image in images]
    maps: list[Optional[Tensor]] = [None] * len(images)
    for size, members in group_by_size(sizes).items():
        batch = torch.stack([F.resize(images[i], list(size), antialias=True) for i in members]).float()
        logits = model(normalize(batch, spec.mean, spec.std))
        for i, odds in zip(members, logits):
            maps[i] = F.resize(odds, list(images[i].shape[-2:]), antialias=False)[0]
    return maps


def person_mask(log_odds: Tensor, threshold: float) -> Tensor:
    """``bool[H, W]``: where the person probability exceeds ``threshold``."""
    return log_odds > float(np.log(threshold / (1 - threshold)))


def feathered(mask: Tensor, feather: float) -> Tensor:
    """``[H, W]`` alpha in 0..1: the mask with its edge softened by a Gaussian of sigma ``feather`` pixels."""
    alpha = mask.float()
    if feather <= 0:
        return alpha
    radius = int(np.ceil(3 * feather))
    return F.gaussian_blur(alpha[None, None], [2 * radius + 1] * 2, [feather] * 2)[0, 0]


def mask_answer(mask: Tensor, header: Mapping[str, Any]) -> Answer:
    """JSON: the mask as COCO RLE (pycocotools, counts as text) and the share of the photo it covers."""
    binary = np.asfortranarray(mask.cpu().numpy().astype(np.uint8))
    rle = coco_mask.encode(binary)
    height, width = binary.shape
    return json_answer({
        **header,
        "image": {"width": width, "height": height},
        "mask": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
        "coverage": round(float(binary.mean()), 6),
    })  # fmt: skip


def composite(image: Tensor, alpha: Tensor, background: Union[str, tuple[int, int, int], Tensor]) -> Tensor:
    """The photo over ``background`` (transparent, blur, an RGB colour or an image) by ``alpha``.

    ``uint8[4, H, W]`` (RGBA) for transparent, else ``uint8[3, H, W]``.
    """
    if isinstance(background, str) and background == "transparent":
        return torch.cat([image, (alpha * 255).round().to(torch.uint8)[None]])
    height, width = image.shape[-2:]
    photo = image.float()
    if isinstance(background, Tensor):
        behind = _cover(background.to(image.device), height, width).float()
    elif background == "blur":
        sigma = max(height, width) / 100
        radius = int(np.ceil(3 * sigma))
        behind = F.gaussian_blur(photo, [2 * radius + 1] * 2, [sigma] * 2)
    else:
        behind = torch.tensor(background, dtype=torch.float32, device=image.device).view(3, 1, 1).expand(3, height, width)
    return (alpha * photo + (1 - alpha) * behind).round().clamp(0, 255).to(torch.uint8)


def picture_answer(picture: Tensor, options: Mapping[str, Any]) -> Answer:
    """The composited picture, PNG for a transparent cut-out unless said otherwise."""
    transparent = isinstance(options["background"], str) and options["background"] == "transparent"
    image_format = options["format"] or ("png" if transparent else "jpeg")
    return image_answer(picture.permute(1, 2, 0).cpu().numpy(), image_format, options["quality"])


def _cover(image: Tensor, height: int, width: int) -> Tensor:
    """Resize to cover ``height`` x ``width`` keeping the aspect ratio, then crop the centre."""
    scale = max(height / image.shape[-2], width / image.shape[-1])
    size = [max(height, round(image.shape[-2] * scale)), max(width, round(image.shape[-1] * scale))]
    return F.center_crop(F.resize(image, size, antialias=True), [height, width])
