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
    mask_answer,
    mask_rle,
    model_inputs,
    person_log_odds,
    picture_answer,
)

# The items' model inputs, grouped by size: (item positions, uint8 photos). Tuples, not
# a class: TorchServe wants exactly one class in a handler module.
SegmenterInputs = list[tuple[list[int], Tensor]]


class PersonSegmenterHandler(VisionHandler):
    """Marks the people of each photo; answers the mask (COCO RLE) or the photo composited over a new background."""

    options = SEGMENTER_OPTIONS
    schema = SegmentationConfig

    def validate(self, item: Item) -> None:
        background_image = check_segmenter_options(item.options, self.limits)
        if background_image is not None:
            item.options["background"] = background_image  # decoded once, before the model runs

    def coarsest_scale(self, item: Item) -> float:
        return self.settings.segmenter.coarsest_scale(item.size, item.options)

    def prepare(self, items: list[Item]) -> SegmenterInputs:
        return model_inputs([item.image for item in items], [item.size for item in items], self.settings.segmenter)

    def forward(self, groups: SegmenterInputs) -> list[Tensor]:
        return person_log_odds(self.model, groups, sum(len(members) for members, _ in groups))

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
