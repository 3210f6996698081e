"""Fast neural style transfer: Johnson et al.'s TransformerNet on ``uint8`` photos, one recipe per style of
``styles.yaml``."""

import re
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from handlers.style.schema import StyleConfig

from .archive import Pt2Shapes
from .recipe import CHECKPOINTS, IMAGE_LIMITS, IMAGE_SERVING, PartRecipe, Recipe, example_photos
from .weights import PublishedWeights

STYLES_FILE = Path(__file__).with_name("styles.yaml")


class ReflectConv(nn.Module):
    """Reflection padding then a convolution: ``ConvLayer`` of the fast-neural-style example."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int, stride: int = 1, upsample: int = 1):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(channels_in, channels_out, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample > 1:
            x = nn.functional.interpolate(x, scale_factor=float(self.upsample), mode="nearest")
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions with instance norm, added to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ReflectConv(channels, channels, 3)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ReflectConv(channels, channels, 3)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.in2(self.conv2(torch.relu(self.in1(self.conv1(x)))))


class TransformerNet(nn.Module):
    """Johnson et al.'s fast style transfer network, with the attribute names of the PyTorch examples' release.

    RGB ``[N, 3, H, W]`` in 0..255 to a stylised image in (about) the same range.
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.in1 = ReflectConv(3, 32, 9), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = ReflectConv(32, 64, 3, stride=2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = ReflectConv(64, 128, 3, stride=2), nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (ResidualBlock(128) for _ in range(5))
        self.deconv1, self.in4 = ReflectConv(128, 64, 3, upsample=2), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = ReflectConv(64, 32, 3, upsample=2), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ReflectConv(32, 3, 9)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.in1(self.conv1(x)))
        y = torch.relu(self.in2(self.conv2(y)))
        y = torch.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = torch.relu(self.in4(self.deconv1(y)))
        y = torch.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class PixelPictures(nn.Module):
    """RGB ``uint8[N, 3, H, W]`` photos in, ``uint8`` pictures of the same size out, for image-to-image networks.

    The network sees ``(pixels - centre) / scale`` and its answer goes back by the same
    mapping: 0..255 as is for the style networks, [-1, 1] for the pix2pix and CycleGAN
    generators (their ``Normalize(0.5, 0.5)`` and tanh). Answers are rounded (the reference
    GAN code truncates, half a level darker on average). Sides must suit the network (the
    handler pads and crops, which keeps the exported program free of size-dependent slicing);
    the conversions run on the model's device.
    """

    def __init__(self, network: nn.Module, centre: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.network, self.centre, self.scale = network, centre, scale

    def forward(self, photos: Tensor) -> Tensor:
        answer = self.network((photos.float() - self.centre) / self.scale)
        return (answer * self.scale + self.centre).clamp(0, 255).round().to(torch.uint8)


def pixel_style(network: nn.Module) -> nn.Module:
    """Wrap a style network (0..255 in and out) so that it takes and answers ``uint8`` photos."""
    return PixelPictures(network)


_INSTANCE_NORM_STATISTICS = re.compile(r"(^|\.)in\d+\.running_(mean|var)$")


def drop_instance_norm_statistics(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The examples' checkpoints carry running statistics of InstanceNorm layers that newer PyTorch neither tracks nor
    accepts."""
    return {key: value for key, value in state.items() if not _INSTANCE_NORM_STATISTICS.search(key)}


# Styled photos: 8 px (style.MIN_SIDE) to 4096 (the largest max_side), padded to multiples of 4.
STYLE_PT2 = Pt2Shapes(sides=(8, 4096), multiple=4)


def published_style(settings: dict) -> tuple[PublishedWeights, ...]:
    """A style's published checkpoint, when styles.yaml names one (no digest is published for them)."""
    if "url" not in settings:
        return ()
    return (
        PublishedWeights(
            url=settings["url"],
            sha256=None,
            license="BSD-3-Clause",
            cited="pytorch/examples fast_neural_style/download_saved_models.py",
            layout="pytorch/examples TransformerNet state dict, stale InstanceNorm running statistics",
            member=settings.get("member"),
            adapt=drop_instance_norm_statistics,
        ),
    )


def _style_recipes() -> tuple[Recipe, ...]:
    styles = yaml.safe_load(STYLES_FILE.read_text())["styles"]
    return tuple(
        Recipe(
            name=f"style_{style}",
            parts=(
                PartRecipe(
                    name="model",
                    build=TransformerNet,
                    example_inputs=lambda batch: (example_photos(batch, 100, 132, seed=batch),),
                    torchscript="script",
                    default_checkpoint=CHECKPOINTS / "style" / f"{style}.pth",
                    adapt_state_dict=drop_instance_norm_statistics,
                    published=published_style(settings),
                    finish=pixel_style,
                    pt2=STYLE_PT2,
                ),
            ),
            handler="handlers.style.handler",
            config=StyleConfig(limits=IMAGE_LIMITS),
            serving=IMAGE_SERVING,
            served_by_default=settings.get("served_by_default", False),
        )
        for style, settings in styles.items()
    )


RECIPES = _style_recipes()
