"""Near-free stand-in models for ``make bench-stack``: each family's real handler and config around a model that costs
almost nothing.

Each stand-in takes and answers exactly what its real model does (shapes, types, value
ranges), so the handler does all of its real work: decoding, crops and resizes, heatmap
decoding, masks, answers. What it computes is cheap and plausible: Gaussian heatmap
peaks, three people per photo, a mask that follows the photo's brightness.
"""

from dataclasses import replace

import torch
from torch import Tensor, nn

from export.archive import Package, Part, Serving
from export.pose import SIMPLEBASELINE_INPUT, example_crops
from export.recipe import example_images, example_photos
from export.registry import RECIPES

STANDIN_WEIGHTS = {
    "source": "stand-in",
    "pretrained": False,
    "reason": "benchmark model: near-free, for measuring the serving stack",
}
# Three people per photo, as fractions of its width and height.
PEOPLE = ((0.05, 0.10, 0.35, 0.95), (0.40, 0.20, 0.60, 0.90), (0.65, 0.05, 0.95, 0.98))


def _gaussian_heatmaps(joints: int, height: int, width: int, sigma: float = 2.0) -> Tensor:
    """``[joints, height, width]`` unit Gaussians at spread-out sub-pixel positions."""
    k = torch.arange(joints, dtype=torch.float32)
    x = 6.3 + (k * 7.7) % (width - 12)
    y = 6.6 + (k * 11.3) % (height - 12)
    grid_y, grid_x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    return torch.exp(-((grid_x - x.view(-1, 1, 1)) ** 2 + (grid_y - y.view(-1, 1, 1)) ** 2) / (2 * sigma**2))


class PoseStandIn(nn.Module):
    """Normalised crops ``[N, 3, 256, 192]`` to heatmaps ``[N, 17, 64, 48]``: the same peaks for every crop."""

    def __init__(self):
        super().__init__()
        self.register_buffer(
            "maps", _gaussian_heatmaps(17, SIMPLEBASELINE_INPUT["height"] // 4, SIMPLEBASELINE_INPUT["width"] // 4)
        )

    def forward(self, crops: Tensor) -> Tensor:
        return self.maps.unsqueeze(0).repeat(crops.shape[0], 1, 1, 1)


class DetectorStandIn(nn.Module):
    """torchvision-style detector (a list of RGB images in 0..1): three people per image, scripted-model output."""

    def __init__(self, keypoints: bool = False):
        super().__init__()
        self.register_buffer("people", torch.tensor(PEOPLE))
        self.register_buffer("scores", torch.tensor([0.98, 0.91, 0.87]))
        self.register_buffer("joints", torch.rand(3, 17, 2))
        self.keypoints = keypoints

    def forward(self, images: list[Tensor]) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        detections = torch.jit.annotate(list[dict[str, Tensor]], [])
        for image in images:
            height, width = image.shape[-2], image.shape[-1]
            size = torch.tensor([width, height, width, height], dtype=torch.float32, device=image.device)
            boxes = self.people * size
            found = {
                "boxes": boxes,
                "labels": torch.ones(3, dtype=torch.long, device=image.device),
                "scores": self.scores,
            }
            if self.keypoints:
                xy = boxes[:, None, :2] + self.joints * (boxes[:, None, 2:] - boxes[:, None, :2])
                found["keypoints"] = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=2)
                found["keypoints_scores"] = torch.full((3, 17), 5.0, device=image.device)
            detections.append(found)
        return {}, detections


class SegmenterStandIn(nn.Module):
    """RGB ``uint8[N, 3, h, w]`` photos to person log-odds ``[N, 1, h, w]``: bright red is "person"."""

    def forward(self, images: Tensor) -> Tensor:
        return images[:, :1].float() - 128


class StyleStandIn(nn.Module):
    """RGB values in 0..255 to the same: the photo, unchanged."""

    def forward(self, photos: Tensor) -> Tensor:
        return photos


def _crops(batch: int) -> tuple[Tensor, ...]:
    return (example_crops(batch, SIMPLEBASELINE_INPUT["height"], SIMPLEBASELINE_INPUT["width"], seed=batch),)


def _images(batch: int) -> tuple[list[Tensor], ...]:
    return (example_images(batch, seed=batch),)


def _photos(batch: int) -> tuple[Tensor, ...]:
    return (example_photos(batch, 101, 134, seed=batch),)


def _segmenter_inputs(batch: int) -> tuple[Tensor, ...]:
    return (example_photos(batch, 520, 600, seed=batch),)


def standin_packages(serving: Serving) -> list[Package]:
    """One archive per handler family, named ``<family>_standin``: the real recipe's handler and config, a stand-in
    model."""
    pose = Part("pose", PoseStandIn(), _crops, STANDIN_WEIGHTS)
    detector = Part("detector", DetectorStandIn(), _images, STANDIN_WEIGHTS, "script", check_batch=2)
    families = {
        "pose": ("pose_resnet50", (replace(pose, name="model"),)),
        "detector": ("person_detector", (replace(detector, name="model"),)),
        "keypoint_rcnn": (
            "keypoint_rcnn",
            (Part("model", DetectorStandIn(keypoints=True), _images, STANDIN_WEIGHTS, "script", check_batch=2),),
        ),
        "pose_pipeline": ("pose_pipeline", (detector, pose)),
        "segmenter": ("person_segmenter", (Part("model", SegmenterStandIn(), _segmenter_inputs, STANDIN_WEIGHTS),)),
        "style": ("style_candy", (Part("model", StyleStandIn(), _photos, STANDIN_WEIGHTS, "script"),)),
        "pix2pix": ("pix2pix_edges2shoes", (Part("model", StyleStandIn(), _photos, STANDIN_WEIGHTS, "script"),)),
    }
    return [
        replace(RECIPES[recipe].package(parts, serving), name=f"{family}_standin")
        for family, (recipe, parts) in families.items()
    ]
