"""Fuzzing the request path: corrupt images, odd request rows and odd option values (issue 11, item 7).

Every case must end in a ``RequestError`` with a 4xx code and its JSON body, or in a correct
answer: never another exception, a hang or a dead worker. The core properties run under
hypothesis, derandomized and without an example database, so every run tries the same cases;
the sample sent to a real TorchServe comes from the same mutation functions driven by a seeded
``random.Random``. The regression tests near the end reproduce what fuzzing found in handlers/.
"""

import base64
import faulthandler
import io
import json
import math
import random
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from handlers.core.errors import RequestError
from handlers.core.images import ImageHeader, ImageLimits, dct_scale, decode_jpegs_on, decode_pixels, read_header
from handlers.core.inputs import Item, read_request
from handlers.core.options import Option, parse_options
from handlers.detection.steps import DETECTION_OPTIONS
from handlers.pose.handler import PoseHandler
from handlers.pose.steps import MAX_BOXES, check_boxes_overlap
from handlers.segmentation.steps import BACKGROUND_WORDS, SEGMENTER_OPTIONS, check_segmenter_options
from handlers.style.steps import STYLE_OPTIONS, TRAINED_SIZE_OPTIONS
from handlers.vision.people import OUTPUT_OPTIONS, check_output_options
from tests.fixtures.serving import SMALL_JPEG, post, send_together
from tests.test_images import corner_marks

FUZZ = settings(
    max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000)
DECODE_SECONDS = 5.0  # one image's read and decode; the largest accepted here is 2000x2000
HANG_SECONDS = 120.0  # a step this slow is a hang: the run ends with every thread's traceback
USER_CODES = (400, 413, 415)

# ---------------------------------------------------------------- seed images


