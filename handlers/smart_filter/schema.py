"""The smart filter's archive config: the segmenter's and the face cascade's sections, and the image limits."""

from dataclasses import dataclass

from handlers.core.schema import HandlerConfig
from handlers.faces.schema import CascadeSpec
from handlers.segmentation.schema import SegmenterSpec


@dataclass(frozen=True, kw_only=True)
class SmartFilterConfig(HandlerConfig):
    """The light segmenter and the faces networks in one worker: a ``segmenter`` and a ``faces`` section."""

    segmenter: SegmenterSpec
    faces: CascadeSpec
