"""Architectures torchvision lacks, named so that the published checkpoints load unchanged."""

import re

import torch
from torch import Tensor, nn
from torchvision.models import resnet50, resnet101, resnet152

RESNETS = {50: resnet50, 101: resnet101, 152: resnet152}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


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


class PixelDetector(nn.Module):
    """A torchvision detection model that takes RGB ``uint8[3, H, W]`` images of any sizes.

    The handler hands over decoded pixels; scaling them to 0..1 here runs on the model's
    device, like the model's own resize and normalisation.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: list[Tensor]) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        losses, detections = self.detector([image.float() / 255 for image in images])
        return losses, detections


def takes_pixels(detector: nn.Module) -> nn.Module:
    """Wrap a torchvision detector to take ``uint8`` RGB images."""
    return PixelDetector(detector)


def person_detector_of_pixels(detector: nn.Module) -> nn.Module:
    """A COCO detector answering people only, taking ``uint8`` RGB images."""
    return takes_pixels(keep_person_class(detector))


def example_images(count: int, seed: int) -> list[Tensor]:
    """Reproducible RGB ``uint8`` images of different sizes, as the archived detection models take them."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(240, 320), (320, 200), (256, 256), (180, 300)]
    return [
        torch.randint(0, 256, (3, *sizes[i % len(sizes)]), generator=generator, dtype=torch.uint8) for i in range(count)
    ]


class PersonLogOdds(nn.Module):
    """A torchvision VOC segmentation model taking RGB ``uint8[N, 3, H, W]`` photos, answering the log-odds of "person".

    ``log p(person) - log p(not person)`` from the 21 class logits; a 1-channel map is
    cheap to resize to the photo, and thresholding it at log(t / (1 - t)) is thresholding
    the person probability at t. The photos are normalised here, on the model's device,
    with the statistics of torchvision's weights (ImageNet's).
    """

    def __init__(self, segmenter: nn.Module, person_label: int = 15, classes: int = 21):
        super().__init__()
        self.segmenter = segmenter
        self.person_label = person_label
        self.register_buffer("others", torch.tensor([c for c in range(classes) if c != person_label]))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def forward(self, images: Tensor) -> Tensor:
        logits = self.segmenter((images.float() - self.mean) / self.std)["out"]
        person = logits[:, self.person_label : self.person_label + 1]
        return person - logits[:, self.others].logsumexp(dim=1, keepdim=True)


def person_log_odds(segmenter: nn.Module) -> nn.Module:
    """Wrap a torchvision VOC segmenter to answer the person log-odds map."""
    return PersonLogOdds(segmenter)


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


def pixel_generator(network: nn.Module) -> nn.Module:
    """Wrap a pix2pix / CycleGAN generator ([-1, 1] in, tanh out) so that it takes and answers ``uint8`` photos."""
    return PixelPictures(network, centre=127.5, scale=127.5)


_INSTANCE_NORM_STATISTICS = re.compile(r"(^|\.)in\d+\.running_(mean|var)$")


def drop_instance_norm_statistics(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The examples' checkpoints carry running statistics of InstanceNorm layers that newer PyTorch neither tracks nor
    accepts."""
    return {key: value for key, value in state.items() if not _INSTANCE_NORM_STATISTICS.search(key)}


def example_photos(batch: int, height: int, width: int, seed: int) -> Tensor:
    """Reproducible RGB ``uint8`` photos, as the archived style networks take them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), generator=generator, dtype=torch.uint8)


# Faces: MTCNN (Zhang et al. 2016) as facenet-pytorch ships its weights, and PyEmotion's FER2013
# expression network. Attribute names match those state dicts. Each network takes pixel values
# (float 0..255) and normalises them itself, and answers one tensor, so every part compiles alike.
MTCNN_PIXEL_CENTRE, MTCNN_PIXEL_SCALE = 127.5, 0.0078125  # (x - 127.5) / 128, as MTCNN was trained


