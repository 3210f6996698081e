"""TorchServe handler for person segmentation (torchvision DeepLabV3 / LR-ASPP): a mask, a cut-out or a new background."""

from torch import Tensor

from humanserve_core.base import Item, VisionHandler
from humanserve_core.responses import Answer
from segmentation import (
    SEGMENTER_OPTIONS,
    SegmenterSpec,
    check_segmenter_options,
    composite,
    feathered,
    mask_answer,
    person_log_odds,
    person_mask,
    picture_answer,
)


class PersonSegmenterHandler(VisionHandler):
    """Marks the people of each photo; answers the mask (COCO RLE) or the photo composited over a new background."""

    options = SEGMENTER_OPTIONS

    def initialize(self, context):
        super().initialize(context)
        self.spec = SegmenterSpec.from_config(self.config)

    def validate(self, item: Item) -> None:
        background_image = check_segmenter_options(item.options, self.limits)
        if background_image is not None:
            item.options["background"] = background_image  # decoded once, before the model runs

    def forward(self, images: list[Tensor]) -> list[Tensor]:
        return person_log_odds(self.model, images, self.spec)

    def answer(self, items: list[Item], images: list[Tensor], log_odds: list[Tensor]) -> list[Answer]:
        answers = []
        for item, image, odds in zip(items, images, log_odds):
            options = item.options
            mask = person_mask(odds, options["threshold"])
            if options["background"] is None:
                answers.append(mask_answer(mask, self.answer_header))
                continue
            picture = composite(image, feathered(mask, options["feather"]), options["background"])
            answers.append(picture_answer(picture, options))
        return answers
