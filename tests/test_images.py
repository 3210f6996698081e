"""Image decoding: formats, colour order, orientation, and the guards that run before pixels are read."""

import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from humanserve_core.errors import RequestError
from humanserve_core.images import ImageLimits, decode_image, encode_image

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=4_000_000)


def encoded(array: np.ndarray, image_format: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **save_args)
    return buffer.getvalue()


def pixel_bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def colour_blocks() -> np.ndarray:
    """A 40x60 RGB image: red left third, green middle, blue right."""
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, :20, 0] = 255
    image[:, 20:40, 1] = 255
    image[:, 40:, 2] = 255
    return image


@pytest.mark.parametrize(("image_format", "tolerance"), [("PNG", 0), ("BMP", 0), ("WEBP", 0), ("JPEG", 12)])
def test_formats_decode_to_rgb_chw(image_format, tolerance):
    blocks = colour_blocks()
    save_args = {"lossless": True} if image_format == "WEBP" else {}
    decoded = decode_image(encoded(blocks, image_format, **save_args), LIMITS)
    assert decoded.shape == (3, 40, 60) and decoded.dtype == torch.uint8
    centre_columns = decoded[:, 20, [10, 30, 50]].T.int().numpy()  # red, green, blue block centres
    assert np.abs(centre_columns - np.diag([255, 255, 255])).max() <= tolerance


def test_grey_and_rgba_images_become_rgb():
    grey = decode_image(encoded(np.full((5, 7), 100, np.uint8), "PNG"), LIMITS)
    rgba = decode_image(encoded(np.full((5, 7, 4), 50, np.uint8), "PNG"), LIMITS)
    assert grey.shape == rgba.shape == (3, 5, 7)
    assert (grey == 100).all() and (rgba == 50).all()


def test_exif_orientation_is_applied():
    blocks = colour_blocks()  # 40 rows x 60 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    decoded = decode_image(encoded(blocks, "JPEG", exif=exif.tobytes()), LIMITS)
    assert decoded.shape == (3, 60, 40)
    assert decoded[0, 5, 20] > 200  # red, left in storage, is now on top


@pytest.mark.parametrize(
    ("data", "code", "kind"),
    [
        (b"", 400, "EmptyRequest"),
        (b"hello, I am not an image at all", 400, "InvalidImage"),
        (encoded(colour_blocks(), "JPEG")[:300], 400, "InvalidImage"),
        (encoded(colour_blocks(), "PNG")[:-40], 400, "InvalidImage"),
        (encoded(colour_blocks(), "GIF"), 415, "UnsupportedImageType"),
        (encoded(colour_blocks(), "TIFF"), 415, "UnsupportedImageType"),
        (pixel_bomb_png(), 413, "ImageTooLarge"),
        (pixel_bomb_png(0, 10), 400, "InvalidImage"),
        (b"\xff\xd8\xff" + b"\0" * 6_000_000, 413, "ImageTooLarge"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "gif", "tiff", "pixel-bomb", "zero-width", "too-many-bytes"],
)
def test_unusable_images_get_the_right_code(data, code, kind):
    with pytest.raises(RequestError) as caught:
        decode_image(data, LIMITS)
    assert (caught.value.code, caught.value.kind) == (code, kind)


def test_pixel_bomb_is_refused_before_decoding():
    bomb = pixel_bomb_png()
    started = time.perf_counter()
    with pytest.raises(RequestError, match="10000000000 pixels"):
        decode_image(bomb, LIMITS)
    assert len(bomb) < 200
    assert time.perf_counter() - started < 1.0  # 10^10 pixels would take minutes and 30 GB to decode


def test_encode_round_trips_through_decode():
    blocks = colour_blocks()
    assert (decode_image(encode_image(blocks, "png"), LIMITS).permute(1, 2, 0).numpy() == blocks).all()
    rgba = np.dstack([blocks, np.full((40, 60), 128, np.uint8)])
    with Image.open(io.BytesIO(encode_image(rgba, "png"))) as image:
        assert image.mode == "RGBA" and np.array(image)[0, 0].tolist() == [255, 0, 0, 128]
