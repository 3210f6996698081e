"""TorchServe handler for person segmentation (torchvision DeepLabV3 / LR-ASPP): a mask, a cut-out or a new
background."""

from torch import Tensor

from handlers.core.answers import Answer
from handlers.core.base import Item, VisionHandler
from handlers.segmentation.schema import SegmentationConfig
from handlers.segmentation.steps import (
    SEGMENTER_OPTIONS,
    alpha_matte,
    check_segmenter_options,
    composite,
    gate_people,
    mask_answer,
    mask_rle,
    model_inputs,
    person_log_odds,
    picture_answer,
)

# The items' model inputs grouped by size, (item positions, uint8 photos), and the photos, sizes and decode scales the
# person gate sees. Tuples, not a class: TorchServe wants exactly one class in a handler module.
SegmenterInputs = tuple[list[tuple[list[int], Tensor]], list[Tensor], list[tuple[int, int]], list[int]]


class PersonSegmenterHandler(VisionHandler):
    """Marks the people of each photo; answers the mask (COCO RLE) or the photo composited over a new background."""

    v2_output_names = ("answer", "masks", "mask_sizes", "picture")

    options = SEGMENTER_OPTIONS
    schema = SegmentationConfig

    def initialize(self, context):
        super().initialize(context)
        self.person_detector = self.load_part("detector") if self.settings.person_gate is not None else None

    def validate(self, item: Item) -> None:
        background_image = check_segmenter_options(item.options, self.limits)
        if background_image is not None:
            item.options["background"] = background_image  # decoded once, before the model runs

    def coarsest_scale(self, item: Item) -> float:
        return self.settings.segmenter.coarsest_scale(item.size, item.options)

    def prepare(self, items: list[Item]) -> SegmenterInputs:
        images, sizes = [item.image for item in items], [item.size for item in items]
        return model_inputs(images, sizes, self.settings.segmenter), images, sizes, [item.scale for item in items]

    def forward(self, inputs: SegmenterInputs) -> list[Tensor]:
        groups, images, sizes, scales = inputs
        log_odds = person_log_odds(self.model, groups, len(images))
        if self.person_detector is None:
            return log_odds
        return gate_people(log_odds, self.person_detector, images, sizes, scales, self.settings.person_gate)

    def answer(self, items: list[Item], inputs: SegmenterInputs, log_odds: list[Tensor]) -> list[Answer]:
        answers = []
        for item, odds in zip(items, log_odds):
            options = item.options
            if options["background"] is None:
                answers.append(mask_answer(mask_rle(odds, item.size, options["threshold"]), self.answer_header))
                continue
            alpha = alpha_matte(odds, item.size, options["threshold"], options["feather"])
            picture = composite(item.image, alpha, options["background"])
            answers.append(picture_answer(picture, options))
        return answers
