"""Typed request options: each handler declares its options once; values arrive as text or JSON."""

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers.core.errors import RequestError

PNG_COMPRESSION_HELP = (
    "how a PNG answer is compressed: 1 (default) fpng's fast writer; 2-9 zlib's levels, smaller and slower; "
    "0 stores the pixels, several times larger"
)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One option: a parser from the sent value (text or JSON) to a typed value, a default, and what a form needs to
    offer it (JSON Schema's words: ``type``, ``minimum``, ``maximum``, ``enum``, ``maxItems``)."""

    parse: Callable[[str, Any], Any]
    default: Any
    help: str
    form: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


def parse_options(sent: Mapping[str, Any], spec: Mapping[str, Option]) -> dict[str, Any]:
    """Parse the options of one request against ``spec``; unknown names are an error."""
    unknown = sorted(set(sent) - set(spec))
    if unknown:
        accepted = ", ".join(sorted(spec)) or "none"
        raise RequestError(f"unknown option {unknown[0]!r}; this model accepts: {accepted}", "UnknownOption")
    return {name: option.parse(name, sent[name]) if name in sent else option.default for name, option in spec.items()}


def flag(default: bool, help: str) -> Option:
    """A boolean option: JSON true/false or text true/false/1/0/yes/no/on/off."""

    def parse(name: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _invalid(name, value, "true or false")

    return Option(parse, default, help, {"type": "boolean"})


def number(default: float | None, minimum: float, maximum: float, help: str) -> Option:
    """A finite number within [minimum, maximum]."""
    expected = f"a number from {minimum:g} to {maximum:g}"
    return _within(_to_number, minimum, maximum, expected, default, help, "number")


def integer(default: int | None, minimum: int, maximum: int, help: str) -> Option:
    """A whole number within [minimum, maximum], kept exact (not through a float)."""
    expected = f"a whole number from {minimum} to {maximum}"
    return _within(_to_integer, minimum, maximum, expected, default, help, "integer")


def choice(default: str, allowed: tuple[str, ...], help: str) -> Option:
    """One of a fixed set of words, case-insensitive."""

    def parse(name: str, value: Any) -> str:
        text = str(value).strip().lower() if isinstance(value, str) else None
        if text not in allowed:
            raise _invalid(name, value, "one of " + ", ".join(allowed))
        return text

    return Option(parse, default, help, {"type": "string", "enum": list(allowed)})


def boxes(max_count: int, help: str, max_coordinate: float = 1e7) -> Option:
    """A list of [x1, y1, x2, y2] boxes in image pixels (JSON, or JSON text), coordinates within +-max_coordinate."""

    def parse(name: str, value: Any) -> list[list[float]]:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):  # JSONDecodeError, too many digits, too deep
                raise _invalid(name, value, "a JSON list of [x1, y1, x2, y2] boxes") from None
        if not isinstance(value, list):
            raise _invalid(name, value, "a list of [x1, y1, x2, y2] boxes")
        if len(value) > max_count:
            raise RequestError(
                f"option {name!r} has {len(value)} boxes; at most {max_count} are allowed",
                "InvalidOption",
            )
        parsed = []
        for index, box in enumerate(value):
            coords = [_to_number(v) for v in box] if isinstance(box, list) else []
            if len(coords) != 4 or any(c is None or abs(c) > max_coordinate for c in coords):
                raise _invalid(
                    f"{name}[{index}]",
                    box,
                    f"[x1, y1, x2, y2] with 4 numbers from {-max_coordinate:g} to {max_coordinate:g}",
                )
            x1, y1, x2, y2 = coords
            if not (x2 > x1 and y2 > y1):
                raise _invalid(f"{name}[{index}]", box, "a box with x2 > x1 and y2 > y1")
            parsed.append(coords)
        return parsed

    return Option(parse, None, help, {"type": "array", "maxItems": max_count})


def describe(spec: Mapping[str, Option]) -> dict[str, dict[str, Any]]:
    """Options as data for the describe API and the v2 model metadata: default, help and the form's words."""
    return {name: {"default": option.default, "help": option.help, **option.form} for name, option in spec.items()}


def _within(
    read: Callable[[Any], float | int | None],
    minimum: float,
    maximum: float,
    expected: str,
    default: Any,
    help: str,
    kind: str,
) -> Option:
    """An option that ``read`` turns into a number (None: the value is not one) within [minimum, maximum];
    ``expected`` words that for the error, ``kind`` is its JSON Schema type."""

    def parse(name: str, value: Any) -> float | int:
        parsed = read(value)
        if parsed is None or not minimum <= parsed <= maximum:
            raise _invalid(name, value, expected)
        return parsed

    return Option(parse, default, help, {"type": kind, "minimum": minimum, "maximum": maximum})


def _to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    try:
        number = float(value) if isinstance(value, (int, float)) else None
    except OverflowError:  # a JSON integer beyond the float range
        return None
    return number if number is not None and math.isfinite(number) else None


def _to_integer(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:  # not an integer literal, or more digits than Python reads
            value = text
    number = _to_number(value)
    return int(number) if number is not None and number == int(number) else None


def _invalid(name: str, value: Any, expected: str) -> RequestError:
    if isinstance(value, bytes):
        shown = f"{len(value)} bytes of binary data"
    else:
        shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return RequestError(f"option {name!r} must be {expected}, got {shown}", "InvalidOption")
