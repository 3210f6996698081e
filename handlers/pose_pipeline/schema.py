"""The pose pipeline's archive config: the detector's and the pose model's sections, and the image limits."""

from dataclasses import dataclass

from handlers.core.schema import HandlerConfig
from handlers.detection.schema import DetectorSpec
from handlers.pose.schema import PoseSpec


@dataclass(frozen=True, kw_only=True)
class PipelineConfig(HandlerConfig):
    """Detect then pose in one worker: a ``detector`` and a ``pose`` section."""

    detector: DetectorSpec
    pose: PoseSpec
