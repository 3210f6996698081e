"""Keypoint R-CNN: torchvision's COCO model on ``uint8`` pixels, the view rule's thresholds, its recipe."""

from functools import partial

from torchvision.models import detection

from handlers.keypoint_rcnn.schema import KeypointRCNNConfig, ViewThresholds

from .detection import DETECTOR, takes_pixels
from .recipe import DETECTION_SERVING, IMAGE_LIMITS, PartRecipe, Recipe, image_batch

# Keypoint R-CNN's joint scores are heatmap logits, not probabilities. Thresholds for the
# view rule: not calibrated here (no trained weights offline); every request can override.
VIEW = ViewThresholds(face_threshold=2.0, body_threshold=2.0)
KEYPOINT_RCNN_CONFIG = KeypointRCNNConfig(detector=DETECTOR, view=VIEW, limits=IMAGE_LIMITS)

KEYPOINT_RCNN = PartRecipe(
    name="model",
    build=partial(detection.keypointrcnn_resnet50_fpn, weights=None, weights_backbone=None),
    example_inputs=image_batch,
    torchscript="script",
    check_batch=2,
    default_weights="KeypointRCNN_ResNet50_FPN_Weights.COCO_V1",
    finish=takes_pixels,
)

RECIPES = (
    Recipe(
        name="keypoint_rcnn",
        parts=(KEYPOINT_RCNN,),
        handler="handlers.keypoint_rcnn.handler",
        config=KEYPOINT_RCNN_CONFIG,
        serving=DETECTION_SERVING,
        served_by_default=True,
    ),
)
