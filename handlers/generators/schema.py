"""The generators' archive config: the network's architecture and trained size, and the image limits."""

from dataclasses import dataclass

from handlers.core.schema import ConfigSchema
from handlers.style.schema import StyleConfig


@dataclass(frozen=True)
class GeneratorSpec(ConfigSchema):
    """A pix2pix / CycleGAN generator: ``resnet`` (any size) or ``unet`` (trained at ``size`` px square)."""

    architecture: str
    size: int | None = None  # None: any size


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig(StyleConfig):
    """The style handler's config and the ``generator`` section."""

    generator: GeneratorSpec
