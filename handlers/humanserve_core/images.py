"""Image decoding with size guards applied before any pixel is read, and image encoding."""

import io
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import PayloadTooLarge, RequestError, UnsupportedMediaType

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")

# Our own pixel limit (below) is checked from the header before decoding; Pillow's
# global guard would otherwise refuse configured limits above its default.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    """Largest accepted upload, in encoded bytes and in decoded pixels."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ImageLimits":
        """Read ``max_image_bytes`` / ``max_image_pixels`` from a handler config section."""
        return cls(
            max_bytes=int(config.get("max_image_bytes", cls.max_bytes)),
            max_pixels=int(config.get("max_image_pixels", cls.max_pixels)),
        )


def decode_image(data: bytes, limits: ImageLimits) -> torch.Tensor:
    """Decode JPEG, PNG, WebP or BMP bytes to an RGB ``Tensor[3, H, W]`` (uint8), EXIF-upright."""
    if not data:
        raise RequestError("the image is empty", "EmptyRequest")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes",
            "ImageTooLarge",
        )
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise RequestError(
            "the data is not an image (no JPEG, PNG, WebP or BMP header found)", "InvalidImage"
        ) from None
    except Exception as err:  # Pillow raises many types on corrupt headers
        raise RequestError(f"the image header cannot be read: {err}", "InvalidImage") from None
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(
            f"{image.format} images are not supported; send one of "
            + ", ".join(SUPPORTED_FORMATS),
            "UnsupportedImageType",
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise RequestError(f"the image has no pixels ({width}x{height})", "InvalidImage")
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} pixels",
            "ImageTooLarge",
        )
    try:
        pixels = np.array(ImageOps.exif_transpose(image).convert("RGB"))  # writable copy
    except Exception as err:
        raise RequestError(
            f"the {image.format} image cannot be decoded: {err}", "InvalidImage"
        ) from None
    return torch.from_numpy(pixels).permute(2, 0, 1)


def encode_image(rgb: np.ndarray, image_format: str, quality: int = 90) -> bytes:
    """Encode an RGB ``uint8`` array ``[H, W, 3]`` (or RGBA ``[H, W, 4]``) as JPEG or PNG."""
    channels = rgb.shape[2]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA if channels == 4 else cv2.COLOR_RGB2BGR)
    if image_format == "jpeg":
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, encoded = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {image_format} image")
    return encoded.tobytes()


def normalize(pixels: Tensor, mean: Sequence[float], std: Sequence[float], channels: str = "rgb") -> Tensor:
    """``Tensor[N, 3, H, W]`` RGB values in 0..255 to a model's input: channel order, then (x/255 - mean) / std."""
    if channels == "bgr":
        pixels = pixels.flip(1)
    elif channels != "rgb":
        raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    mean_255 = pixels.new_tensor(mean).view(1, -1, 1, 1) * 255
    std_255 = pixels.new_tensor(std).view(1, -1, 1, 1) * 255
    return (pixels - mean_255) / std_255


def group_by_size(sizes: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """Positions of equal sizes together, in first-seen order: one batched call per distinct size."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for position, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(position)
    return groups
