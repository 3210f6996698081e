"""Person detection steps: a batch of images through a torchvision-style detector in one call, detections to people.

``DetectionHandler`` is the life cycle ``detector_handler`` and ``keypoint_rcnn_handler``
share (each adds its answer); the pose pipeline composes these steps with ``pose``'s.
"""

from collections.abc import Mapping
from typing import Any

import torch
import torchvision  # noqa: F401  registers torchvision::nms and roi_align, which scripted detectors call
from torch import Tensor

from handlers.core.base import Item, VisionHandler
from handlers.core.options import number
from handlers.detection.schema import DetectionConfig, DetectorSpec
from handlers.vision.people import OUTPUT_OPTIONS, Layout, People, check_output_options, ranked

BOX_LAYOUT = Layout()
DETECTION_OPTIONS = {
    **OUTPUT_OPTIONS,
    "score_threshold": number(
        0.5, 0.0, 1.0, "leave out detections scoring below this (the detector's person confidence)"
    ),
}


def detect(model: torch.nn.Module, images: list[Tensor]) -> list[dict[str, Tensor]]:
    """RGB ``uint8[3, H, W]`` images of any sizes, one model call: a detections dict per image (on the CPU).

    The archived detectors take the pixels as they are (``export.detection.PixelDetector``),
    resize and batch them themselves, and return ``(losses, detections)``.
    """
    output = model(images)
    detections = output[1] if isinstance(output, tuple) else output
    return [{key: value.cpu() for key, value in found.items()} for found in detections]


def detected_people(
    detections: Mapping[str, Tensor], spec: DetectorSpec, options: Mapping[str, Any], scale: int = 1
) -> People:
    """The people among one image's detections, best first, filtered by the request's options.

    Detections are in pixels of the image decoded at ``scale``; people are in image pixels.
    With keypoints (Keypoint R-CNN), each joint is (x, y, score): torchvision's visibility
    flag is replaced by its keypoint score.
    """
    person = detections["labels"] == spec.person_label
    scores = detections["scores"][person]
    order = ranked(scores, options)
    keypoints = None
    if "keypoints" in detections:
        joints = detections["keypoints"][person][order]
        keypoints = torch.cat(
            [joints[..., :2] * scale, detections["keypoints_scores"][person][order].unsqueeze(-1)], dim=-1
        )
    return People(detections["boxes"][person][order] * scale, scores[order], keypoints)


class DetectionHandler(VisionHandler):
    """The life cycle of torchvision-style detectors: a batch of images of any sizes, one detector call."""

    options = DETECTION_OPTIONS
    schema = DetectionConfig

    def validate(self, item: Item) -> None:
        check_output_options(item.options)

    def coarsest_scale(self, item: Item) -> float:
        return self.settings.detector.coarsest_scale(item)

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return detect(self.model, images)
