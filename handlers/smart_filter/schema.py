"""The smart filter's archive config: the segmenter's and the face cascade's sections, and the image limits."""

from dataclasses import dataclass

from handlers.core.schema import HandlerConfig
from handlers.faces.schema import CascadeSpec
from handlers.pose_blazepose.schema import BlazePoseDetectorSpec
from handlers.segmentation.schema import SegmenterSpec


@dataclass(frozen=True, kw_only=True)
class SmartFilterConfig(HandlerConfig):
    """A segmenter and the faces networks in one worker: a ``segmenter`` and a ``faces`` section, and the segmenter's
    person gate (``SegmentationConfig``'s)."""

    segmenter: SegmenterSpec
    faces: CascadeSpec
    person_gate: BlazePoseDetectorSpec | None = None
