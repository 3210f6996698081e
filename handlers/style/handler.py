"""TorchServe handler for fast neural style transfer (Johnson et al.): the photo, restyled."""

from torch import Tensor

from handlers.core.answers import Answer, image_answer
from handlers.core.base import Item, VisionHandler
from handlers.style.schema import StyleConfig
from handlers.style.steps import STYLE_OPTIONS, check_style_size, coarsest_style_scale, resized_for_style, stylize


class StyleHandler(VisionHandler):
    """Restyles each photo at its own size (at most ``max_side``), photos of equal size in one call."""

    v2_output_names = ("picture",)

    options = STYLE_OPTIONS
    schema = StyleConfig

    def validate(self, item: Item) -> None:
        check_style_size(item.size, item.options)

    def coarsest_scale(self, item: Item) -> float:
        return coarsest_style_scale(item.size, item.options)

    def prepare(self, items: list[Item]) -> list[Tensor]:
        return [resized_for_style(item.image, item.size, item.options) for item in items]

    def forward(self, images: list[Tensor]) -> list[Tensor]:
        return stylize(self.model, images)

    def answer(self, items: list[Item], images: list[Tensor], styled: list[Tensor]) -> list[Answer]:
        return [
            image_answer(picture, item.options["format"], item.options["quality"], item.options["png_compression"])
            for item, picture in zip(items, styled)
        ]
