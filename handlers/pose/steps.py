"""Top-down pose steps on whole batches: boxes to crops, crops to heatmaps, heatmaps to answers.

``pose_handler.PoseHandler`` wires them into the life cycle; a detect-then-pose handler
composes them with a detector. (TorchServe wants exactly one class in a handler module,
so the steps and their data classes live here.)
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from handlers.core.base import Item
from handlers.core.errors import RequestError
from handlers.core.images import normalize
from handlers.pose.schema import PoseSpec
from handlers.vision.geometry import crop_and_resize, widen_boxes
from handlers.vision.heatmaps import decode_heatmaps, flip_back
from handlers.vision.keypoints import COCO_KEYPOINTS, COCO_SKELETON, mirror_index
from handlers.vision.people import Layout, People, output_format, ranked

MAX_BOXES = 64
MIRROR = torch.tensor(mirror_index(COCO_KEYPOINTS))
POSE_LAYOUT = Layout(COCO_KEYPOINTS, COCO_SKELETON)


@dataclass
class PoseInputs:
    """Crops of every person of a batch and how to map their heatmaps back."""

    crops: Tensor  # [N, 3, h, w] normalised
    crop_boxes: Tensor  # [N, 4] image region each crop covers
    boxes: Tensor  # [N, 4] person boxes as given (or the whole image)
    counts: list[int]  # people per item
    flip: Tensor  # [N] bool: flip test wanted


def person_boxes(items: list[Item]) -> tuple[Tensor, Tensor, list[int]]:
    """Each item's ``boxes`` option (or its whole image) as ``Tensor[N, 4]``, their item index ``[N]`` and counts."""
    per_item = [
        item.options["boxes"] if item.options["boxes"] is not None else [[0.0, 0.0, item.size[1], item.size[0]]]
        for item in items
    ]
    counts = [len(b) for b in per_item]
    flat = [box for b in per_item for box in b]
    boxes_tensor = torch.tensor(flat, dtype=torch.float32).view(-1, 4)
    return boxes_tensor, torch.repeat_interleave(torch.arange(len(items)), torch.tensor(counts)), counts


def crop_boxes_of(boxes: Tensor, spec: PoseSpec) -> Tensor:
    """The image region each person's crop covers: ``boxes[N, 4]`` widened to the crop's aspect ratio and padded."""
    height, width = spec.crop_size
    return widen_boxes(boxes, width / height, spec.padding)


def coarsest_pose_scale(item: Item, spec: PoseSpec) -> float:
    """Image pixels per crop pixel of the item's most finely sampled person: the coarsest decode its crops allow.

    The height of each crop region (``crop_boxes_of``) in plain floats: one request's few
    boxes cost more as tensors than as numbers.
    """
    height, width = spec.crop_size
    boxes = item.options["boxes"] if item.options["boxes"] is not None else [[0.0, 0.0, item.size[1], item.size[0]]]
    if not boxes:
        return math.inf  # nobody to crop
    return min(max(y2 - y1, (x2 - x1) * height / width) for x1, y1, x2, y2 in boxes) * spec.padding / height


def pose_decode_scale(item: Item, spec: PoseSpec) -> float:
    """How coarsely the item may be decoded for its crops: 1 when the answer is the whole picture."""
    return 1.0 if output_format(item.options) in ("jpeg", "png") else coarsest_pose_scale(item, spec)


def given_people(boxes: list[list[float]]) -> People:
    """People at boxes a request gives, in its order, each sure (score 1): no detector runs for them."""
    boxes_tensor = torch.tensor(boxes, dtype=torch.float32).view(-1, 4)
    return People(boxes_tensor, torch.ones(len(boxes_tensor)))


def pose_crops(
    images: list[Tensor], boxes: Tensor, image_index: Tensor, spec: PoseSpec, scales: Sequence[int] = ()
) -> tuple[Tensor, Tensor]:
    """Cut each person's crop from its image (decoded at ``scales``) and normalise: ``(crops[N, 3, h, w], crop_boxes[N,
    4])``."""
    crop_boxes = crop_boxes_of(boxes, spec)
    crops = crop_and_resize(images, crop_boxes, image_index, spec.crop_size, scales)
    return normalize(crops.to(boxes.device), spec.mean, spec.std, spec.channels), crop_boxes


def pose_heatmaps(model: torch.nn.Module, crops: Tensor, flip: Tensor, spec: PoseSpec) -> Tensor:
    """Heatmaps ``[N, K, h, w]``; rows with ``flip`` average in their mirrored crop's maps (one model pass)."""
    flipped = bool(flip.any())
    both = torch.cat([crops, crops[flip].flip(-1)]) if flipped else crops
    chunks = [model(chunk) for chunk in both.split(spec.max_crops_per_forward)]
    maps = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    if not flipped:
        return maps
    heatmaps, mirrored = maps[: crops.shape[0]], maps[crops.shape[0] :]
    heatmaps[flip] = (heatmaps[flip] + flip_back(mirrored, MIRROR, spec.flip_shift)) / 2
    return heatmaps


def pose_keypoints(heatmaps: Tensor, crop_boxes: Tensor, spec: PoseSpec) -> Tensor:
    """Keypoints ``[N, K, 3]`` (x, y, score) in image pixels."""
    return decode_heatmaps(heatmaps, crop_boxes, spec.crop_size, spec.stride, spec.offset, spec.refine, spec.sigma)


def pose_people(boxes: Tensor, keypoints: Tensor, options: Mapping[str, Any]) -> People:
    """One image's people from given boxes: scored by their mean joint score, ranked and filtered."""
    scores = keypoints[:, :, 2].mean(dim=1)
    order = ranked(scores, options)
    return People(boxes[order], scores[order], keypoints[order])


def check_boxes_overlap(item: Item) -> None:
    """Every given box must overlap the image (it may extend past its edges)."""
    height, width = item.size
    for index, (x1, y1, x2, y2) in enumerate(item.options["boxes"] or []):
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            raise RequestError(
                f"boxes[{index}] = {[x1, y1, x2, y2]} lies outside the {width}x{height} image",
                "InvalidOption",
            )
