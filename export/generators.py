"""Image-to-image generators: pix2pix's U-Net and CycleGAN's ResNet generator on ``uint8`` photos, one recipe per
model of ``generators.yaml``, and a user's own by its family's settings."""

from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from handlers.generators.schema import GeneratorConfig, GeneratorSpec

from .archive import Pt2Shapes
from .recipe import CHECKPOINTS, IMAGE_LIMITS, IMAGE_SERVING, PartRecipe, Recipe, example_photos
from .style import STYLE_PT2, PixelPictures
from .weights import PublishedWeights

GENERATORS_FILE = Path(__file__).with_name("generators.yaml")


def pixel_generator(network: nn.Module) -> nn.Module:
    """Wrap a pix2pix / CycleGAN generator ([-1, 1] in, tanh out) so that it takes and answers ``uint8`` photos."""
    return PixelPictures(network, centre=127.5, scale=127.5)


# Image-to-image generators of the reference pix2pix / CycleGAN code (Isola et al. 2017, Zhu et al.
# 2017; github.com/junyanz/pytorch-CycleGAN-and-pix2pix), built as its nn.Sequential layouts so that
# its latest_net_G.pth state dicts load unchanged. Convolutions carry a bias only before instance
# norm (batch norm has its own shift), as there. Dropout layers keep their places in the layouts and,
# as every layer, run in eval mode: a served generator answers the same photo the same way.


