"""Turn one TorchServe request row into image bytes and raw options.

Three request forms are accepted (docs/architecture.md, One request's path):

- raw body: the image bytes, options as ``X-Option-<Name>`` headers
  (``X-Option-Flip-Test: true`` sets option ``flip_test``);
- multipart form, or gRPC input map: field ``data`` or ``image`` holds the file,
  every other field is an option (UTF-8 text, or binary data such as a background image);
- JSON object: ``{"image": "<base64>", ...options}``, also recognised without its
  content type (a body starting with ``{`` is never an image).

Option headers may accompany any form; naming the same option twice is an error.
"""

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from handlers.core.errors import RequestError

IMAGE_FIELDS = ("data", "image")
OPTION_HEADER_PREFIX = "x-option-"
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_JSON_START = re.compile(rb"\s*\{")


@dataclass(frozen=True)
class Request:
    """The image bytes of one request and its options as sent (strings or JSON values)."""

    image: bytes
    options: dict[str, Any]


@dataclass
class Item:
    """One readable request: its place in TorchServe's batch, options, image size and decoded pixels.

    ``size`` is the image's (height, width) as a viewer sees it; ``image`` holds its RGB
    ``uint8[3, height / scale, width / scale]`` pixels, decoded at the ``scale`` the
    handler allowed (``VisionHandler.coarsest_scale``), on the CPU or the model's device.
    """

    index: int
    options: dict[str, Any]
    size: tuple[int, int]
    image: Tensor | None = None
    scale: int = 1
    sequence_id: str | None = None  # the TorchServe sequence it belongs to (stateful models)


def read_request(row: Mapping[str, Any], headers: Mapping[str, Any]) -> Request:
    """Read a TorchServe request row (``data[i]``) and its headers into a ``Request``."""
    header_options = _header_options(headers)
    if "body" in row:
        image, body_options = _read_body(row["body"], _content_type(headers, "body"))
    else:
        image, body_options = _read_fields(row, headers)
    repeated = sorted(header_options.keys() & body_options.keys())
    if repeated:
        raise RequestError(
            f"option {repeated[0]!r} is given both as a header and in the body; send it once",
            "InvalidOption",
        )
    return Request(image, {**header_options, **body_options})


def _read_body(body: Any, content_type: str) -> tuple[bytes, dict[str, Any]]:
    if isinstance(body, dict):
        return _read_json_object(body)
    if isinstance(body, (bytes, bytearray)):
        if content_type.startswith("application/json"):
            _raise_json_error(bytes(body))
        if not body:
            raise RequestError("the request body is empty; send an image", "EmptyRequest")
        if starts_like_json(body):
            # No image format starts with '{': this is JSON sent without its content type
            # (TorchServe workflows pass node outputs this way).
            return _read_body(_parse_json(bytes(body)), "application/json")
        return bytes(body), {}
    if isinstance(body, str):
        raise RequestError(
            f"the request body is text ({content_type or 'text'}), not an image: send the "
            'image bytes with an image/* Content-Type, or JSON {"image": "<base64>"}',
            "InvalidRequest",
        )
    raise RequestError(
        f"a JSON body must be an object with an 'image' field, not a {_json_type(body)}",
        "InvalidJSON",
    )


def _read_json_object(body: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    if "image" not in body:
        raise RequestError("the JSON body has no 'image' field (base64 image bytes)", "NoImage")
    encoded = body["image"]
    if not isinstance(encoded, str):
        raise RequestError(
            f"field 'image' must be a base64 string, not a {_json_type(encoded)}",
            "InvalidBase64",
        )
    options = {name: value for name, value in body.items() if name != "image"}
    return decode_base64(encoded, "image"), options


def _read_fields(row: Mapping[str, Any], headers: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    present = [name for name in IMAGE_FIELDS if name in row]
    if not present:
        raise RequestError(
            "no image in the request: send the image as the body, as form field 'data', "
            'or as JSON {"image": "<base64>"}',
            "NoImage",
        )
    if len(present) > 1:
        raise RequestError("both 'data' and 'image' are given; send one image", "InvalidRequest")
    image = row[present[0]]
    if isinstance(image, str):
        image = image.encode("utf-8", "surrogatepass")  # text is no image: decoding will say so
    if not isinstance(image, (bytes, bytearray)):
        # A part sent as application/json reaches us parsed by TorchServe.
        raise RequestError(
            f"form field {present[0]!r} must be the image file, not JSON ({_json_type(image)})", "InvalidRequest"
        )
    if not image:
        raise RequestError(f"form field {present[0]!r} is empty; send an image", "EmptyRequest")
    options = {
        name: bytes(value) if _content_type(headers, name).startswith("image/") else _field_text(value)
        for name, value in row.items()
        if name not in IMAGE_FIELDS
    }  # an image file sent as an option (a background) stays bytes
    return bytes(image), options


def starts_like_json(body: bytes | bytearray) -> bool:
    """Whether the body's first non-blank byte is ``{`` (no image format starts so), without copying the body."""
    return _JSON_START.match(body) is not None


def decode_base64(text: str, field: str) -> bytes:
    """Decode standard or URL-safe base64, tolerating whitespace and a ``data:`` URL prefix."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    compact = "".join(text.split()).translate(_URLSAFE_TO_STANDARD)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"field {field!r} is not valid base64: {err}", "InvalidBase64") from None
    if not data:
        raise RequestError(f"field {field!r} is empty; send an image", "EmptyRequest")
    return data


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("the JSON body is not UTF-8 text", "InvalidJSON") from None
    except json.JSONDecodeError as err:
        raise RequestError(
            f"the body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}",
            "InvalidJSON",
        ) from None
    except (ValueError, RecursionError):  # a number of over 4300 digits, or nesting deeper than Python recurses
        raise RequestError(
            "the body is not valid JSON we accept: a number is too long or it nests too deeply", "InvalidJSON"
        ) from None


def _raise_json_error(body: bytes) -> None:
    _parse_json(body)
    # TorchServe hands over raw bytes only when its own parse failed.
    raise RequestError("the body is not valid JSON", "InvalidJSON")


def _field_text(value: Any) -> Any:
    # gRPC input-map entries carry no content type: binary data (an image) stays bytes,
    # and options that want text reject it by name.
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    return value


def _header_options(headers: Mapping[str, Any]) -> dict[str, str]:
    return {
        key.lower()[len(OPTION_HEADER_PREFIX) :].replace("-", "_"): value
        for key, value in headers.items()
        if isinstance(value, str) and key.lower().startswith(OPTION_HEADER_PREFIX)
    }


def _content_type(headers: Mapping[str, Any], field: str) -> str:
    # TorchServe files each body part's own headers under the part's name.
    part = headers.get(field)
    return part.get("content-type", "").lower() if isinstance(part, dict) else ""


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )
