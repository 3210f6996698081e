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


class PersonBoxPredictor(nn.Module):
    """A COCO Faster R-CNN box predictor reduced to background and person, keeping each box's person score.

    The new background logit is the log-sum-exp of every non-person logit, so the 2-way
    softmax gives exactly the person probability of the 91-way one; only person box
    deltas are kept. Post-processing (thresholds, NMS, the 100-detection cap) then spends
    itself on people alone.
    """

    def __init__(self, predictor: nn.Module, person_label: int = 1):
        super().__init__()
        self.predictor = predictor
        classes = predictor.cls_score.out_features
        self.person_label = person_label
        self.register_buffer("others", torch.tensor([c for c in range(classes) if c != person_label]))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        logits, deltas = self.predictor(features)
        person = self.person_label
        two_way = torch.stack([logits[:, self.others].logsumexp(dim=1), logits[:, person]], dim=1)
        return two_way, torch.cat([deltas[:, :4], deltas[:, 4 * person : 4 * person + 4]], dim=1)


def keep_person_class(detector: nn.Module) -> nn.Module:
    """Make a torchvision COCO detector answer people only (label 1), with unchanged person scores."""
    detector.roi_heads.box_predictor = PersonBoxPredictor(detector.roi_heads.box_predictor)
    return detector


def example_images(count: int, seed: int) -> list[Tensor]:
    """Reproducible RGB images in 0..1 of different sizes, as detection models take them."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(240, 320), (320, 200), (256, 256), (180, 300)]
    return [torch.rand(3, *sizes[i % len(sizes)], generator=generator) for i in range(count)]
