"""TorchServe handler for image-to-image generators (pix2pix's U-Net, CycleGAN's ResNet generator): the photo,
translated."""

from torch import Tensor

from handlers.core.answers import Answer
from handlers.core.base import Item
from handlers.core.images import resize_pixels
from handlers.generators.schema import GeneratorConfig
from handlers.style.handler import StyleHandler
from handlers.style.steps import TRAINED_SIZE_OPTIONS, answer_sizes, coarsest_trained_size_scale


class GeneratorHandler(StyleHandler):
    """Style transfer's life cycle; a generator trained at one size sees its photos resized to it, and answers at
    theirs.

    A ResNet generator takes any size, as the style networks do.
    """

    schema = GeneratorConfig

    def initialize(self, context):
        super().initialize(context)
        self.trained_side = self.settings.generator.size  # None: any size
        if self.trained_side:
            self.options = TRAINED_SIZE_OPTIONS

    def coarsest_scale(self, item: Item) -> float:
        if self.trained_side:
            return coarsest_trained_size_scale(item.size, self.trained_side)
        return super().coarsest_scale(item)

    def prepare(self, items: list[Item]) -> list[Tensor]:
        if self.trained_side:
            return [resize_pixels(item.image, (self.trained_side, self.trained_side)) for item in items]
        return super().prepare(items)

    def answer(self, items: list[Item], images: list[Tensor], translated: list[Tensor]) -> list[Answer]:
        if self.trained_side:
            translated = answer_sizes(translated, [item.size for item in items], [item.options for item in items])
        return super().answer(items, images, translated)
