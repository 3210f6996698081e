"""TorchServe handler for fast neural style transfer (Johnson et al.): the photo, restyled."""

from torch import Tensor

from humanserve_core.base import Item, VisionHandler
from humanserve_core.responses import Answer, image_answer
from style import STYLE_OPTIONS, resized_for_style, stylize


class StyleHandler(VisionHandler):
    """Restyles each photo at its own size (at most ``max_side``), photos of equal size in one call."""

    options = STYLE_OPTIONS

    def prepare(self, items: list[Item]) -> list[Tensor]:
        return [resized_for_style(item.image.to(self.device), item.options) for item in items]

    def forward(self, images: list[Tensor]) -> list[Tensor]:
        return stylize(self.model, images)

    def answer(self, items: list[Item], images: list[Tensor], styled: list[Tensor]) -> list[Answer]:
        return [
            image_answer(picture.permute(1, 2, 0).cpu().numpy(), item.options["format"], item.options["quality"])
            for item, picture in zip(items, styled)
        ]
