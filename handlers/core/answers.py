"""Answers: a body and its content type, for JSON payloads, images and errors."""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from handlers.core.errors import RequestError
from handlers.core.images import encode_image
from handlers.core.stages import CLOCK

IMAGE_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class Answer:
    """What one request gets back: status, body bytes, content type and any headers of its own."""

    body: bytes
    content_type: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


def json_answer(payload: Any) -> Answer:
    """Compact JSON (TorchServe would otherwise pretty-print it)."""
    with CLOCK.stage("encode"):
        return Answer(json.dumps(payload, separators=(",", ":")).encode(), "application/json")


def image_answer(pixels: Tensor, image_format: str, quality: int = 90, png_compression: int = 1) -> Answer:
    """RGB(A) ``uint8[C, H, W]`` pixels as an encoded JPEG, PNG or WebP image."""
    with CLOCK.stage("encode"):
        return Answer(encode_image(pixels, image_format, quality, png_compression), IMAGE_CONTENT_TYPES[image_format])


def error_answer(error: RequestError) -> Answer:
    """The JSON error contract: ``{"code", "type", "message"}`` with the same status."""
    return Answer(error.body(), "application/json", int(error.code))
