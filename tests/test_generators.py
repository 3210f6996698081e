"""pix2pix / CycleGAN generators: the published checkpoints' layouts load strictly, and the networks compute as the
reference does."""

import subprocess
import sys
import zipfile

import pytest
import torch
import yaml
from torch import nn

from export.archive import REPO
from export.generators import ResnetGenerator, UnetGenerator, generator_recipe, pixel_generator


def resnet_9blocks_layout(stale_statistics: bool = False) -> dict[str, tuple[int, ...]]:
    """``latest_net_G.pth`` of a published CycleGAN (resnet_9blocks, instance norm), written out from the reference's
    layer list.

    model.0 pad, 1 conv 7x7, 2 norm, 3 relu; 4/7 stride-2 convs; 10-18 residual blocks (conv_block.1 and .5
    convs); 19/22 transposed convs; 25 pad, 26 conv 7x7, 27 tanh. Convs carry biases (instance norm has none).
    ``stale_statistics``: as saved by PyTorch before 0.4, with running statistics at every instance norm.
    """
    # (conv, weight shape, output channels: its bias's length); a transposed conv's weight is (in, out, ...).
    convs = [
        ("model.1", (64, 3, 7, 7), 64),
        ("model.4", (128, 64, 3, 3), 128),
        ("model.7", (256, 128, 3, 3), 256),
        ("model.19", (256, 128, 3, 3), 128),
        ("model.22", (128, 64, 3, 3), 64),
        ("model.26", (3, 64, 7, 7), 3),
    ]
    convs += [(f"model.{block}.conv_block.{conv}", (256, 256, 3, 3), 256) for block in range(10, 19) for conv in (1, 5)]
    layout = {}
    for conv, weight, channels in convs:
        layout[f"{conv}.weight"], layout[f"{conv}.bias"] = weight, (channels,)
    if stale_statistics:
        norms = {"model.2": 64, "model.5": 128, "model.8": 256, "model.20": 128, "model.23": 64}
        norms.update({f"model.{block}.conv_block.{n}": 256 for block in range(10, 19) for n in (2, 6)})
        for prefix, channels in norms.items():
            layout[f"{prefix}.running_mean"] = layout[f"{prefix}.running_var"] = (channels,)
    return layout


def unet_256_layout() -> dict[str, tuple[int, ...]]:
    """``latest_net_G.pth`` of a published pix2pix (unet_256, batch norm), written out level by level.

    Outermost: model.model.0 down conv, .1 the next level, .3 transposed conv (biased), .4 tanh. Middle
    levels: .0 leaky relu, .1 down conv, .2 norm, .3 the next level, .5 transposed conv, .6 norm (.7 dropout).
    Innermost: .1 down conv, .3 transposed conv, .4 norm. No conv biases (batch norm shifts).
    """
    layout = {"model.model.0.weight": (64, 3, 4, 4), "model.model.3.weight": (128, 3, 4, 4), "model.model.3.bias": (3,)}

    def norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{name}"] = (channels,)
        layout[f"{prefix}.num_batches_tracked"] = ()

    prefix = "model.model.1.model"
    for outer, inner in ((64, 128), (128, 256), (256, 512), (512, 512), (512, 512), (512, 512)):
        layout[f"{prefix}.1.weight"] = (inner, outer, 4, 4)
        norm(f"{prefix}.2", inner)
        layout[f"{prefix}.5.weight"] = (inner * 2, outer, 4, 4)
        norm(f"{prefix}.6", outer)
        prefix += ".3.model"
    layout[f"{prefix}.1.weight"] = (512, 512, 4, 4)
    layout[f"{prefix}.3.weight"] = (512, 512, 4, 4)
    norm(f"{prefix}.4", 512)
    return layout


def published(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        key: torch.tensor(7)
        if key.endswith("num_batches_tracked")
        else (
            0.5 + torch.rand(shape, generator=generator)
            if key.endswith("running_var")
            else 0.05 * torch.randn(shape, generator=generator)
        )
        for key, shape in layout.items()
    }


@pytest.mark.parametrize("stale_statistics", [False, True])
def test_resnet_generator_loads_the_published_cyclegan_layout(stale_statistics):
    network = ResnetGenerator(blocks=9, norm="instance")
    state = published(resnet_9blocks_layout(stale_statistics))
    network.load_state_dict(state, strict=True)
    assert network.model[26].weight.equal(state["model.26.weight"])
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == resnet_9blocks_layout()