class ReferenceInstanceNorm(nn.InstanceNorm2d):
    """The reference's instance norm (no affine, no running statistics); drops the statistics that checkpoints saved
    before PyTorch 0.4 carry."""

    def __init__(self, channels: int):
        super().__init__(channels, affine=False, track_running_stats=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ImageStatisticsBatchNorm(nn.BatchNorm2d):
    """Batch norm over each image's own statistics: how pix2pix runs at test time (training mode, batches of one).

    The running statistics load with the checkpoint but stay unused; an image's answer does
    not depend on its batch mates.
    """

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


GENERATOR_NORMS = {
    "instance": ReferenceInstanceNorm,
    "batch": nn.BatchNorm2d,
    "batch_image_statistics": ImageStatisticsBatchNorm,
}
# The reference's ngf (channels of the first layer) and its RGB photos in and out: what published checkpoints have.
WIDTH, PHOTO_CHANNELS = 64, 3


def generator_norm(norm: str) -> tuple[type[nn.Module], bool]:
    """The norm layer ``norm`` names, and whether the convolutions before it carry a bias (before instance norm only)."""
    return GENERATOR_NORMS[norm], norm == "instance"


class ResnetBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions with norm (dropout between them when trained so), added to the input."""

    def __init__(self, channels: int, norm: type[nn.Module], bias: bool, dropout: bool):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm(channels), nn.ReLU(True)]
        layers += [nn.Dropout(0.5)] if dropout else []
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm(channels)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: ``[N, 3, H, W]`` in [-1, 1] to tanh pictures of the same size (H, W multiples of 4).

    Reflection pad and 7x7 conv, two stride-2 convs, ``blocks`` residual blocks, two
    stride-2 transposed convs, reflection pad, 7x7 conv, tanh: keys ``model.1.weight`` ...
    """

    def __init__(self, blocks: int = 9, norm: str = "instance", dropout: bool = False):
        super().__init__()
        layer, bias = generator_norm(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(PHOTO_CHANNELS, WIDTH, 7, bias=bias), layer(WIDTH), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(WIDTH * mult, WIDTH * mult * 2, 3, stride=2, padding=1, bias=bias),
                layer(WIDTH * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(WIDTH * 4, layer, bias, dropout) for _ in range(blocks)]
        for mult in (4, 2):
            up = nn.ConvTranspose2d(
                WIDTH * mult, WIDTH * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
            )
            layers += [up, layer(WIDTH * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(WIDTH, PHOTO_CHANNELS, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class UnetSkipBlock(nn.Module):
    """One level of the reference U-Net: down, the levels inside, up; the skip connection concatenates (except
    outermost).

    The reference's leaky ReLU works in place on the level's input, so the skip carries the
    activated input: done explicitly here.
    """

    def __init__(
        self,
        outer: int,
        inner: int,
        norm: type[nn.Module],
        bias: bool,
        inside: nn.Module | None = None,
        channels_in: int | None = None,
        outermost: bool = False,
        dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        down = nn.Conv2d(channels_in or outer, inner, 4, stride=2, padding=1, bias=bias)
        if outermost:
            layers = [
                down,
                inside,
                nn.ReLU(True),
                nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1),
                nn.Tanh(),
            ]
        elif inside is None:  # innermost
            layers = [
                nn.LeakyReLU(0.2),
                down,
                nn.ReLU(True),
                nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias),
                norm(outer),
            ]
        else:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2), down, norm(inner), inside, nn.ReLU(True), up, norm(outer)] + (
                [nn.Dropout(0.5)] if dropout else []
            )
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        x = self.model[0](x)
        return torch.cat([x, self.model[1:](x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix's U-Net: ``[N, 3, S, S]`` in [-1, 1] to tanh pictures of that size, S = 2 ** ``downs`` (256 for 8).

    Keys nest one ``model.model.`` per level: ``model.model.0.weight``, ``model.model.1.model.1.weight`` ...
    """

    def __init__(self, downs: int = 8, norm: str = "batch", dropout: bool = True):
        super().__init__()
        if downs < 5:
            raise ValueError(f"a U-Net generator has at least 5 down levels, not {downs}")
        layer, bias = generator_norm(norm)
        level = UnetSkipBlock(WIDTH * 8, WIDTH * 8, layer, bias)
        for _ in range(downs - 5):
            level = UnetSkipBlock(WIDTH * 8, WIDTH * 8, layer, bias, level, dropout=dropout)
        for mult in (4, 2, 1):
            level = UnetSkipBlock(WIDTH * mult, WIDTH * mult * 2, layer, bias, level)
        self.model = UnetSkipBlock(
            PHOTO_CHANNELS, WIDTH, layer, bias, level, channels_in=PHOTO_CHANNELS, outermost=True
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


# pix2pix's U-Net sees its trained size only (the handler resizes); a batch of up to the archive's batch size.
UNET_PT2 = Pt2Shapes()


def drop_untracked_norm_statistics(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The reference's released generators were saved before PyTorch 0.4 stopped tracking InstanceNorm's running
    statistics: a norm layer's ``running_mean`` / ``running_var`` / ``num_batches_tracked`` without a ``weight``
    beside them (InstanceNorm without affine parameters) are dropped, as the reference's own loader does."""
    untracked = (".running_mean", ".running_var", ".num_batches_tracked")
    return {
        key: value
        for key, value in state.items()
        if not (key.endswith(untracked) and f"{key.rsplit('.', 1)[0]}.weight" not in state)
    }


def published_generator(url: str | None) -> tuple[PublishedWeights, ...]:
    """A generator's published ``latest_net_G.pth``, when generators.yaml names its URL (no digest is published)."""
    if url is None:
        return ()
    return (
        PublishedWeights(
            url=url,
            sha256=None,
            license="BSD",
            cited="junyanz/pytorch-CycleGAN-and-pix2pix scripts/download_{cyclegan,pix2pix}_model.sh",
            layout="the reference implementation's generator state dict (model.*), pre-0.4 norm statistics",
            adapt=drop_untracked_norm_statistics,
        ),
    )


def generator_recipe(name: str, settings: dict[str, Any]) -> Recipe:
    """The recipe of a pix2pix / CycleGAN generator from its ``generators.yaml`` settings (``ValueError`` naming a bad
    one)."""
    known = {"architecture", "blocks", "size", "norm", "batch_statistics", "dropout", "served_by_default", "url"}
    if set(settings) - known:
        raise ValueError(
            f"{GENERATORS_FILE.name}: {name} has unknown settings {sorted(set(settings) - known)}; known: {sorted(known)}"
        )
    if not all(isinstance(settings.get(flag, False), bool) for flag in ("dropout", "served_by_default")):
        raise ValueError(f"{GENERATORS_FILE.name}: {name}: dropout and served_by_default are true or false")
    architecture, norm, size = settings.get("architecture"), settings.get("norm"), settings.get("size")
    if norm not in ("instance", "batch") or settings.get("batch_statistics", "image") not in ("image", "running"):
        raise ValueError(
            f"{GENERATORS_FILE.name}: {name}: norm is instance or batch, batch_statistics image or running"
        )
    layer = (
        "batch_image_statistics" if norm == "batch" and settings.get("batch_statistics", "image") == "image" else norm
    )
    dropout = settings.get("dropout", False)
    if architecture == "resnet" and settings.get("blocks") in (6, 9) and size == "any":
        build = partial(ResnetGenerator, blocks=settings["blocks"], norm=layer, dropout=dropout)
        example, pt2, side = (100, 132), STYLE_PT2, None
    elif architecture == "unet" and size in (128, 256):
        build = partial(UnetGenerator, downs=size.bit_length() - 1, norm=layer, dropout=dropout)
        example, pt2, side = (size, size), UNET_PT2, size
    else:
        raise ValueError(
            f"{GENERATORS_FILE.name}: {name}: architecture resnet with blocks 6 or 9 and size any, or unet with size 128 or 256"
        )
    return Recipe(
        name=name,
        parts=(
            PartRecipe(
                name="model",
                build=build,
                example_inputs=lambda batch: (example_photos(batch, *example, seed=batch),),
                default_checkpoint=CHECKPOINTS / "generators" / f"{name}.pth",
                published=published_generator(settings.get("url")),
                finish=pixel_generator,
                pt2=pt2,
            ),
        ),
        handler="handlers.generators.handler",
        config=GeneratorConfig(generator=GeneratorSpec(architecture, side), limits=IMAGE_LIMITS),
        serving=IMAGE_SERVING,
        served_by_default=settings.get("served_by_default", False),
    )


def own_generator_recipe(name: str) -> Recipe | None:
    """A user's own generator named after its family (``cyclegan_*``, ``pix2pix_*``), with the family's settings;
    None for any other name."""
    families = yaml.safe_load(GENERATORS_FILE.read_text())["families"]
    family, _, own = name.partition("_")
    if family in families and own:
        return generator_recipe(name, families[family])
    return None


RECIPES = tuple(
    generator_recipe(name, settings)
    for name, settings in yaml.safe_load(GENERATORS_FILE.read_text())["generators"].items()
)
