"""The generators' archive config: the network's architecture and trained size, and the image limits."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.style.schema import StyleConfig


@dataclass(frozen=True)
class GeneratorSpec:
    """A pix2pix / CycleGAN generator: ``resnet`` (any size) or ``unet`` (trained at ``size`` px square)."""

    architecture: str
    size: int | None = None  # None: any size

    def to_config(self) -> dict[str, Any]:
        """The ``generator`` section."""
        return {"architecture": self.architecture, "size": self.size}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "GeneratorSpec":
        size = config.get("size")
        return cls(config["architecture"], None if size is None else int(size))


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig(StyleConfig):
    """The style handler's config and the ``generator`` section."""

    generator: GeneratorSpec

    def to_config(self) -> dict[str, Any]:
        return {"generator": self.generator.to_config(), "limits": self.limits.to_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "GeneratorConfig":
        return cls(generator=GeneratorSpec.from_config(config["generator"]), limits=cls.limits_of(config))
