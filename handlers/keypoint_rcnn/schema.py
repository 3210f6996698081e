"""Keypoint R-CNN's archive config: the detector section, and the default thresholds of the view rule."""

from dataclasses import dataclass

from handlers.core.schema import ConfigSchema
from handlers.detection.schema import DetectionConfig


@dataclass(frozen=True)
class ViewThresholds(ConfigSchema):
    """Joint scores (heatmap logits) above which a face joint, or a hip, knee or ankle, counts as seen."""

    face_threshold: float
    body_threshold: float


@dataclass(frozen=True, kw_only=True)
class KeypointRCNNConfig(DetectionConfig):
    """The detector section at the top level, the ``view`` section, and the image limits."""

    view: ViewThresholds