class PNet(nn.Module):
    """MTCNN's proposal network: RGB ``float[N, 3, H, W]`` (0..255) to ``[N, 5, (H - 10) // 2, (W - 10) // 2]``.

    Per 12x12 window at stride 2: the face probability, then the window's box offsets
    (x1, y1, x2, y2) as fractions of its side.
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, pixels: Tensor) -> Tensor:
        x = (pixels - MTCNN_PIXEL_CENTRE) * MTCNN_PIXEL_SCALE
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        face = torch.softmax(self.conv4_1(x), dim=1)[:, 1:]
        return torch.cat([face, self.conv4_2(x)], dim=1)


class RNet(nn.Module):
    """MTCNN's refinement network: RGB ``float[N, 3, 24, 24]`` crops (0..255) to ``[N, 5]``: face probability, box
    offsets."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, crops: Tensor) -> Tensor:
        x = (crops - MTCNN_PIXEL_CENTRE) * MTCNN_PIXEL_SCALE
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The dense layers were trained (in Caffe) on features flattened width-major.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))
        face = torch.softmax(self.dense5_1(x), dim=1)[:, 1:]
        return torch.cat([face, self.dense5_2(x)], dim=1)


class ONet(nn.Module):
    """MTCNN's output network: RGB ``float[N, 3, 48, 48]`` crops (0..255) to ``[N, 15]``.

    Face probability, box offsets (x1, y1, x2, y2), then 5 landmarks (x of each, then y of
    each) as fractions of the crop: eyes (left, right as seen), nose, mouth corners.
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, crops: Tensor) -> Tensor:
        x = (crops - MTCNN_PIXEL_CENTRE) * MTCNN_PIXEL_SCALE
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        face = torch.softmax(self.dense6_1(x), dim=1)[:, 1:]
        return torch.cat([face, self.dense6_2(x), self.dense6_3(x)], dim=1)


def _reflect_conv_block(channels_in: int, channels_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReflectionPad2d(1),
        nn.Conv2d(channels_in, channels_out, 3, stride),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class ExpressionNet(nn.Module):
    """PyEmotion's FER2013 classifier: grey ``float[N, 1, 48, 48]`` faces (0..255) to ``[N, 7]`` sigmoid scores.

    Classes in ``EXPRESSIONS`` order; each score is its own sigmoid, so they need not sum to 1.
    """

    def __init__(self, width: int = 32, classes: int = 7):
        super().__init__()
        self.conv_1 = _reflect_conv_block(1, width, 1)
        self.conv_2 = _reflect_conv_block(width, 2 * width, 2)
        self.conv_3 = _reflect_conv_block(2 * width, 4 * width, 2)
        self.conv_4 = _reflect_conv_block(4 * width, 8 * width, 2)
        self.linear = nn.Sequential(
            nn.Linear(8 * width * 6 * 6, 256), nn.ReLU(inplace=True), nn.Linear(256, classes), nn.Sigmoid()
        )

    def forward(self, faces: Tensor) -> Tensor:
        x = faces / 127.5 - 1.0  # ToTensor then Normalize(0.5, 0.5), as it was trained
        x = self.conv_4(self.conv_3(self.conv_2(self.conv_1(x))))
        return self.linear(x.flatten(1))


EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def example_pixels(batch: int, channels: int, height: int, width: int, seed: int) -> Tensor:
    """Reproducible float pixel values 0..255, as the face networks take them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=generator) * 255


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

    def __init__(
        self,
        blocks: int = 9,
        norm: str = "instance",
        dropout: bool = False,
        width: int = 64,
        channels_in: int = 3,
        channels_out: int = 3,
    ):
        super().__init__()
        layer, bias = GENERATOR_NORMS[norm], norm == "instance"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels_in, width, 7, bias=bias), layer(width), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [
                nn.Conv2d(width * mult, width * mult * 2, 3, stride=2, padding=1, bias=bias),
                layer(width * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(width * 4, layer, bias, dropout) for _ in range(blocks)]
        for mult in (4, 2):
            up = nn.ConvTranspose2d(
                width * mult, width * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
            )
            layers += [up, layer(width * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels_out, 7), nn.Tanh()]
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

    def __init__(
        self,
        downs: int = 8,
        norm: str = "batch",
        dropout: bool = True,
        width: int = 64,
        channels_in: int = 3,
        channels_out: int = 3,
    ):
        super().__init__()
        if downs < 5:
            raise ValueError(f"a U-Net generator has at least 5 down levels, not {downs}")
        layer, bias = GENERATOR_NORMS[norm], norm == "instance"
        level = UnetSkipBlock(width * 8, width * 8, layer, bias)
        for _ in range(downs - 5):
            level = UnetSkipBlock(width * 8, width * 8, layer, bias, level, dropout=dropout)
        for mult in (4, 2, 1):
            level = UnetSkipBlock(width * mult, width * mult * 2, layer, bias, level)
        self.model = UnetSkipBlock(channels_out, width, layer, bias, level, channels_in=channels_in, outermost=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
