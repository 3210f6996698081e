"""The smart filter: a segmenter and the faces networks in one worker; its recipes.

``smart_filter`` cuts people out with MediaPipe's selfie segmentation (real weights offline, from the package
registry), gated by BlazePose's person detector; ``smart_filter_lraspp`` with torchvision's LR-ASPP.
"""

from handlers.smart_filter.schema import SmartFilterConfig

from .faces import CASCADE, FACE_PARTS
from .mediapipe import SELFIE_SEGMENTATION
from .pose_blazepose import BLAZEPOSE_DETECTOR
from .recipe import IMAGE_LIMITS, IMAGE_SERVING, Recipe
from .segmentation import LIGHT_SEGMENTER, SEGMENTER, SELFIE, segmenter_part, selfie_parts

SELFIE_SEGMENTER, PERSON_GATE = selfie_parts(SELFIE_SEGMENTATION, SELFIE)

RECIPES = (
    Recipe(
        name="smart_filter",
        parts=(SELFIE_SEGMENTER, *FACE_PARTS, PERSON_GATE),
        handler="handlers.smart_filter.handler",
        config=SmartFilterConfig(segmenter=SELFIE, faces=CASCADE, person_gate=BLAZEPOSE_DETECTOR, limits=IMAGE_LIMITS),
        serving=IMAGE_SERVING,
    ),
    Recipe(
        name="smart_filter_lraspp",
        parts=(segmenter_part(*LIGHT_SEGMENTER), *FACE_PARTS),
        handler="handlers.smart_filter.handler",
        config=SmartFilterConfig(segmenter=SEGMENTER, faces=CASCADE, limits=IMAGE_LIMITS),
        serving=IMAGE_SERVING,
    ),
)
