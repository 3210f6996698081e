"""Answers: a body and its content type, for JSON payloads, images and errors."""

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import RequestError
from .images import encode_image

IMAGE_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}


@dataclass(frozen=True)
class Answer:
    """What one request gets back: status, body bytes and content type."""

    body: bytes
    content_type: str
    status: int = 200


def json_answer(payload: Any) -> Answer:
    """Compact JSON (TorchServe would otherwise pretty-print it)."""
    return Answer(json.dumps(payload, separators=(",", ":")).encode(), "application/json")


def image_answer(rgb: np.ndarray, image_format: str, quality: int = 90) -> Answer:
    """An encoded JPEG or PNG image."""
    return Answer(encode_image(rgb, image_format, quality), IMAGE_CONTENT_TYPES[image_format])


def error_answer(error: RequestError) -> Answer:
    """The JSON error contract: ``{"code", "type", "message"}`` with the same status."""
    return Answer(error.body(), "application/json", int(error.code))
