"""The one photo set of load tests and benchmarks: scikit-image's real photos of people (the astronaut, the
cameraman), cropped to each size's aspect ratio, resized and encoded (JPEG quality 90, or PNG)."""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage import data

# Small, VGA and HD-ish: a server sees all of them, and different sizes exercise mixed batches (Locust, bench, soak).
SIZES = ((320, 240), (640, 480), (1280, 960))
SOURCES = {"astronaut": data.astronaut, "camera": data.camera}


@dataclass(frozen=True)
class Photo:
    """A photo as it is sent: its name, bytes, size and content type."""

    name: str
    data: bytes
    width: int
    height: int
    content_type: str = "image/jpeg"

    @property
    def label(self) -> str:
        """E.g. ``640x480 JPEG``."""
        return f"{self.width}x{self.height} {self.content_type.removeprefix('image/').upper()}"


def encoded(pixels: np.ndarray, width: int, height: int, image_format: str = "JPEG") -> bytes:
    """``pixels`` (H, W[, 3] uint8) cropped about its centre to width:height, resized to width x height, encoded."""
    rows, columns = pixels.shape[:2]
    if columns * height > rows * width:  # wider than asked: keep the middle columns
        keep = round(rows * width / height)
        pixels = pixels[:, (columns - keep) // 2 :][:, :keep]
    else:
        keep = round(columns * height / width)
        pixels = pixels[(rows - keep) // 2 :][:keep]
    buffer = io.BytesIO()
    image = Image.fromarray(pixels).convert("RGB").resize((width, height), Image.BICUBIC)
    image.save(buffer, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def photo(source: str, width: int, height: int, image_format: str = "JPEG") -> Photo:
    """One source photo at one size and format."""
    body = encoded(SOURCES[source](), width, height, image_format)
    return Photo(f"{source}_{width}x{height}", body, width, height, f"image/{image_format.lower()}")


def photo_pool(sizes: tuple[tuple[int, int], ...] = SIZES) -> list[Photo]:
    """Every source photo at every size, as JPEG."""
    return [photo(source, width, height) for source in SOURCES for width, height in sizes]