def saved(image: Image.Image, image_format: str, **save_args: Any) -> bytes:
    """``image`` encoded by Pillow."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **save_args)
    return buffer.getvalue()


def noise(height: int, width: int, channels: int = 3, dtype: type = np.uint8) -> Image.Image:
    """Random pixels, seeded by the size: every byte of the encoding carries image data."""
    top = np.iinfo(dtype).max
    values = np.random.default_rng(height * 1000 + width).integers(
        0, top, (height, width, channels), dtype=dtype, endpoint=True
    )
    return Image.fromarray(values[..., 0] if channels == 1 else values)


def exif(orientation: int) -> bytes:
    """Raw EXIF holding only an orientation tag."""
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags.tobytes()


SEEDS: dict[str, bytes] = {
    "jpeg-64x48": saved(Image.fromarray(corner_marks(48, 64)), "JPEG", quality=90),
    "jpeg-37x23-420": saved(noise(23, 37), "JPEG", quality=75),
    "jpeg-exif6-56x40": saved(Image.fromarray(corner_marks(40, 56)), "JPEG", exif=exif(6)),
    "jpeg-exif5-50x34": saved(Image.fromarray(corner_marks(34, 50)), "JPEG", exif=exif(5)),
    "jpeg-progressive-64x64": saved(noise(64, 64), "JPEG", progressive=True),
    "jpeg-grey-40x24": saved(noise(24, 40, 1), "JPEG"),
    "jpeg-cmyk-16x16": saved(noise(16, 16).convert("CMYK"), "JPEG"),
    "png-33x17": saved(noise(17, 33), "PNG"),
    "png-rgba-exif3-20x12": saved(noise(12, 20, 4), "PNG", exif=exif(3)),
    "png-palette-20x12": saved(noise(12, 20).quantize(16), "PNG"),
    "png-grey16-9x9": saved(noise(9, 9, 1, np.uint16), "PNG"),
    "webp-lossy-30x20": saved(noise(20, 30), "WEBP", quality=80),
    "webp-lossless-18x18": saved(noise(18, 18), "WEBP", lossless=True),
    "webp-lossless-exif6-24x16": saved(noise(16, 24), "WEBP", lossless=True, exif=exif(6)),
    "bmp-21x13": saved(noise(13, 21), "BMP"),
    "bmp-palette-16x10": saved(noise(10, 16).quantize(16), "BMP"),
}
SEED_NAMES = sorted(SEEDS)
JPEG_SEEDS = [name for name in SEED_NAMES if name.startswith("jpeg")]

# ---------------------------------------------------------------- mutations

Pick = Callable[[int, int], int]
"""An integer in [low, high]: drawn by hypothesis (``drawing``) or by ``random.Random.randint``."""


def drawing(data: st.DataObject) -> Pick:
    """A ``Pick`` that hypothesis draws, so failures shrink."""
    return lambda low, high: data.draw(st.integers(low, high))


def some_bytes(pick: Pick, count: int) -> bytes:
    """``count`` arbitrary bytes."""
    return bytes(pick(0, 255) for _ in range(count))


def truncate(data: bytes, pick: Pick) -> bytes:
    """Cut the data short anywhere."""
    return data[: pick(0, len(data) - 1)]


def flip_bits(data: bytes, pick: Pick) -> bytes:
    """Flip one to eight bits anywhere."""
    flipped = bytearray(data)
    for _ in range(pick(1, 8)):
        flipped[pick(0, len(flipped) - 1)] ^= 1 << pick(0, 7)
    return bytes(flipped)


def insert_bytes(data: bytes, pick: Pick) -> bytes:
    """Insert 1 to 32 arbitrary bytes anywhere."""
    at = pick(0, len(data))
    return data[:at] + some_bytes(pick, pick(1, 32)) + data[at:]


def delete_bytes(data: bytes, pick: Pick) -> bytes:
    """Delete 1 to 32 bytes anywhere."""
    at = pick(0, len(data) - 1)
    return data[:at] + data[at + pick(1, 32) :]


DECLARED_SIZES = (0, 1, 7, 9, 2000, 2001, 16383, 65535, 2**31 - 1, 2**32 - 1)  # 2000x2000 is the pixel limit
JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_declaring(data: bytes, height: int, width: int) -> bytes:
    """The JPEG with every frame header (SOFn) before the first scan declaring ``height`` x ``width``."""
    rewritten, at = bytearray(data), 2
    while at + 9 <= len(rewritten) and rewritten[at] == 0xFF and rewritten[at + 1] != 0xDA:
        if rewritten[at + 1] in JPEG_SOF_MARKERS:
            rewritten[at + 5 : at + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
        at += 2 + int.from_bytes(rewritten[at + 2 : at + 4], "big")
    return bytes(rewritten)


def png_declaring(data: bytes, height: int, width: int) -> bytes:
    """The PNG with its IHDR declaring ``height`` x ``width``, CRC recomputed so that readers believe it."""
    if data[12:16] != b"IHDR" or len(data) < 33:
        return data
    chunk = b"IHDR" + struct.pack(">II", width & 0xFFFFFFFF, height & 0xFFFFFFFF) + data[24:29]
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def webp_declaring(data: bytes, height: int, width: int) -> bytes:
    """The WebP with its first chunk (lossy VP8, lossless VP8L or extended VP8X) declaring ``height`` x ``width``."""
    rewritten, kind = bytearray(data), data[12:16]
    if kind == b"VP8 " and len(data) >= 30:
        rewritten[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    elif kind == b"VP8L" and len(data) >= 25:
        rest = int.from_bytes(data[21:25], "little") & 0xF0000000
        rewritten[21:25] = (((width - 1) & 0x3FFF) | ((height - 1) & 0x3FFF) << 14 | rest).to_bytes(4, "little")
    elif kind == b"VP8X" and len(data) >= 30:
        rewritten[24:30] = ((width - 1) & 0xFFFFFF).to_bytes(3, "little") + ((height - 1) & 0xFFFFFF).to_bytes(
            3, "little"
        )
    return bytes(rewritten)


def bmp_declaring(data: bytes, height: int, width: int) -> bytes:
    """The BMP with its info header declaring ``width`` x ``height`` (signed: past 2**31 reads as negative)."""
    if len(data) < 26:
        return data
    return data[:18] + struct.pack("<II", width & 0xFFFFFFFF, height & 0xFFFFFFFF) + data[26:]


SIZE_WRITERS = {b"\xff\xd8": jpeg_declaring, b"\x89PNG": png_declaring, b"RIFF": webp_declaring, b"BM": bmp_declaring}


def declare_size(data: bytes, pick: Pick) -> bytes:
    """Rewrite the header's height and width to small, odd, at-the-limit or huge values."""
    height, width = (DECLARED_SIZES[pick(0, len(DECLARED_SIZES) - 1)] for _ in range(2))
    for magic, rewrite in SIZE_WRITERS.items():
        if data.startswith(magic):
            return rewrite(data, height, width)
    return data


MAGICS = (
    b"\xff\xd8\xff\xe0",
    b"\x89PNG\r\n\x1a\n",
    b"RIFF\0\0\0\0WEBPVP8 ",
    b"BM",
    b"GIF89a",
    b"II*\0",
    b"\0\0\0\x0cjP  \r\n\x87\n",
    b"{",
    b"\0\0\0\0",
)


def wrong_magic(data: bytes, pick: Pick) -> bytes:
    """Overwrite the start with another format's signature (or JSON's brace, or zeros)."""
    magic = MAGICS[pick(0, len(MAGICS) - 1)]
    return magic + data[len(magic) :]


def random_bytes(data: bytes, pick: Pick) -> bytes:
    """Replace everything with up to 64 arbitrary bytes."""
    return some_bytes(pick, pick(0, 64))


MUTATIONS = (truncate, flip_bits, insert_bytes, delete_bytes, declare_size, wrong_magic, random_bytes)


def mutate(data: bytes, pick: Pick) -> bytes:
    """Zero to three mutations in a row (zero keeps the valid image)."""
    for _ in range(pick(0, 3)):
        if not data:
            break
        data = MUTATIONS[pick(0, len(MUTATIONS) - 1)](data, pick)
    return data


BASE64_VARIANTS = ("standard", "urlsafe", "wrapped", "spaced", "data-url", "unpadded", "bad-character", "cut")
VALID_BASE64 = BASE64_VARIANTS[:5]