@pytest.mark.parametrize("norm", ["batch", "batch_image_statistics"])
def test_unet_generator_loads_the_published_pix2pix_layout(norm):
    network = UnetGenerator(downs=8, norm=norm)
    state = published(unet_256_layout())
    network.load_state_dict(state, strict=True)
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == unet_256_layout()
    # Saved by PyTorch before 0.4.1: no num_batches_tracked, which batch norm then fills in.
    UnetGenerator(downs=8, norm=norm).load_state_dict(
        {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, strict=True
    )


def test_a_layout_that_does_not_fit_is_refused():
    state = published(resnet_9blocks_layout())
    with pytest.raises(RuntimeError, match="size mismatch"):
        ResnetGenerator(blocks=6).load_state_dict(state, strict=True)  # 9 blocks into 6: unexpected keys too
    with pytest.raises(RuntimeError, match="Missing key"):
        ResnetGenerator(blocks=9, norm="batch").load_state_dict(state, strict=True)


def test_generators_keep_the_picture_size_and_tanh_range():
    resnet = ResnetGenerator(blocks=6).eval()
    for height, width in ((64, 96), (36, 52)):
        out = resnet(torch.rand(2, 3, height, width) * 2 - 1)
        assert out.shape == (2, 3, height, width) and out.abs().max() <= 1
    unet = UnetGenerator(downs=7).eval()  # unet_128
    out = unet(torch.rand(1, 3, 128, 128) * 2 - 1)
    assert out.shape == (1, 3, 128, 128) and out.abs().max() <= 1


def test_image_statistics_batch_norm_is_training_mode_batch_norm_on_each_photo_alone():
    torch.manual_seed(0)
    served = UnetGenerator(downs=6, norm="batch_image_statistics").eval()
    reference = UnetGenerator(downs=6, norm="batch")
    for layer in served.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.weight.data.uniform_(0.5, 1.5), layer.bias.data.uniform_(-0.2, 0.2), layer.running_mean.fill_(3.0)
    reference.load_state_dict(served.state_dict())
    reference.train()
    for layer in reference.modules():  # the reference's test.py: training mode, so dropout would be on; we serve it off
        if isinstance(layer, nn.Dropout):
            layer.eval()
    photos = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        batched = served(photos)
        alone = torch.cat([reference(photo[None]) for photo in photos])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def test_unet_skip_connections_carry_the_leaky_activated_input():
    """The reference's in-place leaky ReLU changes what the skip connection concatenates: so must ours."""
    level = UnetGenerator(downs=5).model.model[1]  # the first inner level
    x = torch.randn(1, 64, 16, 16)
    out = level(x)
    torch.testing.assert_close(out[:, :64], nn.functional.leaky_relu(x, 0.2))


def test_pixel_generator_maps_pixels_to_minus_one_one_and_back():
    class Echo(nn.Module):
        def forward(self, x):
            self.seen = x
            return x

    echo = Echo()
    photos = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    assert pixel_generator(echo)(photos).equal(photos)
    assert echo.seen.min() == -1 and echo.seen.max() == 1


@pytest.mark.parametrize(
    "name, layout, network, side",
    [
        (
            "cyclegan_mine",
            resnet_9blocks_layout(stale_statistics=True),
            lambda: ResnetGenerator(blocks=9, norm="instance"),
            68,
        ),
        ("pix2pix_mine", unet_256_layout(), lambda: UnetGenerator(downs=8, norm="batch_image_statistics"), 256),
    ],
)
def test_a_published_checkpoint_exports_under_its_family_name(tmp_path, name, layout, network, side):
    checkpoint = tmp_path / "latest_net_G.pth"
    state = published(layout, seed=3)
    torch.save(state, checkpoint)
    store = tmp_path / "store"
    command = [
        sys.executable,
        "-m",
        "export",
        name,
        "--checkpoint",
        str(checkpoint),
        "--format",
        "torchscript",
        "--store",
        str(store),
    ]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    with zipfile.ZipFile(store / f"{name}.mar") as archive:
        config = yaml.safe_load(archive.read("model-config.yaml"))
        archive.extract("model.pt", tmp_path)
    weights = config["handler"]["weights"]["model"]
    assert (weights["source"], weights["pretrained"], weights["file"]) == ("checkpoint", True, "latest_net_G.pth")
    assert config["handler"]["generator"] == {
        "architecture": "resnet" if name.startswith("cyclegan") else "unet",
        "size": None if side != 256 else 256,
    }
    reference = network().eval()
    reference.load_state_dict(state)
    photos = torch.randint(0, 256, (2, 3, side, side), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        expected, served = pixel_generator(reference)(photos), torch.jit.load(tmp_path / "model.pt")(photos)
    assert (expected.int() - served.int()).abs().max() <= 1


def test_generator_names_and_settings_are_checked(tmp_path):
    for name in ("pix2pix", "pix2pix_", "stylegan_mine"):
        refused = subprocess.run(
            [sys.executable, "-m", "export", name, "--store", str(tmp_path)], cwd=REPO, capture_output=True, text=True
        )
        assert (
            refused.returncode == 2 and f"unknown model {name!r}" in refused.stderr and "pix2pix_NAME" in refused.stderr
        )
    for settings, words in (
        ({"architecture": "unet", "size": 300, "norm": "batch"}, "unet with size 128 or 256"),
        ({"architecture": "resnet", "blocks": 9, "size": "any", "norm": "group"}, "norm is instance or batch"),
        (
            {"architecture": "resnet", "blocks": 9, "size": "any", "norm": "instance", "padding": "zero"},
            "unknown settings ['padding']",
        ),
        (
            {"architecture": "resnet", "blocks": 9, "size": "any", "norm": "instance", "dropout": "false"},
            "dropout and served_by_default are true or false",
        ),
    ):
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            generator_recipe("cyclegan_x", settings)
