"""Detection's archive config: the detector's person label and resize (``DetectorSpec``), and the handler's config."""

from dataclasses import dataclass

from handlers.core.inputs import Item
from handlers.core.schema import ConfigSchema, HandlerConfig, top_level
from handlers.vision.people import output_format


@dataclass(frozen=True)
class DetectorSpec(ConfigSchema):
    """Which label the detector gives people, and the size it resizes images to (archive config)."""

    person_label: int
    min_size: int  # torchvision's GeneralizedRCNNTransform: short side to this,
    max_size: int  # unless the long side would exceed this

    def coarsest_scale(self, item: Item) -> float:
        """Image pixels per pixel the detector sees, after its own resize (1 when the answer is the picture)."""
        if output_format(item.options) in ("jpeg", "png"):
            return 1.0
        short, long = sorted(item.size)
        return max(short / self.min_size, long / self.max_size)


@dataclass(frozen=True, kw_only=True)
class DetectionConfig(HandlerConfig):
    """The detection handler's config: the detector section at the top level, and the image limits."""

    detector: DetectorSpec = top_level()
