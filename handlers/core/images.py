"""Image decoding with size guards applied before any pixel is read, at the smallest scale a model needs; encoding.

A request's image is judged from its header first (format, size, EXIF orientation),
then decoded straight to RGB: JPEGs by libjpeg-turbo through simplejpeg, the other
formats (and any JPEG simplejpeg refuses) by OpenCV. JPEGs may be decoded at 1/2, 1/4
or 1/8 of their size: libjpeg then computes a reduced inverse DCT per 8x8 block, which
costs a fraction of a full decode and averages each s x s block. Only scales that divide
both sides are used, so decoded pixel (i, j) covers exactly the image's pixels
[s*j, s*(j+1)) x [s*i, s*(i+1)) and a point's image coordinates are ``s`` times its
decoded ones, also after EXIF rotation.

A JPEG is decoded into four bytes per pixel (RGB and a padding byte: libjpeg writes it at
no cost) and answered as an RGB view of that buffer; ``channels_last`` hands OpenCV the
four-channel array, whose bilinear warps and resizes have SIMD code that three channels
lack.
"""

import io
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import fpng
import numpy as np
import simplejpeg
import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode
from torchvision.transforms.v2 import functional as F

from handlers.core.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from handlers.core.schema import ImageLimits

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
DCT_SCALES = (8, 4, 2)
_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR_RGB,
    2: (cv2.IMREAD_REDUCED_COLOR_2 & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB,
    4: (cv2.IMREAD_REDUCED_COLOR_4 & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB,
    8: (cv2.IMREAD_REDUCED_COLOR_8 & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB,
}
_EXIF_ORIENTATION = 0x0112

# Our own pixel limit (below) is checked from the header before decoding; Pillow's
# global guard would otherwise refuse configured limits above its default.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: format, stored size and EXIF orientation (1-8, 1 = as stored)."""

    format: str
    stored_height: int
    stored_width: int
    orientation: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) as a viewer sees the image, after its EXIF orientation."""
        turned = self.orientation in (5, 6, 7, 8)
        return (self.stored_width, self.stored_height) if turned else (self.stored_height, self.stored_width)


def read_header(data: bytes, limits: ImageLimits) -> ImageHeader:
    """Check an upload against ``limits`` and read its header, without decoding a pixel."""
    if not data:
        raise RequestError("the image is empty", "EmptyRequest")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes",
            "ImageTooLarge",
        )
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            # Multi-picture JPEGs (MPO, from some cameras) are JPEGs; decoders read the first picture.
            image_format, (width, height) = "JPEG" if image.format == "MPO" else image.format, image.size
            orientation = _orientation(image.info.get("exif"))
    except UnidentifiedImageError:
        raise RequestError(
            "the data is not an image (no JPEG, PNG, WebP or BMP header found)", "InvalidImage"
        ) from None
    except Exception as err:  # Pillow raises many types on corrupt headers
        raise RequestError(f"the image header cannot be read: {err}", "InvalidImage") from None
    if image_format not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(
            f"{image_format} images are not supported; send one of " + ", ".join(SUPPORTED_FORMATS),
            "UnsupportedImageType",
        )
    if width < 1 or height < 1:
        raise RequestError(f"the image has no pixels ({width}x{height})", "InvalidImage")
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels} pixels",
            "ImageTooLarge",
        )
    return ImageHeader(image_format, height, width, orientation)


def _orientation(exif: bytes | None) -> int:
    """The EXIF orientation tag in raw EXIF bytes (1 when absent or unreadable).

    Read from the header's bytes rather than ``Image.getexif``, which decodes a whole PNG
    to look for EXIF behind the pixels.
    """
    if not exif:
        return 1
    try:
        tags = Image.Exif()
        tags.load(exif)
        orientation = int(tags.get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block leaves the image as stored
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def dct_scale(header: ImageHeader, most: float) -> int:
    """The largest of 8, 4, 2 that is at most ``most`` and divides both sides of a JPEG; else 1."""
    if header.format != "JPEG":
        return 1
    for scale in DCT_SCALES:
        if scale <= most and header.stored_height % scale == 0 and header.stored_width % scale == 0:
            return scale
    return 1


def decode_pixels(data: bytes, header: ImageHeader, scale: int = 1) -> Tensor:
    """Decode to RGB ``uint8[3, H / scale, W / scale]`` as a viewer sees it (``scale`` from ``dct_scale``).

    The tensor is a channels-first view of the decoder's channels-last array (a JPEG's has
    a fourth, padding channel: see ``channels_last``).
    """
    expected = (header.stored_height // scale, header.stored_width // scale)
    pixels = _decode_jpeg_rgbx(data, expected) if header.format == "JPEG" else None
    if pixels is None:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None or pixels.shape[:2] != expected:
        raise RequestError(f"the {header.format} image cannot be decoded (corrupt or truncated data)", "InvalidImage")
    return orient(torch.from_numpy(pixels).permute(2, 0, 1)[:3], header.orientation)


def _decode_jpeg_rgbx(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """A JPEG as ``uint8[h, w, 4]`` RGBX at ``size`` (a DCT scale of its own), or None for OpenCV to try.

    simplejpeg (libjpeg-turbo's TurboJPEG) decoded 13-17 % faster than OpenCV at full size
    here, 3-9 % at 1/2 and 1/4, the same at 1/8, with identical pixels. Strict: data that
    libjpeg can only partly recover goes to OpenCV, which accepted and refused it before.
    """
    try:
        pixels = simplejpeg.decode_jpeg(data, "RGBX", min_height=size[0], min_width=size[1], strict=True)
    except ValueError:
        return None
    return pixels if pixels.shape[:2] == size else None


def channels_last(pixels: Tensor) -> np.ndarray:
    """CPU pixels ``[C, H, W]`` as the channels-last array OpenCV reads: the decoder's RGBX buffer behind an RGB view,
    else a copy if needed.

    Operations that treat channels alike (warps, resizes) run on all four channels of an
    RGBX buffer, whose fourth is padding: OpenCV's bilinear sampling has SIMD code for 4
    channels and not for 3 (a 256x192 crop: 0.10 against 0.27 ms here). Take the first
    ``C`` channels of the result.
    """
    height, width = pixels.shape[-2:]
    storage_elements = pixels.untyped_storage().nbytes() // pixels.element_size()
    padded = pixels.stride() == (1, 4 * width, 4) and pixels.storage_offset() + 4 * height * width <= storage_elements
    if pixels.shape[0] == 3 and padded:
        return torch.as_strided(pixels, (height, width, 4), (4 * width, 4, 1)).numpy()
    return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


def decode_jpegs_on(
    device: torch.device, datas: Sequence[bytes], headers: Sequence[ImageHeader]
) -> list[Tensor | None]:
    """Decode JPEGs in one batched call on ``device`` (nvJPEG on CUDA) to RGB ``uint8[3, H, W]``, EXIF-upright.

    Whole-size: nvJPEG has no DCT scaling, so models resize on the device instead. ``None``
    stands for an image to decode on the CPU: the batched call fails as a whole when one
    image is corrupt, and then every image falls back.
    """
    try:
        decoded = torchvision.io.decode_jpeg(
            [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas],
            mode=ImageReadMode.RGB,
            device=device,
        )
    except RuntimeError:
        return [None] * len(datas)
    return [
        orient(pixels, header.orientation)
        if tuple(pixels.shape) == (3, header.stored_height, header.stored_width)
        else None
        for pixels, header in zip(decoded, headers)
    ]


def orient(pixels: Tensor, orientation: int) -> Tensor:
    """Turn ``[C, H, W]`` pixels stored with EXIF ``orientation`` the way a viewer sees them."""
    if orientation in (5, 6, 7, 8):
        pixels = pixels.transpose(-1, -2)
    flips = {2: (-1,), 3: (-1, -2), 4: (-2,), 6: (-1,), 7: (-1, -2), 8: (-2,)}.get(orientation)
    return pixels.flip(flips) if flips else pixels


def decode_image(data: bytes, limits: ImageLimits) -> Tensor:
    """Decode JPEG, PNG, WebP or BMP bytes in full to an RGB ``Tensor[3, H, W]`` (uint8), EXIF-upright."""
    return decode_pixels(data, read_header(data, limits))


def png_settings(compression: int) -> list[int]:
    """OpenCV's PNG settings for zlib level ``compression`` (0, 2-9; level 1 is fpng's, ``encode_image``).

    0 stores the pixels (no filter); 2-9 use zlib's level with libpng's adaptive filters (smaller, slower).
    """
    if compression == 0:
        return [cv2.IMWRITE_PNG_COMPRESSION, 0, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    return [cv2.IMWRITE_PNG_COMPRESSION, compression]


def encode_image(pixels: Tensor, image_format: str, quality: int = 90, png_compression: int = 1) -> bytes:
    """Encode RGB ``uint8[3, H, W]`` (or RGBA ``[4, H, W]``) pixels, on any device, as JPEG, PNG or WebP.

    PNG at ``png_compression`` 1 (the default) is fpng's: exact, and 6-15x faster than OpenCV's fastest zlib setting
    (level 1, "sub" filter, Huffman coding alone) at about its size (docs/benchmarks.md, "Picture encoders"). The
    other levels are OpenCV's (``png_settings``). WebP is lossless and exact (``exact`` keeps any colour under alpha
    0), at libwebp's effort 1 of 6 (method 1, quality 0): 25-55 % smaller than fpng's PNG on photos, at 17x its time
    in-process and 28x served; effort 0 is 5x fpng's time and within 15 % of its size, so not worth offering.
    """
    if image_format == "webp" or (image_format == "png" and png_compression == 1):
        rgb = interleaved(pixels, (0, 1, 2, 3)[: pixels.shape[0]])  # fpng and Pillow take RGB(A)
        if image_format == "png":
            return fpng.from_ndarray(rgb)
        encoded = io.BytesIO()
        Image.fromarray(rgb).save(encoded, "WEBP", lossless=True, quality=0, method=1, exact=True)
        return encoded.getvalue()
    bgr = interleaved(pixels, (2, 1, 0, 3)[: pixels.shape[0]])
    if image_format == "jpeg":
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, encoded = cv2.imencode(".png", bgr, png_settings(png_compression))
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {image_format} image")
    return encoded.tobytes()


def interleaved(pixels: Tensor, order: tuple[int, ...]) -> np.ndarray:
    """``uint8[C, H, W]`` pixels, on any device, as a contiguous ``[H, W, C]`` array with the channels in ``order``.

    On a GPU one stacking pass makes that array before the copy; on the CPU, channels-last pixels (drawn pictures)
    are used as they are or take one colour conversion, and channels-first ones (model outputs, composites) are
    interleaved by ``cv2.merge``, 4-6x faster here than ``torch.stack`` (1080p: 0.47 against 2.0 ms).
    """
    if pixels.device.type != "cpu":
        return torch.stack([pixels[channel] for channel in order], dim=-1).cpu().numpy()
    if pixels.permute(1, 2, 0).is_contiguous():
        as_stored = pixels.permute(1, 2, 0).numpy()
        if order == tuple(range(len(order))):
            return as_stored
        return cv2.cvtColor(as_stored, cv2.COLOR_RGB2BGR if len(order) == 3 else cv2.COLOR_RGBA2BGRA)
    return cv2.merge([pixels[channel].numpy() for channel in order])


def normalize(pixels: Tensor, mean: Sequence[float], std: Sequence[float], channels: str = "rgb") -> Tensor:
    """``Tensor[N, 3, H, W]`` RGB values in 0..255 (any dtype) to a float model input: channel order, then (x/255 -
    mean) / std.

    ``mean`` and ``std`` are in the model's channel order. CPU uint8 crops laid out
    channels-last (as OpenCV cuts them) take one OpenCV pass (``blobFromImagesWithParams``,
    4x faster here than the equivalent torch ops); others, torch ops on their device.
    """
    if channels not in ("rgb", "bgr"):
        raise ValueError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    channels_last = pixels.shape[0] > 0 and pixels.permute(0, 2, 3, 1).is_contiguous()
    if pixels.device.type == "cpu" and pixels.dtype == torch.uint8 and channels_last:
        params = cv2.dnn.Image2BlobParams()
        params.scalefactor = (*(1 / (255 * s) for s in std), 0.0)
        params.mean = (*(255 * m for m in mean), 0.0)  # in the output's channel order
        params.swapRB = channels == "bgr"
        params.ddepth = cv2.CV_32F
        params.size = (int(pixels.shape[3]), int(pixels.shape[2]))
        return torch.from_numpy(cv2.dnn.blobFromImagesWithParams(list(pixels.permute(0, 2, 3, 1).numpy()), params))
    if channels == "bgr":
        pixels = pixels.flip(1)
    inverse_std = 1 / (torch.tensor(std, device=pixels.device) * 255)
    shift = -torch.tensor(mean, device=pixels.device) / torch.tensor(std, device=pixels.device)
    return torch.addcmul(shift.view(1, -1, 1, 1), pixels.float(), inverse_std.view(1, -1, 1, 1))


def resize_pixels(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """RGB ``uint8[3, h, w]`` pixels at ``size`` (height, width), antialiased when shrunk.

    On the CPU, OpenCV on the channels-last array, answering a channels-first view again:
    halved by area averaging while both sides are even and 2x or more too large, then
    area-averaged if a side is still 2x too large, else bilinear, which at under 2x already
    reads every source pixel. OpenCV averages exact halves with SIMD code and other ratios
    10-30x slower (1080p to 924x520: 0.6 + 1.0 ms halved then bilinear, against 17 ms at
    the uneven ratio); an odd side stops the halving, so the geometry stays exact.
    Elsewhere torchvision's antialiased bilinear resize.
    """
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    if pixels.device.type != "cpu":
        return F.resize(pixels, list(size), antialias=True)
    resized = channels_last(pixels)
    while all(side % 2 == 0 and side >= 2 * target for side, target in zip(resized.shape[:2], size)):
        resized = cv2.resize(resized, (resized.shape[1] // 2, resized.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if resized.shape[:2] != tuple(size):
        area = resized.shape[0] >= 2 * size[0] or resized.shape[1] >= 2 * size[1]
        resized = cv2.resize(resized, (size[1], size[0]), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)
    return torch.from_numpy(resized.reshape(size[0], size[1], -1)).permute(2, 0, 1)[: pixels.shape[0]]


def group_by_size(sizes: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """Positions of equal sizes together, in first-seen order: one batched call per distinct size."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for position, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(position)
    return groups
