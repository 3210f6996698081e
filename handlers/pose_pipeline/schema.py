"""The pose pipeline's archive config: the detector's and the pose model's sections, and the image limits."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.core.schema import HandlerConfig
from handlers.detection.schema import DetectorSpec
from handlers.pose.schema import PoseSpec


@dataclass(frozen=True, kw_only=True)
class PipelineConfig(HandlerConfig):
    """Detect then pose in one worker: a ``detector`` and a ``pose`` section."""

    detector: DetectorSpec
    pose: PoseSpec

    def to_config(self) -> dict[str, Any]:
        return {"detector": self.detector.to_config(), "pose": self.pose.to_config(), "limits": self.limits.to_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "PipelineConfig":
        return cls(
            detector=DetectorSpec.from_config(config["detector"]),
            pose=PoseSpec.from_config(config["pose"]),
            limits=cls.limits_of(config),
        )
