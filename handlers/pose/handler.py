"""TorchServe handler for top-down pose models (SimpleBaseline): the life cycle around ``pose``'s steps."""

from dataclasses import replace

import torch
from torch import Tensor

from handlers.core.answers import Answer
from handlers.core.base import Item, VisionHandler
from handlers.core.options import boxes, flag
from handlers.pose.schema import PoseConfig
from handlers.pose.steps import (
    MAX_BOXES,
    POSE_LAYOUT,
    PoseInputs,
    check_boxes_overlap,
    person_boxes,
    pose_crops,
    pose_decode_scale,
    pose_heatmaps,
    pose_keypoints,
    pose_people,
)
from handlers.vision.people import OUTPUT_OPTIONS, check_output_options, people_answer


class PoseHandler(VisionHandler):
    """SimpleBaseline pose: crops each given box (or the whole image) and decodes 17 COCO keypoints."""

    v2_output_names = ("answer", "people", "boxes", "scores", "keypoints")

    options = {
        "boxes": boxes(
            MAX_BOXES, "people to estimate, [[x1, y1, x2, y2], ...] in image pixels; default: the whole image"
        ),
        "flip_test": flag(False, "also run each mirrored crop and average the heatmaps (twice the compute)"),
        **OUTPUT_OPTIONS,
    }
    schema = PoseConfig

    def validate(self, item: Item) -> None:
        check_output_options(item.options)
        check_boxes_overlap(item)

    def coarsest_scale(self, item: Item) -> float:
        return pose_decode_scale(item, self.settings.pose)

    def prepare(self, items: list[Item]) -> PoseInputs:
        boxes_all, image_index, counts = person_boxes(items)
        crops, crop_boxes = pose_crops(
            [item.image for item in items],
            boxes_all.to(self.device),
            image_index,
            self.settings.pose,
            [item.scale for item in items],
        )
        image_index = image_index.to(self.device)
        flip = torch.tensor([item.options["flip_test"] for item in items], device=self.device)[image_index]
        return PoseInputs(crops, crop_boxes, boxes_all, counts, flip)

    def forward(self, inputs: PoseInputs) -> Tensor:
        return pose_heatmaps(self.model, inputs.crops, inputs.flip, self.settings.pose)

    def answer(self, items: list[Item], inputs: PoseInputs, heatmaps: Tensor) -> list[Answer]:
        keypoints = pose_keypoints(heatmaps, inputs.crop_boxes, self.settings.pose).cpu()
        per_item = zip(items, inputs.boxes.split(inputs.counts), keypoints.split(inputs.counts))
        return [
            people_answer(
                item,
                pose_people(item_boxes, item_keypoints, item.options),
                replace(POSE_LAYOUT, draw_boxes=item.options["boxes"] is not None),
                self.answer_header,
            )
            for item, item_boxes, item_keypoints in per_item
        ]
