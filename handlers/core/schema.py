"""The config contract between an export recipe and its handler: typed, frozen, written and read by the same class.

Each family's ``handlers/<family>/schema.py`` holds its config as frozen dataclasses: the export recipe builds
one and writes ``to_config()`` (plain data) into the archive's ``model-config.yaml``, the handler reads it back
with ``from_config()``. Every family's config carries the image limits; ``HandlerConfig`` is that common part
(and the whole config of a family that needs nothing else).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageLimits:
    """Largest accepted upload, in encoded bytes and in decoded pixels."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000

    def to_config(self) -> dict[str, Any]:
        """The ``limits`` section of the handler config."""
        return {"max_image_bytes": self.max_bytes, "max_image_pixels": self.max_pixels}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ImageLimits":
        """Read ``max_image_bytes`` / ``max_image_pixels`` from a handler config section."""
        return cls(
            max_bytes=int(config.get("max_image_bytes", cls.max_bytes)),
            max_pixels=int(config.get("max_image_pixels", cls.max_pixels)),
        )


@dataclass(frozen=True, kw_only=True)
class HandlerConfig:
    """A handler's archive config: the image limits, and in subclasses the family's own sections."""

    limits: ImageLimits = field(default_factory=ImageLimits)

    def to_config(self) -> dict[str, Any]:
        """The plain handler config for model-config.yaml."""
        return {"limits": self.limits.to_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "HandlerConfig":
        """Read it back from the archive's handler config."""
        return cls(limits=cls.limits_of(config))

    @staticmethod
    def limits_of(config: Mapping[str, Any]) -> ImageLimits:
        """The ``limits`` section (defaults where absent)."""
        return ImageLimits.from_config(config.get("limits", {}))