def base64_variant(data: bytes, variant: str) -> str:
    """``data`` as base64 the way some client sends it: standard, URL-safe, wrapped, spaced, a data: URL, or broken."""
    standard = base64.b64encode(data).decode()
    return {
        "standard": standard,
        "urlsafe": base64.urlsafe_b64encode(data).decode(),
        "wrapped": "\r\n".join(standard[i : i + 76] for i in range(0, len(standard), 76)),
        "spaced": " ".join(standard[i : i + 4] for i in range(0, len(standard), 4)),
        "data-url": "data:image/jpeg;base64," + standard,
        "unpadded": standard.rstrip("="),
        "bad-character": standard[:4] + "%" + standard[4:],
        "cut": standard[: len(standard) // 2 + 1],
    }[variant]


# ---------------------------------------------------------------- checks


def check_error(error: RequestError) -> None:
    """A user's error: 400, 413 or 415, with the JSON body of the API contract."""
    assert error.code in USER_CODES, error
    assert json.loads(error.body()) == {"code": int(error.code), "type": error.kind, "message": error.message}
    assert error.kind and error.message


def check_pixels(pixels: torch.Tensor, header: ImageHeader, scale: int) -> None:
    """RGB ``uint8[3, H / scale, W / scale]`` of the size the header declares, as a viewer sees it."""
    height, width = header.size
    assert scale in (1, 2, 4, 8) and (scale == 1 or header.format == "JPEG")
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (3, height // scale, width // scale)


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Fail a step that takes over ``seconds``; one that hangs ends the whole run with every thread's traceback."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    started = time.perf_counter()
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert time.perf_counter() - started < seconds, f"took {time.perf_counter() - started:.1f} s"


def decode_or_refuse(data: bytes, most: float) -> None:
    """read_header, dct_scale and decode_pixels end in a 4xx error or in pixels of the declared size over the scale."""
    with time_bound(DECODE_SECONDS):
        try:
            header = read_header(data, LIMITS)
            scale = dct_scale(header, most)
            pixels = decode_pixels(data, header, scale)
        except RequestError as error:
            check_error(error)
            return
    check_pixels(pixels, header, scale)


def refused(call: Callable[[], Any]) -> RequestError:
    """The 4xx ``RequestError`` that ``call`` raises; another exception, or none, fails the test."""
    with pytest.raises(RequestError) as caught:
        call()
    check_error(caught.value)
    return caught.value


# ---------------------------------------------------------------- images


MOSTS = st.sampled_from((1.0, 2.0, 4.0, 8.0, 5.5, 100.0, 0.0, -1.0)) | st.floats()


@pytest.mark.parametrize("name", SEED_NAMES)
@pytest.mark.parametrize("most", [1, 2, 4, 8])
def test_seed_images_decode_upright_at_every_scale(name, most):
    data = SEEDS[name]
    header = read_header(data, LIMITS)
    with Image.open(io.BytesIO(data)) as image:
        assert header.size == ImageOps.exif_transpose(image).size[::-1]
    scale = dct_scale(header, most)
    check_pixels(decode_pixels(data, header, scale), header, scale)


@pytest.mark.parametrize(
    ("name", "orientation"),
    [("jpeg-exif6-56x40", 6), ("jpeg-exif5-50x34", 5), ("png-rgba-exif3-20x12", 3), ("webp-lossless-exif6-24x16", 6)],
)
def test_seed_orientations_are_read(name, orientation):
    assert read_header(SEEDS[name], LIMITS).orientation == orientation


@pytest.mark.parametrize(
    ("name", "code"),
    [("jpeg-64x48", 400), ("png-33x17", 413), ("webp-lossy-30x20", 413), ("bmp-21x13", 413), ("jpeg-37x23-420", 413)],
)
def test_declared_sizes_reach_the_pixel_guard(name, code):
    """The size writers work: a header rewritten to 0 rows, or to 2001x2000 pixels, is judged before decoding."""
    height, width = (0, 64) if code == 400 else (2001, 2000)
    rewritten = next(write for magic, write in SIZE_WRITERS.items() if SEEDS[name].startswith(magic))
    assert refused(lambda: read_header(rewritten(SEEDS[name], height, width), LIMITS)).code == code


@settings(FUZZ, max_examples=800)
@given(st.data(), MOSTS)
def test_mutated_images_decode_or_get_a_4xx(data, most):
    decode_or_refuse(mutate(SEEDS[data.draw(st.sampled_from(SEED_NAMES))], drawing(data)), most)


@FUZZ
@given(st.sampled_from(MAGICS) | st.just(b""), st.binary(max_size=512), MOSTS)
def test_random_bytes_behind_any_signature_get_a_4xx(magic, tail, most):
    decode_or_refuse(magic + tail, most)


@settings(FUZZ, max_examples=150)
@given(st.data())
@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvJPEG)")),
    ],
)
def test_batched_jpeg_decode_gives_each_image_its_pixels_or_none(device, data):
    """decode_jpegs_on over intact and corrupt JPEGs whose headers read: one entry each, None or pixels of its size."""
    pick = drawing(data)
    datas, headers, intact = [SEEDS[JPEG_SEEDS[0]]], [read_header(SEEDS[JPEG_SEEDS[0]], LIMITS)], [True]
    for _ in range(pick(0, 5)):
        seed = SEEDS[JPEG_SEEDS[pick(0, len(JPEG_SEEDS) - 1)]]
        mutated = mutate(seed, pick)
        try:
            header = read_header(mutated, LIMITS)
        except RequestError:
            continue
        if header.format == "JPEG":
            at = pick(0, len(datas))
            datas.insert(at, mutated)
            headers.insert(at, header)
            intact.insert(at, mutated == seed)
    with time_bound(DECODE_SECONDS * len(datas)):
        decoded = decode_jpegs_on(torch.device(device), datas, headers)
    assert len(decoded) == len(datas)
    for pixels, header in zip(decoded, headers):
        if pixels is not None:
            check_pixels(pixels.cpu(), header, 1)
    if all(intact):
        assert None not in decoded


