"""The smart filter: the light segmenter and the faces networks in one worker; its recipe."""

from handlers.smart_filter.schema import SmartFilterConfig

from .faces import CASCADE, FACE_PARTS
from .recipe import IMAGE_LIMITS, IMAGE_SERVING, Recipe
from .segmentation import LIGHT_SEGMENTER, SEGMENTER, segmenter_part

RECIPES = (
    Recipe(
        name="smart_filter",
        parts=(segmenter_part(*LIGHT_SEGMENTER), *FACE_PARTS),
        handler="handlers.smart_filter.handler",
        config=SmartFilterConfig(segmenter=SEGMENTER, faces=CASCADE, limits=IMAGE_LIMITS),
        serving=IMAGE_SERVING,
        served_by_default=False,
    ),
)
