"""Architectures torchvision lacks, named so that the published checkpoints load unchanged."""

import torch
from torch import Tensor, nn
from torchvision.models import resnet50, resnet101, resnet152

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
            backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4,
        )  # fmt: skip
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
