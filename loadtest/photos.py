"""Real photos of people for load tests: scikit-image's astronaut and cameraman, as JPEGs of several sizes."""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage import data

# Small, VGA and HD-ish: a server sees all of them, and different sizes exercise mixed batches.
SIZES = ((320, 240), (640, 480), (1280, 960))


@dataclass(frozen=True)
class Photo:
    name: str
    jpeg: bytes
    width: int
    height: int


def jpeg(pixels: np.ndarray, width: int, height: int, quality: int = 90) -> bytes:
    """``pixels`` (H, W[, 3] uint8) resized to width x height, as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").resize((width, height), Image.BILINEAR).save(
        buffer, format="JPEG", quality=quality
    )
    return buffer.getvalue()


def photo_pool(sizes: tuple[tuple[int, int], ...] = SIZES) -> list[Photo]:
    """Every source photo at every size."""
    sources = {"astronaut": data.astronaut(), "camera": data.camera()}
    return [
        Photo(f"{name}_{width}x{height}", jpeg(pixels, width, height), width, height)
        for name, pixels in sources.items()
        for width, height in sizes
    ]
