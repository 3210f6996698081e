"""Pose: SimpleBaseline (PoseResNet) on person crops, its config and recipes (``pose_resnet50/101/152``)."""

from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models import resnet50, resnet101, resnet152

from handlers.pose.schema import PoseConfig, PoseSpec

from .archive import Pt2Shapes
from .download import pinned_in_name
from .recipe import CHECKPOINTS, IMAGE_LIMITS, IMAGENET_MEAN, IMAGENET_STD, POSE_SERVING, PartRecipe, Recipe
from .weights import PublishedWeights

RESNETS = {50: resnet50, 101: resnet101, 152: resnet152}


class PoseResNet(nn.Module):
    """SimpleBaseline (Xiao et al. 2018): ResNet, three 4x4 stride-2 deconvs (BN, ReLU), 1x1 conv to heatmaps.

    ``[N, 3, H, W]`` crops to ``[N, num_joints, H / 4, W / 4]`` heatmaps. Attribute names
    match the MSRA release (``conv1``, ``layer1``..``layer4``, ``deconv_layers``,
    ``final_layer``), whose backbone naming is torchvision's.
    """

    def __init__(self, depth: int = 50, num_joints: int = 17, deconv_channels: int = 256):
        super().__init__()
        backbone = RESNETS[depth](weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            backbone.layer1,
            backbone.layer2,
            backbone.layer3,
            backbone.layer4,
        )
        layers: list[nn.Module] = []
        channels = backbone.fc.in_features
        for _ in range(3):
            layers += [
                nn.ConvTranspose2d(channels, deconv_channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(deconv_channels),
                nn.ReLU(inplace=True),
            ]
            channels = deconv_channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(deconv_channels, num_joints, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


def example_crops(batch: int, height: int, width: int, seed: int) -> Tensor:
    """Reproducible normalised-looking inputs for tracing and verification."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator)


# The MSRA SimpleBaseline release, as trained by its own code:
# - images are read with cv2.imread (BGR) and never converted, so the ImageNet
#   statistics are applied to B, G, R channels in that order;
# - the crop maps the box centre to crop pixel index (w/2, h/2), i.e. continuous
#   w/2 + 0.5, and a joint's target peak sits at heatmap index crop_index / 4. In our
#   continuous crop frame (box centre at w/2) heatmap index u is therefore crop
#   point 4u: offset 0 (and flip test realigns by one column, as SHIFT_HEATMAP did).
POSE = PoseSpec(
    crop_size=(256, 192),
    channels="bgr",
    mean=tuple(IMAGENET_MEAN),
    std=tuple(IMAGENET_STD),
    stride=4,
    offset=0.0,
    sigma=2.0,
    refine="dark",
    padding=1.25,
    max_crops_per_forward=64,
)
# The same as model-config.yaml holds it (tests and load tests build archives of their own from these sections).
POSE_CONFIG = POSE.to_config()
SIMPLEBASELINE_INPUT = POSE_CONFIG["input"]
SIMPLEBASELINE_HEATMAP = POSE_CONFIG["heatmap"]

# The pose model sees batches of crops, at most max_crops_per_forward of them per call.
POSE_PT2 = Pt2Shapes(batch=POSE.max_crops_per_forward)


def _pose_crops(batch: int) -> tuple[Tensor, ...]:
    return (example_crops(batch, *POSE.crop_size, seed=batch),)


class RgbTrained(nn.Module):
    """A pose network trained on RGB crops normalised in RGB order (MMPose), fed the crops the handler makes for the
    MSRA release (BGR, the same statistics applied in BGR order): ``[N, 3, H, W]`` -> the network's output.

    Channel c of the RGB crop is channel 2 - c of ours, un-normalised with our statistics and
    normalised with its own: a per-channel affine map, applied before the network (and so before
    its zero padding), which makes the two conventions exactly equivalent.
    """

    def __init__(self, network: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.network = network
        mean_, std_ = torch.tensor(mean), torch.tensor(std)
        self.register_buffer("scale", (std_.flip(0) / std_).view(1, 3, 1, 1))
        self.register_buffer("shift", ((mean_.flip(0) - mean_) / std_).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x.flip(1) * self.scale + self.shift)


def mmpose_to_simplebaseline(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """MMPose 0.x's TopDown layout (``backbone.*``: torchvision's ResNet names; ``keypoint_head.deconv_layers.*``,
    ``keypoint_head.final_layer.*``) to the MSRA release's, which PoseResNet keeps."""
    return {key.removeprefix("backbone.").removeprefix("keypoint_head."): value for key, value in state.items()}


# MMPose's SimpleBaseline COCO 256x192 checkpoints (Apache-2.0), as its model zoo publishes them
# (configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/resnet_coco.md on its 0.x branch); the 8 hex
# characters of each name are the start of the file's sha256 (tools/misc/publish_model.py).
MMPOSE_SIMPLEBASELINE = {
    depth: PublishedWeights(
        url=url,
        sha256=pinned_in_name(url),
        license="Apache-2.0",
        cited="open-mmlab/mmpose configs/body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/resnet_coco.md (0.x)",
        layout="MMPose 0.x TopDown: state_dict with backbone.*, keypoint_head.*; trained on RGB crops",
        adapt=mmpose_to_simplebaseline,
        wrap=partial(RgbTrained, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    )
    for depth, url in (
        (50, "https://download.openmmlab.com/mmpose/top_down/resnet/res50_coco_256x192-ec54d7f3_20200709.pth"),
        (101, "https://download.openmmlab.com/mmpose/top_down/resnet/res101_coco_256x192-6e6babf0_20200708.pth"),
        (152, "https://download.openmmlab.com/mmpose/top_down/resnet/res152_coco_256x192-f6e307c2_20200709.pth"),
    )
}


def pose_part(depth: int, name: str = "model") -> PartRecipe:
    """The SimpleBaseline ResNet-``depth`` model file: MSRA's checkpoint when it is under checkpoints/, else MMPose's
    published one."""
    return PartRecipe(
        name=name,
        build=partial(PoseResNet, depth),
        example_inputs=_pose_crops,
        default_checkpoint=CHECKPOINTS / f"pose_resnet_{depth}_256x192.pth.tar",
        published=(MMPOSE_SIMPLEBASELINE[depth],),
        pt2=POSE_PT2,
    )


def _pose_recipe(depth: int) -> Recipe:
    return Recipe(
        name=f"pose_resnet{depth}",
        parts=(pose_part(depth),),
        handler="handlers.pose.handler",
        config=PoseConfig(pose=POSE, limits=IMAGE_LIMITS),
        serving=POSE_SERVING,
        served_by_default=depth == 50,
    )


RECIPES = (_pose_recipe(50), _pose_recipe(101), _pose_recipe(152))
