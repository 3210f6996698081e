"""Segmentation's archive config: how the model sees a photo (``SegmenterSpec``), and the handler's config."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.core.schema import ConfigSchema, HandlerConfig, config_key, top_level
from handlers.pose_blazepose.schema import BlazePoseDetectorSpec


@dataclass(frozen=True)
class SegmenterSpec(ConfigSchema):
    """How the model sees a photo (archive config): resized to ``short_side``, the long side at most ``long_side``, no
    side under ``min_side``; or, for a model of one input size (MediaPipe's), stretched to ``size``.

    The bounds are the exported program's and keep a long thin photo from becoming a
    gigantic model input; the model normalises the pixels itself.
    """

    short_side: int | None = config_key("input.short_side", default=None)
    long_side: int | None = config_key("input.long_side", default=None)
    min_side: int | None = config_key("input.min_side", default=None)
    size: tuple[int, int] | None = config_key("input.size", default=None)  # (height, width): aspect ratio not kept

    def model_scale(self, height: int, width: int) -> float:
        """Model pixels per photo pixel (along the more finely sampled side): the short side to ``short_side`` unless
        the long side would pass ``long_side``."""
        if self.size is not None:
            return max(self.size[0] / height, self.size[1] / width)
        return min(self.short_side / min(height, width), self.long_side / max(height, width))

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """The size a photo is resized to: aspect ratio kept, except that thin strips are stretched to ``min_side``."""
        if self.size is not None:
            return self.size
        scale = self.model_scale(height, width)
        return max(self.min_side, round(height * scale)), max(self.min_side, round(width * scale))

    def coarsest_scale(self, size: tuple[int, int], options: Mapping[str, Any]) -> float:
        """Image pixels per pixel the model sees (1 when the answer is the composited picture)."""
        return 1 / self.model_scale(*size) if options["background"] is None else 1.0


@dataclass(frozen=True, kw_only=True)
class SegmentationConfig(HandlerConfig):
    """The segmenter's ``input`` section at the top level, the person gate's detector and the image limits.

    With a ``person_gate`` (a segmenter that marks whatever a photo is of, such as MediaPipe's selfie models), the
    archive's ``detector`` part must find a person in a photo for its mask to be answered.
    """

    segmenter: SegmenterSpec = top_level()
    person_gate: BlazePoseDetectorSpec | None = None
