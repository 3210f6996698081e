"""TorchServe handler for BlazePose: MediaPipe's person detector, then its 33 landmarks on each person's rotated crop.

The archive holds two programs converted from MediaPipe's TFLite files: the detector (``model``) and the landmark
model (``landmarks``). A batch's photos go through the detector in one call, every person of the batch through the
landmark model in calls of up to ``max_crops_per_forward``. People are answered like every people model's: boxes,
scores (the landmark model's confidence that the crop holds a pose) and the 17 COCO keypoints, with options for all
33 landmarks and each person's mask. A request that gives ``boxes`` skips the detector.
"""

import torch
from torch import Tensor

from handlers.core.answers import Answer
from handlers.core.base import Item, VisionHandler
from handlers.core.options import boxes, flag
from handlers.pose.steps import MAX_BOXES, POSE_LAYOUT, check_boxes_overlap
from handlers.pose_blazepose.schema import BlazePoseConfig
from handlers.pose_blazepose.steps import (
    alignment_regions,
    blazepose_people,
    body_landmarks,
    box_regions,
    detect_bodies,
)
from handlers.vision.people import OUTPUT_OPTIONS, People, check_output_options, people_answer

# The batch's photos on the device, each request's options, decode scales and photo sizes. A tuple, not a class:
# TorchServe wants exactly one class in a handler module.
BlazePoseInputs = tuple[list[Tensor], list[dict], list[int], list[tuple[int, int]]]


class BlazePoseHandler(VisionHandler):
    """Detect people, then landmarks on each: 17 COCO keypoints per person, or all 33 BlazePose landmarks."""

    v2_output_names = ("answer", "people", "boxes", "scores", "keypoints")

    options = {
        **OUTPUT_OPTIONS,
        "boxes": boxes(
            MAX_BOXES,
            "people to estimate, [[x1, y1, x2, y2], ...] in image pixels: the detector is skipped and each box is a person",
        ),
        "landmarks": flag(False, "add each person's 33 BlazePose landmarks: [x, y, z, visibility, presence]"),
        "mask": flag(False, "add each person's mask over the photo as COCO RLE"),
    }
    schema = BlazePoseConfig

    def initialize(self, context):
        super().initialize(context)
        self.landmark_model = self.load_part("landmarks")

    def validate(self, item: Item) -> None:
        check_output_options(item.options)
        check_boxes_overlap(item)

    def prepare(self, items: list[Item]) -> BlazePoseInputs:
        return (
            [item.image.to(self.device) for item in items],
            [item.options for item in items],
            [item.scale for item in items],
            [item.size for item in items],
        )

    def forward(self, inputs: BlazePoseInputs) -> list[People]:
        images, options, scales, sizes = inputs
        detector, landmarks = self.settings.detector, self.settings.landmarks
        searched = [n for n, item_options in enumerate(options) if item_options["boxes"] is None]
        detections = {}
        if searched:
            detected = detect_bodies(
                self.model,
                [images[n] for n in searched],
                [sizes[n] for n in searched],
                [scales[n] for n in searched],
                detector,
            )
            detections = dict(zip(searched, detected))
        given = {
            n: torch.tensor(item_options["boxes"], dtype=torch.float32).view(-1, 4)
            for n, item_options in enumerate(options)
            if n not in detections
        }
        regions = [
            alignment_regions(detections[n][0], landmarks.roi_scale)
            if n in detections
            else box_regions(given[n], landmarks.roi_scale)
            for n in range(len(options))
        ]
        found = body_landmarks(self.landmark_model, images, regions, scales, landmarks)
        return [
            blazepose_people(bodies.select(bodies.scores >= landmarks.min_pose_score), size, item_options)
            if n in detections
            else blazepose_people(bodies, size, item_options, given[n])
            for n, (bodies, size, item_options) in enumerate(zip(found, sizes, options))
        ]

    def answer(self, items: list[Item], inputs: BlazePoseInputs, found: list[People]) -> list[Answer]:
        return [people_answer(item, people, POSE_LAYOUT, self.answer_header) for item, people in zip(items, found)]
