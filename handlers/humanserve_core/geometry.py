"""Boxes and axis-aligned crops, batched over every person of a batch.

A crop of size (h, w) cut from box (x1, y1, x2, y2) is the affine map
``x = x1 + u * (x2 - x1) / w``, ``y = y1 + v * (y2 - y1) / h`` from crop coordinates
(u, v) to image coordinates, both continuous (see the package docstring), so the
box alone describes the forward and the inverse map.
"""

from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

from .images import group_by_size


def widen_boxes(boxes: Tensor, aspect_ratio: float, padding: float = 1.25) -> Tensor:
    """Grow ``Tensor[N, 4]`` boxes about their centres to width/height == aspect_ratio, then by padding."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    half_width = torch.maximum(width, height * aspect_ratio) * (padding / 2)
    half_height = torch.maximum(height, width / aspect_ratio) * (padding / 2)
    half = torch.stack([half_width, half_height], dim=1)
    return torch.cat([centre - half, centre + half], dim=1)


def crop_to_image(points: Tensor, boxes: Tensor, crop_size: tuple[int, int]) -> Tensor:
    """Map ``Tensor[N, K, 2]`` crop (x, y) points to image points through each crop's box."""
    scale = (boxes[:, 2:] - boxes[:, :2]) / boxes.new_tensor(crop_size[::-1])
    return boxes[:, None, :2] + points * scale[:, None, :]


def image_to_crop(points: Tensor, boxes: Tensor, crop_size: tuple[int, int]) -> Tensor:
    """Map ``Tensor[N, K, 2]`` image (x, y) points into each crop: the inverse of ``crop_to_image``."""
    scale = boxes.new_tensor(crop_size[::-1]) / (boxes[:, 2:] - boxes[:, :2])
    return (points - boxes[:, None, :2]) * scale[:, None, :]


def crop_and_resize(
    images: Sequence[Tensor], boxes: Tensor, image_index: Tensor, crop_size: tuple[int, int]
) -> Tensor:
    """Cut ``boxes[n]`` from ``images[image_index[n]]`` into ``Tensor[N, C, h, w]`` float crops.

    One bilinear sample per crop pixel at its centre, like ``cv2.warpAffine(INTER_LINEAR)``
    in the top-down pose training pipelines; outside the image reads as 0. Images may
    differ in size: one ``roi_align`` call runs per distinct size, over all its people.
    """
    first = images[0]
    crops = torch.empty(
        (boxes.shape[0], first.shape[0], *crop_size), dtype=torch.float32, device=first.device
    )
    slot = torch.empty(len(images), dtype=torch.long, device=boxes.device)
    for members in group_by_size([image.shape[-2:] for image in images]).values():
        stack = torch.stack([images[m] for m in members]).float()
        slot[members] = torch.arange(len(members), device=boxes.device)
        chosen = torch.isin(image_index, image_index.new_tensor(members)).nonzero().squeeze(1)
        if chosen.numel() == 0:
            continue
        rois = torch.cat([slot[image_index[chosen]].unsqueeze(1).float(), boxes[chosen].float()], 1)
        crops[chosen] = roi_align(
            stack, rois, crop_size, spatial_scale=1.0, sampling_ratio=1, aligned=True
        )
    return crops
