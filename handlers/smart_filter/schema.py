"""The smart filter's archive config: the segmenter's and the face cascade's sections, and the image limits."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.core.schema import HandlerConfig
from handlers.faces.schema import CascadeSpec
from handlers.segmentation.schema import SegmenterSpec


@dataclass(frozen=True, kw_only=True)
class SmartFilterConfig(HandlerConfig):
    """The light segmenter and the faces networks in one worker: a ``segmenter`` and a ``faces`` section."""

    segmenter: SegmenterSpec
    faces: CascadeSpec

    def to_config(self) -> dict[str, Any]:
        return {
            "segmenter": self.segmenter.to_config(),
            "faces": self.faces.to_config(),
            "limits": self.limits.to_config(),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SmartFilterConfig":
        return cls(
            segmenter=SegmenterSpec.from_config(config["segmenter"]),
            faces=CascadeSpec.from_config(config["faces"]),
            limits=cls.limits_of(config),
        )
