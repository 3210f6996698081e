"""Person segmentation steps: photos to person log-odds in one model call per image size, then masks and pictures.

The exported model answers one map per image, the log-odds that each pixel shows a person
(``export/segmentation.PersonLogOdds``). The map is resized to the photo (bilinear)
before the threshold, so masks match the photo pixel for pixel.
"""

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as coco_mask
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from handlers.core.answers import Answer, image_answer, json_answer
from handlers.core.errors import RequestError
from handlers.core.images import ImageLimits, channels_last, decode_image, group_by_size, resize_pixels
from handlers.core.options import PNG_COMPRESSION_HELP, Option, choice, integer, number
from handlers.pose_blazepose.schema import BlazePoseDetectorSpec
from handlers.pose_blazepose.steps import NOBODY_LOG_ODDS, detect_bodies
from handlers.segmentation.schema import SegmenterSpec

BACKGROUND_WORDS = ("transparent", "blur")
_HEX_COLOUR = re.compile(r"#?([0-9a-fA-F]{6})")


def _background(name: str, value: Any) -> str | tuple[int, int, int] | bytes:
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
    "background": Option(
        _background,
        None,
        "transparent (PNG cut-out), blur, #rrggbb, or an image (base64, or a multipart file) resized to cover the photo; answers a picture",
    ),
    "feather": number(
        2.0, 0.0, 50.0, "softens the mask edge over about this many pixels (Gaussian sigma); 0 for a hard edge"
    ),
    "threshold": number(0.5, 0.01, 0.99, "person probability above which a pixel belongs to the mask"),
    "format": choice(
        None,
        ("json", "png", "webp", "jpeg"),
        "json (mask as COCO RLE; default without background); a picture: png (default for transparent), "
        "webp (lossless, smaller, slower to write) or jpeg (default otherwise)",
    ),
    "quality": integer(90, 1, 100, "JPEG quality"),
    "png_compression": integer(1, 0, 9, PNG_COMPRESSION_HELP),
}


def check_segmenter_options(options: Mapping[str, Any], limits: ImageLimits) -> Tensor | None:
    """Validate the option combination; decode a background image (``uint8[3, H, W]``) if one was sent."""
    background, image_format = options["background"], options["format"]
    if background is None and image_format not in (None, "json"):
        raise RequestError(
            f"format={image_format} answers a picture: say which background (transparent, blur, #rrggbb or an image)",
            "InvalidOption",
        )
    if background is not None and image_format == "json":
        raise RequestError("a background answers a picture; format must be png, webp or jpeg", "InvalidOption")
    if background == "transparent" and image_format == "jpeg":
        raise RequestError("background=transparent needs format=png or webp: JPEG has no transparency", "InvalidOption")
    if not isinstance(background, bytes):
        return None
    try:
        return decode_image(background, limits)
    except RequestError as error:
        raise type(error)(f"the background image: {error.message}", error.kind) from None


def model_inputs(
    images: list[Tensor], sizes: list[tuple[int, int]], spec: SegmenterSpec
) -> list[tuple[list[int], Tensor]]:
    """Photos of ``sizes`` resized to the model's size for each, grouped by that size: ``(members, uint8[n, 3, h, w])``.

    ``images[i]`` may be decoded smaller than ``sizes[i]``, never smaller than the model's
    size (``SegmenterSpec.coarsest_scale``).
    """
    return [
        (members, torch.stack([resize_pixels(images[i], model_size) for i in members]))
        for model_size, members in group_by_size([spec.model_size(*size) for size in sizes]).items()
    ]


def person_log_odds(model: torch.nn.Module, groups: list[tuple[list[int], Tensor]], count: int) -> list[Tensor]:
    """Each photo's person log-odds ``[h, w]`` at its model size, from ``model_inputs``' groups: one model call each."""
    maps: list[Tensor | None] = [None] * count
    for members, batch in groups:
        for i, odds in zip(members, model(batch)):
            maps[i] = odds[0]
    return maps


