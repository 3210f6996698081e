"""Person detection: torchvision's COCO Faster R-CNN answering people only, on ``uint8`` pixels; config and recipes."""

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models import detection

from handlers.detection.schema import DetectionConfig, DetectorSpec

from .recipe import DETECTION_SERVING, IMAGE_LIMITS, PartRecipe, Recipe, image_batch


class PersonBoxPredictor(nn.Module):
    """A COCO Faster R-CNN box predictor reduced to background and person, keeping each box's person score.

    The new background logit is the log-sum-exp of every non-person logit, so the 2-way
    softmax gives exactly the person probability of the 91-way one; only person box
    deltas are kept. Post-processing (thresholds, NMS, the 100-detection cap) then spends
    itself on people alone.
    """

    def __init__(self, predictor: nn.Module, person_label: int = 1):
        super().__init__()
        self.predictor = predictor
        classes = predictor.cls_score.out_features
        self.person_label = person_label
        self.register_buffer("others", torch.tensor([c for c in range(classes) if c != person_label]))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        logits, deltas = self.predictor(features)
        person = self.person_label
        two_way = torch.stack([logits[:, self.others].logsumexp(dim=1), logits[:, person]], dim=1)
        return two_way, torch.cat([deltas[:, :4], deltas[:, 4 * person : 4 * person + 4]], dim=1)


def keep_person_class(detector: nn.Module) -> nn.Module:
    """Make a torchvision COCO detector answer people only (label 1), with unchanged person scores."""
    detector.roi_heads.box_predictor = PersonBoxPredictor(detector.roi_heads.box_predictor)
    return detector


class PixelDetector(nn.Module):
    """A torchvision detection model that takes RGB ``uint8[3, H, W]`` images of any sizes.

    The handler hands over decoded pixels; scaling them to 0..1 here runs on the model's
    device, like the model's own resize and normalisation.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: list[Tensor]) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        losses, detections = self.detector([image.float() / 255 for image in images])
        return losses, detections


def takes_pixels(detector: nn.Module) -> nn.Module:
    """Wrap a torchvision detector to take ``uint8`` RGB images."""
    return PixelDetector(detector)


def person_detector_of_pixels(detector: nn.Module) -> nn.Module:
    """A COCO detector answering people only, taking ``uint8`` RGB images."""
    return takes_pixels(keep_person_class(detector))


# torchvision's COCO detectors: label 1 is person (kept as label 1 by keep_person_class).
# They resize each image to 800 px on the short side, at most 1333 on the long side
# (their GeneralizedRCNNTransform; checked against the built models in the tests), so
# handlers decode JPEGs no larger than that.
DETECTOR = DetectorSpec(person_label=1, min_size=800, max_size=1333)
# The same as model-config.yaml holds it.
DETECTOR_CONFIG = DETECTOR.to_config()


def detector_part(builder: Callable[..., nn.Module], weights: str, name: str = "model") -> PartRecipe:
    """A torchvision COCO detector as a people-only model file taking pixels, TorchScript."""
    return PartRecipe(
        name=name,
        build=partial(builder, weights=None, weights_backbone=None),
        example_inputs=image_batch,
        torchscript="script",
        check_batch=2,
        default_weights=weights,
        finish=person_detector_of_pixels,
    )


PERSON_DETECTOR = detector_part(detection.fasterrcnn_resnet50_fpn_v2, "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1")
PERSON_DETECTOR_MOBILENET = detector_part(
    detection.fasterrcnn_mobilenet_v3_large_fpn, "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"
)


def _detector_recipe(name: str, part: PartRecipe, served_by_default: bool) -> Recipe:
    return Recipe(
        name=name,
        parts=(part,),
        handler="handlers.detection.handler",
        config=DetectionConfig(detector=DETECTOR, limits=IMAGE_LIMITS),
        serving=DETECTION_SERVING,
        served_by_default=served_by_default,
    )


RECIPES = (
    _detector_recipe("person_detector", PERSON_DETECTOR, served_by_default=True),
    _detector_recipe("person_detector_mobilenet", PERSON_DETECTOR_MOBILENET, served_by_default=False),
)
