"""The config contract between an export recipe and its handler: typed, frozen, written and read by the same class.

Each family's ``handlers/<family>/schema.py`` holds its config as frozen dataclasses: the export recipe builds
one and writes ``to_config()`` (plain data) into the archive's ``model-config.yaml``, the handler reads it back
with ``from_config()``. Both follow the dataclass's fields (``ConfigSchema``): each is written under its name or
where ``config_key`` puts it, and read back as its type says, so a family declares its layout once, in its fields.
Every family's config carries the image limits; ``HandlerConfig`` is that common part (and the whole config of a
family that needs nothing else).
"""

from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

# Field metadata: the dotted paths a field is stored at, and the mark of a sub-config stored among its parent's keys.
KEYS = "config_keys"
TOP_LEVEL = "config_top_level"

Schema = TypeVar("Schema", bound="ConfigSchema")


def config_key(*paths: str, **field_options: Any) -> Any:
    """A field stored at ``paths`` of its config instead of under its own name: a dotted path into sections
    (``"pyramid.factor"``), or one path per item of a fixed-length tuple. ``field_options`` go to ``field`` (a
    default)."""
    return field(metadata={KEYS: paths}, **field_options)


def top_level(**field_options: Any) -> Any:
    """A sub-config field whose keys sit at the top level of its parent's config, not in a section named after it."""
    return field(metadata={TOP_LEVEL: True}, **field_options)


class ConfigSchema:
    """A frozen dataclass written to and read from plain config data by its fields: their keys and types."""

    def to_config(self) -> dict[str, Any]:
        """The plain config: each field at its keys in field order, tuples as lists, sub-configs as their sections."""
        config: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.metadata.get(TOP_LEVEL):
                config.update(value.to_config())
                continue
            paths = _paths(item)
            for path, part in zip(paths, value if len(paths) > 1 else (value,), strict=True):
                _store(config, path, _plain(part))
        return config

    @classmethod
    def from_config(cls: type[Schema], config: Mapping[str, Any]) -> Schema:
        """Read it back: each field from its keys as its type says; one with a default may be absent."""
        types = get_type_hints(cls)
        values = {}
        for item in fields(cls):
            if item.metadata.get(TOP_LEVEL):
                values[item.name] = types[item.name].from_config(config)
                continue
            try:
                found = [_look_up(config, path) for path in _paths(item)]
            except KeyError:
                if item.default is MISSING and item.default_factory is MISSING:
                    raise
                continue  # the field's default
            values[item.name] = _typed(types[item.name], found if len(found) > 1 else found[0])
        return cls(**values)


@dataclass(frozen=True)
class ImageLimits(ConfigSchema):
    """Largest accepted upload, in encoded bytes and in decoded pixels: the ``limits`` section."""

    max_bytes: int = config_key("max_image_bytes", default=20 * 1024 * 1024)
    max_pixels: int = config_key("max_image_pixels", default=40_000_000)


@dataclass(frozen=True, kw_only=True)
class HandlerConfig(ConfigSchema):
    """A handler's archive config: the image limits, and in subclasses the family's own sections."""

    limits: ImageLimits = field(default_factory=ImageLimits)

    def to_config(self) -> dict[str, Any]:
        """The plain handler config for model-config.yaml: the family's sections, then the limits."""
        config = super().to_config()
        config["limits"] = config.pop("limits")  # the base class's field, first in field order; last in the archives
        return config


def _paths(item: Field) -> tuple[str, ...]:
    return item.metadata.get(KEYS, (item.name,))


def _store(config: dict[str, Any], path: str, value: Any) -> None:
    """Put ``value`` at the dotted ``path`` of ``config``, making its sections as needed."""
    *sections, key = path.split(".")
    for section in sections:
        config = config.setdefault(section, {})
    config[key] = value


def _look_up(config: Mapping[str, Any], path: str) -> Any:
    """The value at the dotted ``path`` of ``config`` (``KeyError`` naming the first key absent)."""
    value = config
    for key in path.split("."):
        value = value[key]
    return value


def _plain(value: Any) -> Any:
    """``value`` as plain config data: a sub-config as its section, a tuple as a list."""
    if isinstance(value, ConfigSchema):
        return value.to_config()
    if isinstance(value, tuple):
        return [_plain(part) for part in value]
    return value


def _typed(kind: Any, value: Any) -> Any:
    """Plain ``value`` as a ``kind``: None where it allows None, a sub-config, a tuple of typed items, else the
    scalar type applied (``int``, ``float``, ``str``)."""
    if get_origin(kind) in (Union, UnionType):
        if value is None and type(None) in get_args(kind):
            return None
        (kind,) = [option for option in get_args(kind) if option is not type(None)]
    if get_origin(kind) is tuple:
        items = get_args(kind)
        if items[-1] is Ellipsis:
            items = (items[0],) * len(value)
        return tuple(_typed(item, part) for item, part in zip(items, value, strict=True))
    if issubclass(kind, ConfigSchema):
        return kind.from_config(value)
    return kind(value)
