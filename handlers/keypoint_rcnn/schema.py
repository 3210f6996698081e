"""Keypoint R-CNN's archive config: the detector section, and the default thresholds of the view rule."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.detection.schema import DetectionConfig, DetectorSpec


@dataclass(frozen=True)
class ViewThresholds:
    """Joint scores (heatmap logits) above which a face joint, or a hip, knee or ankle, counts as seen."""

    face_threshold: float
    body_threshold: float

    def to_config(self) -> dict[str, Any]:
        """The ``view`` section."""
        return {"face_threshold": self.face_threshold, "body_threshold": self.body_threshold}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ViewThresholds":
        return cls(float(config["face_threshold"]), float(config["body_threshold"]))


@dataclass(frozen=True, kw_only=True)
class KeypointRCNNConfig(DetectionConfig):
    """The detector section at the top level, the ``view`` section, and the image limits."""

    view: ViewThresholds

    def to_config(self) -> dict[str, Any]:
        return {**self.detector.to_config(), "view": self.view.to_config(), "limits": self.limits.to_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "KeypointRCNNConfig":
        return cls(
            detector=DetectorSpec.from_config(config),
            view=ViewThresholds.from_config(config["view"]),
            limits=cls.limits_of(config),
        )