def gate_people(
    log_odds: list[Tensor],
    detector: torch.nn.Module,
    images: list[Tensor],
    sizes: list[tuple[int, int]],
    scales: list[int],
    spec: BlazePoseDetectorSpec,
) -> list[Tensor]:
    """Each photo's person log-odds where the person detector (BlazePose's, one call for the batch) finds someone in
    it, else nobody's: for segmenters that mark a photo's main subject, whatever it is."""
    found = detect_bodies(detector, images, sizes, scales, spec)
    return [
        odds if len(scores) else torch.full_like(odds, NOBODY_LOG_ODDS) for odds, (_, scores) in zip(log_odds, found)
    ]


def logit(probability: float) -> float:
    """The log-odds of ``probability``: thresholding log-odds there thresholds the probability."""
    return float(np.log(probability / (1 - probability)))


def person_mask(log_odds: Tensor, size: tuple[int, int], threshold: float) -> Tensor:
    """``bool[H, W]`` at image ``size``: the log-odds resized bilinearly, then above the threshold's."""
    return F.resize(log_odds[None], list(size), antialias=False)[0] > logit(threshold)


def mask_rle(log_odds: Tensor, size: tuple[int, int], threshold: float) -> dict[str, Any]:
    """``person_mask`` as COCO RLE (pycocotools).

    The log-odds are resized transposed, so that the mask comes out column by column, the
    order RLE counts in, with no copy; on the CPU by OpenCV (4x faster than torch here, and
    its transpose 2x faster than numpy's copy: 0.19 against 0.37 ms for a 924x520 map).
    """
    height, width = size
    if log_odds.device.type == "cpu":
        transposed = cv2.transpose(np.ascontiguousarray(log_odds.numpy()))
        upsampled = cv2.resize(transposed, (height, width), interpolation=cv2.INTER_LINEAR)
        columns = (upsampled > logit(threshold)).view(np.uint8)
    else:
        columns = person_mask(log_odds.T, (width, height), threshold).to(torch.uint8).cpu().numpy()
    return coco_mask.encode(columns.T)  # a column-major [H, W] view


def alpha_matte(log_odds: Tensor, size: tuple[int, int], threshold: float, feather: float) -> Tensor:
    """``uint8[H, W]`` alpha at image ``size``: ``person_mask`` with its edge softened by a Gaussian of sigma
    ``feather`` pixels.

    On the CPU by OpenCV in uint8 throughout (7x less work than float tensors here);
    elsewhere by torch on the device.
    """
    height, width = size
    if log_odds.device.type != "cpu":
        mask = person_mask(log_odds, size, threshold).float()
        soft = gaussian_blur_on_device(mask[None], feather)[0] if feather > 0 else mask
        return (soft * 255).round().to(torch.uint8)
    upsampled = cv2.resize(np.ascontiguousarray(log_odds.numpy()), (width, height), interpolation=cv2.INTER_LINEAR)
    alpha = (upsampled > logit(threshold)).view(np.uint8) * np.uint8(255)
    if feather > 0:
        kernel = 2 * int(np.ceil(3 * feather)) + 1
        alpha = cv2.GaussianBlur(alpha, (kernel, kernel), feather, borderType=cv2.BORDER_REPLICATE)
    return torch.from_numpy(alpha)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """``float[C, H, W]`` blurred by a Gaussian of ``sigma`` pixels, the edge pixels repeated outside: two 1-D passes.

    On the CPU by OpenCV (15x faster here than torch's convolutions), elsewhere by torch.
    """
    if image.device.type != "cpu":
        return gaussian_blur_on_device(image, sigma)
    radius = int(np.ceil(3 * sigma))
    channels_last = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    blurred = cv2.GaussianBlur(channels_last, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REPLICATE)
    return torch.from_numpy(blurred.reshape(channels_last.shape)).permute(2, 0, 1)


