"""Detection's archive config: the detector's person label and resize (``DetectorSpec``), and the handler's config."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.core.inputs import Item
from handlers.core.schema import HandlerConfig
from handlers.vision.people import output_format


@dataclass(frozen=True)
class DetectorSpec:
    """Which label the detector gives people, and the size it resizes images to (archive config)."""

    person_label: int
    min_size: int  # torchvision's GeneralizedRCNNTransform: short side to this,
    max_size: int  # unless the long side would exceed this

    def to_config(self) -> dict[str, Any]:
        """The detector section."""
        return {"person_label": self.person_label, "min_size": self.min_size, "max_size": self.max_size}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DetectorSpec":
        """Read the detector section written by the export recipe."""
        return cls(int(config["person_label"]), int(config["min_size"]), int(config["max_size"]))

    def coarsest_scale(self, item: Item) -> float:
        """Image pixels per pixel the detector sees, after its own resize (1 when the answer is the picture)."""
        if output_format(item.options) in ("jpeg", "png"):
            return 1.0
        short, long = sorted(item.size)
        return max(short / self.min_size, long / self.max_size)


@dataclass(frozen=True, kw_only=True)
class DetectionConfig(HandlerConfig):
    """The detection handler's config: the detector section at the top level, and the image limits."""

    detector: DetectorSpec

    def to_config(self) -> dict[str, Any]:
        return {**self.detector.to_config(), "limits": self.limits.to_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DetectionConfig":
        return cls(detector=DetectorSpec.from_config(config), limits=cls.limits_of(config))
