"""TorchServe handler for detect-then-pose in one worker: every person of every photo, with 17 keypoints each.

The archive holds two model files: the person detector (TorchScript ``model.pt``) and the
pose model (``pose.pt2``, or ``pose.pt`` when exported as TorchScript). A batch goes through the detector in one
call, the people each
request keeps go through the pose model in one call, and each person's ``score`` is the
detector's confidence. A request that gives ``boxes`` skips the detector: its boxes are its people.
"""

import torch
from torch import Tensor

from handlers.core.answers import Answer
from handlers.core.base import Item, VisionHandler
from handlers.core.options import boxes, flag
from handlers.core.stages import CLOCK
from handlers.detection.steps import DETECTION_OPTIONS, detect, detected_people
from handlers.pose.steps import (
    MAX_BOXES,
    POSE_LAYOUT,
    check_boxes_overlap,
    given_people,
    pose_crops,
    pose_decode_scale,
    pose_heatmaps,
    pose_keypoints,
)
from handlers.pose_pipeline.schema import PipelineConfig
from handlers.vision.people import People, check_output_options, people_answer

# The batch's images on the device, each request's options (whom it wants, flip test) and
# decode scale. A tuple, not a class: TorchServe wants exactly one class in a handler module.
PipelineInputs = tuple[list[Tensor], list[dict], list[int]]


class PosePipelineHandler(VisionHandler):
    """Person detector, then top-down pose on every person it keeps."""

    v2_output_names = ("answer", "people", "boxes", "scores", "keypoints")

    options = {
        **DETECTION_OPTIONS,
        "boxes": boxes(
            MAX_BOXES,
            "people to estimate, [[x1, y1, x2, y2], ...] in image pixels: the detector is skipped and each box is a person of score 1",
        ),
        "flip_test": flag(False, "also run each mirrored person crop and average the heatmaps"),
    }
    schema = PipelineConfig

    def initialize(self, context):
        super().initialize(context)
        self.pose_model = self.load_part("pose")

    def validate(self, item: Item) -> None:
        check_output_options(item.options)
        check_boxes_overlap(item)

    def coarsest_scale(self, item: Item) -> float:
        if item.options["boxes"] is not None:
            return pose_decode_scale(item, self.settings.pose)
        return self.settings.detector.coarsest_scale(item)  # crops are cut from the detector's pixels

    def prepare(self, items: list[Item]) -> PipelineInputs:
        return [item.image for item in items], [item.options for item in items], [item.scale for item in items]

    def forward(self, inputs: PipelineInputs) -> list[People]:
        images, options, scales = inputs
        searched = [n for n, item_options in enumerate(options) if item_options["boxes"] is None]
        detections = dict(zip(searched, detect(self.model, [images[n] for n in searched]) if searched else []))
        found = [
            detected_people(detections[n], self.settings.detector, item_options, scale)
            if n in detections
            else given_people(item_options["boxes"])
            for n, (item_options, scale) in enumerate(zip(options, scales))
        ]
        counts = [len(people.boxes) for people in found]
        boxes = torch.cat([people.boxes for people in found]).to(self.device)
        image_index = torch.repeat_interleave(
            torch.arange(len(found), device=self.device), torch.tensor(counts, device=self.device)
        )
        with CLOCK.stage("preprocess"):  # between the two models: charged as what it is
            crops, crop_boxes = pose_crops(images, boxes, image_index, self.settings.pose, scales)
            flip = torch.tensor([item_options["flip_test"] for item_options in options], device=self.device)[
                image_index
            ]
        heatmaps = pose_heatmaps(self.pose_model, crops, flip, self.settings.pose)
        with CLOCK.stage("postprocess"):
            keypoints = pose_keypoints(heatmaps, crop_boxes, self.settings.pose).cpu()
        for people, joints in zip(found, keypoints.split(counts)):
            people.keypoints = joints
        return found

    def answer(self, items: list[Item], inputs: PipelineInputs, found: list[People]) -> list[Answer]:
        return [people_answer(item, people, POSE_LAYOUT, self.answer_header) for item, people in zip(items, found)]