def gaussian_blur_on_device(image: Tensor, sigma: float) -> Tensor:
    """``gaussian_blur`` by torch on the image's device: two depthwise 1-D convolutions."""
    radius = int(np.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    channels = image.shape[0]
    # Repeating the edge works for any photo size (reflecting needs sides longer than the radius).
    padded = torch.nn.functional.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    rows = torch.nn.functional.conv2d(padded, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return torch.nn.functional.conv2d(rows, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)[0]


def mask_coverage(rle: dict[str, Any]) -> float:
    """The share of the photo a COCO RLE mask covers."""
    height, width = (int(v) for v in rle["size"])
    return round(float(coco_mask.area(rle)) / (height * width), 6)


def mask_answer(rle: dict[str, Any], header: Mapping[str, Any]) -> Answer:
    """JSON: the mask as COCO RLE (counts as text) and the share of the photo it covers."""
    height, width = (int(v) for v in rle["size"])
    return json_answer(
        {
            **header,
            "image": {"width": width, "height": height},
            "mask": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
            "coverage": mask_coverage(rle),
        }
    )


def composite(image: Tensor, alpha: Tensor, background: str | tuple[int, int, int] | Tensor) -> Tensor:
    """The photo over ``background`` (transparent, blur, an RGB colour or an image) by ``uint8[H, W]`` ``alpha``.

    ``uint8[4, H, W]`` (RGBA) for transparent, else ``uint8[3, H, W]``.
    """
    if isinstance(background, str) and background == "transparent":
        return cut_out(image, alpha)
    alpha = alpha.to(image.device).float() / 255
    height, width = image.shape[-2:]
    photo = image.float()
    if isinstance(background, Tensor):
        behind = _cover(background.to(image.device), height, width).float()
    elif background == "blur":
        behind = gaussian_blur(photo, max(height, width) / 100)
    else:
        behind = (
            torch.tensor(background, dtype=torch.float32, device=image.device).view(3, 1, 1).expand(3, height, width)
        )
    return (alpha * photo + (1 - alpha) * behind).round().clamp(0, 255).to(torch.uint8)


def cut_out(image: Tensor, alpha: Tensor) -> Tensor:
    """RGBA ``uint8[4, H, W]``: the photo with ``alpha``, its RGB zeroed where alpha is 0.

    Zeroed, the background is gone from the answer rather than hidden behind alpha 0, and
    fpng writes it faster and smaller (docs/benchmarks.md, "Cut-outs in fewer passes"). On
    the CPU one masked copy of the decoder's RGBX buffer makes it, in the channels-last
    layout the encoders read (no interleaving left to do).
    """
    image = image[:3]
    if image.device.type != "cpu":
        return cut_out_on_device(image, alpha.to(image.device))
    pixels, visible = channels_last(image), alpha.cpu().numpy()
    if pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2RGBA)
    rgba = cv2.bitwise_and(pixels, pixels, mask=cv2.compare(visible, 0, cv2.CMP_GT))
    rgba[:, :, 3] = visible
    return torch.from_numpy(rgba).permute(2, 0, 1)


def cut_out_on_device(image: Tensor, alpha: Tensor) -> Tensor:
    """``cut_out`` by torch on the image's device."""
    return torch.cat([image * (alpha > 0), alpha[None]])


def picture_answer(picture: Tensor, options: Mapping[str, Any]) -> Answer:
    """The composited picture, PNG for a transparent cut-out unless said otherwise."""
    transparent = isinstance(options["background"], str) and options["background"] == "transparent"
    image_format = options["format"] or ("png" if transparent else "jpeg")
    return image_answer(picture, image_format, options["quality"], options["png_compression"])


def _cover(image: Tensor, height: int, width: int) -> Tensor:
    """Resize to cover ``height`` x ``width`` keeping the aspect ratio, then crop the centre."""
    scale = max(height / image.shape[-2], width / image.shape[-1])
    size = [max(height, round(image.shape[-2] * scale)), max(width, round(image.shape[-1] * scale))]
    return F.center_crop(F.resize(image, size, antialias=True), [height, width])