# ---------------------------------------------------------------- request rows and options


@dataclass(frozen=True)
class Family:
    """A model family's options, its handler's checks before decoding, and what each parsed option may hold."""

    options: Mapping[str, Option]
    validate: Callable[[Item], None]
    allowed: Mapping[str, Callable[[Any], bool]]


def within(kind: type, low: float, high: float) -> Callable[[Any], bool]:
    """A value of exactly ``kind`` in [low, high]."""
    return lambda value: type(value) is kind and low <= value <= high


def among(*allowed: Any) -> Callable[[Any], bool]:
    """One of ``allowed``."""
    return lambda value: value in allowed


def optional(allowed: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """None (the default), or a value ``allowed`` takes."""
    return lambda value: value is None or allowed(value)


def is_flag(value: Any) -> bool:
    """True or False."""
    return type(value) is bool


def are_boxes(value: Any) -> bool:
    """At most ``MAX_BOXES`` boxes [x1, y1, x2, y2] of finite floats with x2 > x1 and y2 > y1."""
    return (
        isinstance(value, list)
        and len(value) <= MAX_BOXES
        and all(len(box) == 4 and all(type(c) is float and math.isfinite(c) for c in box) for box in value)
        and all(x2 > x1 and y2 > y1 for x1, y1, x2, y2 in value)
    )


def is_background(value: Any) -> bool:
    """A background word, image bytes, or an RGB colour."""
    colour = isinstance(value, tuple) and len(value) == 3 and all(type(c) is int and 0 <= c <= 255 for c in value)
    return value in BACKGROUND_WORDS or isinstance(value, bytes) or colour


OUTPUT_ALLOWED = {
    "score_threshold": optional(within(float, 0, 1)),
    "max_people": optional(within(int, 1, 1000)),
    "render": is_flag,
    "format": among(None, "json", "coco", "jpeg", "png"),
    "image_id": within(int, 0, 2**63 - 1),
}


def validate_pose(item: Item) -> None:
    """PoseHandler.validate."""
    check_output_options(item.options)
    check_boxes_overlap(item)


STYLE_ALLOWED = {
    "max_side": within(int, 16, 4096),
    "format": among("jpeg", "png"),
    "quality": within(int, 1, 100),
    "png_compression": within(int, 0, 9),
}
FAMILIES = {
    "pose": Family(
        PoseHandler.options, validate_pose, {**OUTPUT_ALLOWED, "boxes": optional(are_boxes), "flip_test": is_flag}
    ),
    "detection": Family(
        DETECTION_OPTIONS,
        lambda item: check_output_options(item.options),
        {**OUTPUT_ALLOWED, "score_threshold": within(float, 0, 1)},
    ),
    "segmenter": Family(
        SEGMENTER_OPTIONS,
        lambda item: check_segmenter_options(item.options, LIMITS),
        {
            "background": optional(is_background),
            "feather": within(float, 0, 50),
            "threshold": within(float, 0.01, 0.99),
            "format": among(None, "json", "png", "webp", "jpeg"),
            "quality": within(int, 1, 100),
            "png_compression": within(int, 0, 9),
        },
    ),
    "style": Family(STYLE_OPTIONS, lambda item: None, STYLE_ALLOWED),
    "trained_size": Family(TRAINED_SIZE_OPTIONS, lambda item: None, {**STYLE_ALLOWED, "keep_size": is_flag}),
}
OPTION_NAMES = sorted({name for family in FAMILIES.values() for name in family.options})

ODD_STRINGS = (
    "",
    " ",
    "nan",
    "NaN",
    "-inf",
    "Infinity",
    "1e309",
    "1e-400",
    "-0",
    "0x1A",
    "1_000",
    "\u0663",
    "2.5",
    "-3",
    "0.5",
    "1000",
    "4096",
    "16",
    "true",
    "Yes",
    "off",
    "maybe",
    "null",
    "[]",
    "[[0, 0, 10, 10]]",
    "[[0, 0, 10",
    "[[10, 10, 0, 0]]",
    "[[-1e30, -1e30, 1e30, 1e30]]",
    '{"a": 1}',
    "#00ff00",
    "ff8800",
    "#GGGGGG",
    "transparent",
    " BLUR ",
    "json",
    "COCO",
    "PNG",
    "jpeg",
    "gif",
    "\x00",
    "\ud800",
    "\u00e9\u00e9",
    "9" * 40,
    "A" * 70,
)
BOX_LISTS = st.lists(
    st.lists(st.floats() | st.integers() | st.sampled_from(ODD_STRINGS), min_size=3, max_size=5),
    max_size=MAX_BOXES + 2,
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(ODD_STRINGS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
# Values near the ends of each option's range.
EDGE_VALUES = {
    "boxes": (
        [[0, 0, 10, 10]],
        [[-1e7, -1e7, 1e7, 1e7]],
        [[-5, -5, 0.001, 0.001]],
        [[0, 0, 1e7, 1e7]] * MAX_BOXES,
        [[5, 5, 6, 6], [0, 0, 64, 48]],
        [[0, 0, 3.5e38, 3.5e38]],
    ),
    "flip_test": (True, "off"),
    "render": (True, "yes"),
    "score_threshold": (0, 1, "1e-300"),
    "max_people": (1, 1000, "1e3"),
    "format": ("png", "webp", "jpeg", "coco", "json"),
    "image_id": (0, 2**53, "12"),
    "background": ("transparent", "blur", "#000000", base64.b64encode(SEEDS["png-33x17"]).decode()),
    "feather": (0, 2.5, 50, 1e-300),
    "threshold": (0.01, 0.99),
    "quality": (1, 100),
    "max_side": (16, 4096),
    "png_compression": (0, 9, "1"),
}
OPTION_VALUES = (
    JSON_VALUES
    | BOX_LISTS
    | st.binary(max_size=24)
    | st.sampled_from([value for values in EDGE_VALUES.values() for value in values])
)


@FUZZ
@given(st.sampled_from(sorted(FAMILIES)), st.data())
def test_option_values_parse_to_typed_values_in_range_or_a_400(family_name, data):
    family = FAMILIES[family_name]
    names = st.sampled_from(sorted(family.options)) | st.sampled_from(("colour", "", "Render"))
    sent = data.draw(st.dictionaries(names, OPTION_VALUES, max_size=4))
    try:
        parsed = parse_options(sent, family.options)
    except RequestError as error:
        check_error(error)
        assert error.code == 400
        return
    assert parsed.keys() == family.options.keys()
    for name, value in parsed.items():
        assert family.allowed[name](value), f"{family_name} {name}: sent {sent.get(name)!r}, parsed {value!r}"
        if type(sent.get(name)) is int:
            assert value == sent[name]


def test_every_option_has_its_allowed_values_stated():
    for family in FAMILIES.values():
        assert family.allowed.keys() == family.options.keys()


def torchserve_value(content_type: str, raw: bytes) -> Any:
    """What TorchServe 0.12's worker hands a handler for a body or part: JSON parsed, text decoded, else bytes."""
    if content_type == "application/json":
        try:
            return json.loads(raw.decode("utf-8"))
        except Exception:  # TorchServe forwards the bytes whatever went wrong
            return bytearray(raw)
    if content_type.startswith("text"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return bytearray(raw)
    return bytearray(raw)


CONTENT_TYPES = (
    "",
    "image/jpeg",
    "image/png",
    "image/webp",
    "application/octet-stream",
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "multipart/form-data",
)
IMAGE_PART_TYPES = CONTENT_TYPES
SEED_IMAGES = st.sampled_from(SEED_NAMES).map(SEEDS.__getitem__)
BASE64_IMAGES = st.builds(base64_variant, SEED_IMAGES | st.binary(max_size=16), st.sampled_from(BASE64_VARIANTS))
JSON_OBJECTS = st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3) | st.builds(
    lambda image, options: {"image": image, **options},
    BASE64_IMAGES | JSON_VALUES,
    st.dictionaries(st.sampled_from(OPTION_NAMES), JSON_VALUES, max_size=3),
)
BODIES = (
    SEED_IMAGES
    | st.binary(max_size=64)
    | (JSON_OBJECTS | JSON_VALUES).map(lambda value: json.dumps(value).encode())
    | st.sampled_from((b"", b"{", b'  {"image": ', b"\xef\xbb\xbf{}", b'{"image": "\xff"}', b"\t{\n}", b"{}" * 3))
)
OPTION_HEADER_NAMES = (
    st.sampled_from(OPTION_NAMES).map(lambda name: "X-Option-" + name.replace("_", "-").title())
    | st.text(max_size=10).map(lambda name: "x-option-" + name)
    | st.sampled_from(("X-OPTION-RENDER", "x-option-", "X-Options-Render", "Accept", "X-Option-Flip_Test"))
)
OPTION_HEADERS = st.dictionaries(OPTION_HEADER_NAMES, st.sampled_from(ODD_STRINGS) | st.text(max_size=10), max_size=3)


@st.composite
def parts(draw: st.DrawFn, content_types: tuple[str, ...], values: st.SearchStrategy[bytes]) -> tuple[str, Any]:
    """A form part's content type and the value TorchServe hands over for it."""
    content_type = draw(st.sampled_from(content_types))
    return content_type, torchserve_value(content_type, draw(values))


@st.composite
def request_rows(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request row and its headers as TorchServe hands them to a handler (raw, JSON, text or form), often
    malformed."""
    headers: dict[str, Any] = draw(OPTION_HEADERS)
    if draw(st.booleans()):
        content_type = draw(st.sampled_from(CONTENT_TYPES))
        body = draw(BODIES | st.text(max_size=20).map(str.encode))
        return {"body": torchserve_value(content_type, body)}, {
            **headers,
            "Content-Type": content_type,
            "body": {"content-type": content_type},
        }
    images = st.dictionaries(
        st.sampled_from(("data", "image")),
        parts(IMAGE_PART_TYPES, SEED_IMAGES | st.binary(max_size=24)),
        min_size=1,
        max_size=2,
    )
    option_values = (
        st.binary(max_size=24)
        | st.sampled_from(ODD_STRINGS).map(lambda text: text.encode("utf-8", "surrogatepass"))
        | JSON_VALUES.map(lambda value: json.dumps(value).encode())
    )
    names = st.sampled_from(OPTION_NAMES) | st.text(max_size=6).filter(lambda name: name not in ("data", "image"))
    options = st.dictionaries(names, parts(CONTENT_TYPES, option_values), max_size=3)
    fields = {**draw(options), **draw(images)}
    for name, (content_type, _) in fields.items():
        headers[name] = {"content-type": content_type}
    return {name: value for name, (_, value) in fields.items()}, headers


@settings(FUZZ, max_examples=600)
@given(request_rows())
def test_request_rows_read_to_a_request_or_a_4xx(row_and_headers):
    try:
        request = read_request(*row_and_headers)
    except RequestError as error:
        check_error(error)
        return
    assert isinstance(request.image, bytes) and request.image
    assert all(isinstance(name, str) for name in request.options)


@FUZZ
@given(st.binary(min_size=1, max_size=300), st.sampled_from(VALID_BASE64), OPTION_HEADERS)
def test_every_valid_base64_form_reads_back_the_bytes(data, variant, headers):
    row = {"body": {"image": base64_variant(data, variant)}}
    assert read_request(row, {**headers, "body": {"content-type": "application/json"}}).image == data


@settings(FUZZ, max_examples=600)
@given(request_rows(), st.sampled_from(sorted(FAMILIES)), MOSTS)
def test_the_core_request_path_ends_in_pixels_or_a_4xx(row_and_headers, family_name, most):
    """Row, options, header, the handler's checks, decoding: as ``VisionHandler.preprocess`` chains them."""
    family = FAMILIES[family_name]
    with time_bound(DECODE_SECONDS):
        try:
            request = read_request(*row_and_headers)
            options = parse_options(request.options, family.options)
            header = read_header(request.image, LIMITS)
            family.validate(Item(0, options, header.size))
            scale = dct_scale(header, most)
            pixels = decode_pixels(request.image, header, scale)
        except RequestError as error:
            check_error(error)
            return
    check_pixels(pixels, header, scale)


# ---------------------------------------------------------------- what fuzzing found in handlers/ (regressions)

HUGE = 10**400  # a JSON integer beyond the float range: json.loads reads it as an int
DEEP = "[" * 100_000 + "]" * 100_000  # nesting deeper than Python's recursion limit
LONG = "1" * 5000  # more digits than Python's int() accepts from text (sys.get_int_max_str_digits, 4300)


@pytest.mark.parametrize(
    ("sent", "spec"),
    [
        ({"max_people": HUGE}, OUTPUT_OPTIONS),
        ({"score_threshold": -HUGE}, OUTPUT_OPTIONS),
        ({"quality": HUGE}, STYLE_OPTIONS),
        ({"boxes": [[0, 0, HUGE, 1]]}, PoseHandler.options),
        ({"boxes": f"[[0, 0, {HUGE}, 1]]"}, PoseHandler.options),
    ],
)
def test_integers_beyond_the_float_range_are_a_400(sent, spec):
    refused(lambda: parse_options(sent, spec))


@pytest.mark.parametrize(
    ("row", "headers"),
    [
        (
            {"body": bytearray(f'{{"image": "AAAA", "max_people": {LONG}}}'.encode())},
            {"body": {"content-type": "application/json"}},
        ),
        ({"body": bytearray(f'{{"image": {DEEP}}}'.encode())}, {"body": {"content-type": "application/json"}}),
        ({"body": bytearray(f'{{"image": {DEEP}}}'.encode())}, {"body": {"content-type": "application/octet-stream"}}),
    ],
    ids=["long-integer", "deep-json", "deep-json-without-content-type"],
)
def test_json_bodies_python_cannot_read_are_a_400(row, headers):
    """TorchServe's own json.loads fails on these too, so the handler gets the bytes and parses them again."""
    refused(lambda: read_request(row, headers))


@pytest.mark.parametrize("text", [DEEP, f"[[0, 0, 1, {LONG}]]"], ids=["deep", "long-integer"])
def test_boxes_text_python_cannot_read_is_a_400(text):
    refused(lambda: parse_options({"boxes": text}, PoseHandler.options))


@pytest.mark.parametrize(
    "value", [{"a": 1}, 1.5, -1, [256], "\ud800"], ids=["object", "float", "negative", "list", "surrogate"]
)
def test_a_json_image_part_is_a_400(value):
    """A form's image part sent as application/json reaches the handler parsed: any JSON value.

    It was taken as bytes (a JSON integer N as N zero bytes, before the byte limit); a JSON
    string is text, which the header check then refuses as no image.
    """
    refused(
        lambda: read_header(read_request({"data": value}, {"data": {"content-type": "application/json"}}).image, LIMITS)
    )


def test_integer_options_keep_every_digit():
    assert parse_options({"image_id": 2**53 + 1}, OUTPUT_OPTIONS)["image_id"] == 2**53 + 1


def test_multi_picture_jpegs_are_jpegs():
    first, second = (Image.fromarray(np.full((48, 64, 3), shade, np.uint8)) for shade in (120, 30))
    data = saved(first, "MPO", save_all=True, append_images=[second])
    header = read_header(data, LIMITS)
    assert header.format == "JPEG" and dct_scale(header, 8) == 8


# ---------------------------------------------------------------- through a real TorchServe

STORM_SEED = 7
STORM_MODELS = {
    "pose_oracle": "pose",
    "detector_oracle": "detection",
    "segmenter_oracle": "segmenter",
    "style_oracle": "style",
    "pix2pix_oracle": "trained_size",
}
GENERATED_PER_MODEL = 16
GOOD_PER_MODEL = 4
GOOD_OPTIONS = {
    "pose_oracle": {},
    "detector_oracle": {},
    "segmenter_oracle": {},
    "style_oracle": {"format": "png"},
    "pix2pix_oracle": {"format": "png"},
}
WIRE_STRINGS = tuple(s for s in ODD_STRINGS if s.isascii() and s.isprintable() and s == s.strip())  # header-safe text
WIRE_VALUES = (*WIRE_STRINGS, None, True, 0, -1, 0.5, 7, 1e308, math.nan, math.inf, [], {"a": 1}, [[10, 10, 0, 0]])
ODD_BODIES = (
    b"",
    b"{",
    b"[]",
    b"null",
    b"42",
    b'"text"',
    b'{"image": 5}',
    b'{"image": "%%%"}',
    b'{"data": "AAAA"}',
    b"\xff\xfe",
    b'  {"image": ""}',
)
RAW_CONTENT_TYPES = ("image/jpeg", "image/png", "application/octet-stream", "text/plain", "application/json", "")
READ_ANY = ImageLimits(max_bytes=2**62, max_pixels=2**62)  # only to learn a served image's size


@dataclass(frozen=True)
class Job:
    """One request of the storm: to ``model``, ``requests.post`` keyword arguments (None: a good request), its image if
    known."""

    model: str
    request: dict[str, Any] | None
    image: bytes | None


def as_text(value: Any) -> str:
    """An option value as a header or form field carries it."""
    return value if isinstance(value, str) else json.dumps(value)


def storm_job(rng: random.Random, model: str) -> Job:
    """A corrupt image, odd options on an intact image, an odd body or an odd form; images sent raw, as a form or as
    JSON."""
    kind = rng.choice(("image", "options", "body", "form"))
    image = SEEDS[rng.choice(SEED_NAMES)]
    if kind == "body":
        return Job(
            model, {"data": rng.choice(ODD_BODIES), "headers": {"Content-Type": rng.choice(RAW_CONTENT_TYPES)}}, None
        )
    if kind == "form":  # no, one or both image fields, maybe empty, beside an option
        names = rng.sample(("data", "image", "format"), rng.randint(0, 3))
        return Job(
            model,
            {"files": {name: ("photo", rng.choice((image, b"")), rng.choice(IMAGE_PART_TYPES)) for name in names}},
            None,
        )
    options = {}
    if kind == "image":
        image = mutate(image, rng.randint)
    else:
        names = [*sorted(FAMILIES[STORM_MODELS[model]].options), "colour"]
        options = {
            name: rng.choice(rng.choice((EDGE_VALUES.get(name, WIRE_VALUES), WIRE_VALUES)))
            for name in rng.sample(names, rng.randint(1, 2))
        }
    form = rng.choice(("raw", "form", "json"))
    if form == "raw":
        headers = {f"X-Option-{name.replace('_', '-')}": as_text(value) for name, value in options.items()}
        request = {"data": image, "headers": {"Content-Type": rng.choice(RAW_CONTENT_TYPES), **headers}}
    elif form == "form":
        fields = {name: (None, as_text(value)) for name, value in options.items()}
        request = {"files": {"data": ("photo", image, rng.choice(IMAGE_PART_TYPES)), **fields}}
    else:
        body = {"image": base64_variant(image, rng.choice(BASE64_VARIANTS)), **options}
        content_type = rng.choice(("application/json", "application/json; charset=utf-8"))
        request = {"data": json.dumps(body).encode(), "headers": {"Content-Type": content_type}}
    return Job(model, request, image)


def strict_json(content: bytes) -> Any:
    """Parse JSON as the standard has it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(content, parse_constant=refuse)


def check_answer(job: Job, response) -> None:
    """A 200 is the model's normal answer: a picture that decodes, COCO results, or JSON with the image's size."""
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("image/"):
        with Image.open(io.BytesIO(response.content)) as picture:
            picture.load()
            assert picture.format.lower() == content_type.split("/")[1]
        return
    answer = strict_json(response.content)
    if isinstance(answer, list):  # format=coco
        assert all(result["category_id"] == 1 and len(result["bbox"]) == 4 for result in answer)
        return
    assert answer["model"] == job.model and ("mask" if job.model == "segmenter_oracle" else "people") in answer
    if job.image is not None:
        height, width = read_header(job.image, READ_ANY).size
        assert answer["image"] == {"width": width, "height": height}


def check_response(job: Job, response) -> None:
    """A 4xx JSON error with the status as its code, or the model's normal answer."""
    if response.status_code == 200:
        check_answer(job, response)
        return
    assert 400 <= response.status_code < 500, f"{job.model}: {response.status_code} {response.text[:300]}"
    body = strict_json(response.content)
    assert body["code"] == response.status_code and body["type"] and body["message"], response.text


def send_job(server, http, job: Job):
    """Post the job's request, or a good one (SMALL_JPEG as JSON)."""
    if job.request is None:
        return post(server, http, job.model, SMALL_JPEG, "json", GOOD_OPTIONS[job.model], timeout=120)
    return http.post(f"{server.inference_url}/predictions/{job.model}", timeout=120, **job.request)


def test_a_storm_of_generated_requests_gets_4xx_or_answers_and_no_worker_dies(server, http):
    rng = random.Random(STORM_SEED)
    jobs = [storm_job(rng, model) for model in STORM_MODELS for _ in range(GENERATED_PER_MODEL)]
    jobs += [Job(model, None, SMALL_JPEG) for model in STORM_MODELS for _ in range(GOOD_PER_MODEL)]
    rng.shuffle(jobs)
    pids = {model: server.worker_pids(model) for model in STORM_MODELS}
    responses = send_together(jobs, lambda job: send_job(server, http, job))
    for job, response in zip(jobs, responses):
        if job.request is None:
            assert response.status_code == 200, (
                f"{job.model}: a good request beside generated ones: {response.text[:300]}"
            )
        check_response(job, response)
    assert sum(r.status_code == 200 for r in responses) > len(STORM_MODELS) * GOOD_PER_MODEL, (
        "no generated request got through"
    )
    for model in STORM_MODELS:
        batches = [int(r.headers.get("X-Batch-Size", 0)) for job, r in zip(jobs, responses) if job.model == model]
        assert max(batches) > 1, f"{model}: the generated requests never shared a batch"
        assert server.worker_pids(model) == pids[model], f"a generated request restarted the {model} worker"
        after = Job(model, None, SMALL_JPEG)
        response = send_job(server, http, after)
        assert response.status_code == 200, f"{model} after the storm: {response.text[:300]}"
        check_answer(after, response)


def test_requests_fail_their_batch_mates(server, http):
    image = base64.b64encode(SMALL_JPEG).decode()
    bad = [
        {
            "data": f'{{"image": "{image}", "max_people": {HUGE}}}'.encode(),
            "headers": {"Content-Type": "application/json"},
        },
        {"data": f'{{"image": {DEEP}}}'.encode(), "headers": {"Content-Type": "application/json"}},
        {"files": {"data": ("a.json", b'{"a": 1}', "application/json")}},
    ]
    jobs = [Job("pose_oracle", None, SMALL_JPEG)] * 4 + [Job("pose_oracle", request, None) for request in bad]
    pids = server.worker_pids("pose_oracle")
    responses = send_together(jobs, lambda job: send_job(server, http, job))
    assert server.worker_pids("pose_oracle") == pids
    assert [r.status_code for r in responses] == [200] * 4 + [400] * len(bad), [
        (r.status_code, r.text[:120]) for r in responses
    ]


@pytest.mark.parametrize(
    "options",
    [{"boxes": [[0, 0, 3.5e38, 3.5e38]]}, {"boxes": [[0, 0, 2e8, 2e8]], "render": True}],
    ids=["box-past-float32-gives-infinity-and-nan", "rendered-box-past-int32-fixed-point-is-a-503"],
)
def test_accepted_boxes_get_an_answer_or_a_4xx(server, http, options):
    body = json.dumps({"image": base64.b64encode(SMALL_JPEG).decode(), **options}).encode()
    job = Job("pose_oracle", {"data": body, "headers": {"Content-Type": "application/json"}}, SMALL_JPEG)
    check_response(job, send_job(server, http, job))
