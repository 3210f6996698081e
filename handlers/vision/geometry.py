"""Boxes and crops, axis-aligned or rotated, batched over every person of a batch.

A crop of size (h, w) cut from box (x1, y1, x2, y2) is the affine map
``x = x1 + u * (x2 - x1) / w``, ``y = y1 + v * (y2 - y1) / h`` from crop coordinates
(u, v) to image coordinates, both continuous (see the package docstring), so the
box alone describes the forward and the inverse map. A rotated crop is any such map,
``[x, y] = A [u, v] + t``, held as a ``[2, 3]`` matrix ``[A | t]``.
"""

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision.ops import roi_align

from handlers.core.images import channels_last, group_by_size


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
    images: Sequence[Tensor], boxes: Tensor, image_index: Tensor, crop_size: tuple[int, int], scales: Sequence[int] = ()
) -> Tensor:
    """Cut ``boxes[n]`` from ``images[image_index[n]]`` into ``Tensor[N, C, h, w]`` crops with values 0..255.

    Boxes are in image pixels; ``scales[i]`` says how many image pixels one pixel of
    ``images[i]`` covers (1 when not given; see ``images.dct_scale``). One bilinear sample
    per crop pixel at its centre, like ``cv2.warpAffine(INTER_LINEAR)`` in the top-down
    pose training pipelines; outside the image reads as 0. On the CPU, one OpenCV warp per
    box on the uint8 pixels gives uint8 crops (2-5x faster than ``roi_align``, which needs a
    float copy of the image); elsewhere one ``roi_align`` call per distinct image size, over
    all its people, gives float crops.
    """
    decoded_boxes = boxes / boxes.new_tensor(list(scales) or [1.0] * len(images))[image_index].unsqueeze(1)
    if images[0].device.type == "cpu":
        return warp_crops(images, decoded_boxes, image_index, crop_size)
    return roi_crops(images, decoded_boxes, image_index, crop_size)


def roi_crops(images: Sequence[Tensor], boxes: Tensor, image_index: Tensor, crop_size: tuple[int, int]) -> Tensor:
    """``crop_and_resize`` on any device, boxes in pixels of ``images``: float crops, one ``roi_align`` per image
    size."""
    first = images[0]
    crops = torch.empty((boxes.shape[0], first.shape[0], *crop_size), dtype=torch.float32, device=first.device)
    slot = torch.empty(len(images), dtype=torch.long, device=boxes.device)
    for members in group_by_size([image.shape[-2:] for image in images]).values():
        stack = torch.stack([images[m] for m in members]).float()
        slot[members] = torch.arange(len(members), device=boxes.device)
        chosen = torch.isin(image_index, image_index.new_tensor(members)).nonzero().squeeze(1)
        if chosen.numel() == 0:
            continue
        rois = torch.cat([slot[image_index[chosen]].unsqueeze(1).float(), boxes[chosen].float()], 1)
        crops[chosen] = roi_align(stack, rois, crop_size, spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return crops


def warp_crops(images: Sequence[Tensor], boxes: Tensor, image_index: Tensor, crop_size: tuple[int, int]) -> Tensor:
    """``crop_and_resize`` on the CPU, boxes in pixels of ``images``: crops of the images' dtype, one OpenCV warp each.

    The result is a channels-first view of channels-last crops. An RGB view of an RGBX
    buffer (``images.channels_last``) is warped with its padding channel, which OpenCV
    samples 2.7x faster than 3 channels, and the crop then drops it.
    """
    height, width = crop_size
    pixels = [channels_last(image) for image in images]  # no copy when channels-last
    channels = images[0].shape[0]
    crops = np.empty((len(boxes), height, width, channels), dtype=pixels[0].dtype)
    padded = np.empty((height, width, 4), dtype=pixels[0].dtype)
    for n, ((x1, y1, x2, y2), i) in enumerate(zip(boxes.tolist(), image_index.tolist())):
        step_x, step_y = (x2 - x1) / width, (y2 - y1) / height
        # Crop pixel index j has its centre at x1 + (j + 0.5) * step_x, image pixel index u at u + 0.5.
        source = np.array([[step_x, 0.0, x1 + 0.5 * step_x - 0.5], [0.0, step_y, y1 + 0.5 * step_y - 0.5]])
        rgbx = pixels[i].shape[2] > channels
        cv2.warpAffine(
            pixels[i],
            source,
            (width, height),
            dst=padded if rgbx else crops[n],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        if rgbx:
            cv2.cvtColor(padded, cv2.COLOR_RGBA2RGB, dst=crops[n])
    return torch.from_numpy(crops).permute(0, 3, 1, 2)


def square_crop_affines(centres: Tensor, sides: Tensor, angles: Tensor, crop_size: tuple[int, int]) -> Tensor:
    """``[N, 2, 3]`` maps from crop to image coordinates of squares with ``centres[N, 2]``, ``sides[N]`` (image
    pixels) and ``angles[N]`` (radians; positive turns the crop's axes clockwise on the image, y pointing down).

    The crop's centre lands on the square's centre and its axes on the square's rotated sides.
    """
    height, width = crop_size
    cos, sin = angles.cos(), angles.sin()
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], dim=-2)
    linear = linear * (sides[:, None, None] / sides.new_tensor([width, height]))
    translation = centres - (linear @ sides.new_tensor([width / 2, height / 2]))
    return torch.cat([linear, translation[:, :, None]], dim=2)


def apply_affines(points: Tensor, affines: Tensor) -> Tensor:
    """``points[N, K, 2]`` through each of ``affines[N, 2, 3]``."""
    return points @ affines[:, :, :2].transpose(1, 2) + affines[:, None, :, 2]


def invert_affines(affines: Tensor) -> Tensor:
    """The inverse maps of ``affines[N, 2, 3]``."""
    inverse = torch.linalg.inv(affines[:, :, :2])
    return torch.cat([inverse, -(inverse @ affines[:, :, 2:])], dim=2)


def pixel_index_maps(affines: Tensor) -> np.ndarray:
    """``affines[N, 2, 3]`` between continuous coordinates as the same maps between pixel indices (OpenCV's): index
    j has its centre at j + 0.5 on both sides, so ``[A | t]`` becomes ``[A | A (0.5, 0.5) + t - 0.5]``."""
    maps = affines.double().cpu().numpy().copy()
    maps[:, :, 2] += maps[:, :, :2].sum(axis=2) * 0.5 - 0.5
    return maps


def affine_crops(
    images: Sequence[Tensor], affines: Tensor, image_index: Tensor, crop_size: tuple[int, int], scales: Sequence[int]
) -> Tensor:
    """Crops ``[N, C, h, w]`` (values 0..255) sampled from ``images[image_index[n]]`` through ``affines[n]`` (crop to
    image pixels); ``scales[i]`` image pixels per pixel of ``images[i]``.

    One bilinear sample per crop pixel at its centre; outside the image reads as 0. On the
    CPU one OpenCV warp per crop on the uint8 pixels, elsewhere one ``grid_sample`` per image.
    """
    decoded = affines / affines.new_tensor([float(s) for s in scales])[image_index][:, None, None]
    if images[0].device.type == "cpu":
        return warp_affine_crops(images, decoded, image_index, crop_size)
    return grid_sample_crops(images, decoded, image_index, crop_size)


def warp_affine_crops(
    images: Sequence[Tensor], affines: Tensor, image_index: Tensor, crop_size: tuple[int, int]
) -> Tensor:
    """``affine_crops`` on the CPU, maps to pixels of ``images``: ``uint8`` crops, one OpenCV warp each."""
    height, width = crop_size
    pixels = [channels_last(image) for image in images]  # RGBX buffers warp faster: the crop drops the X
    channels = images[0].shape[0]
    crops = np.empty((len(affines), height, width, channels), dtype=np.uint8)
    for n, (source, i) in enumerate(zip(pixel_index_maps(affines), image_index.tolist())):
        warped = cv2.warpAffine(
            pixels[i],
            source,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        crops[n] = warped[..., :channels]
    return torch.from_numpy(crops).permute(0, 3, 1, 2)


def grid_sample_crops(
    images: Sequence[Tensor], affines: Tensor, image_index: Tensor, crop_size: tuple[int, int]
) -> Tensor:
    """``affine_crops`` on any device, maps to pixels of ``images``: float crops, one ``grid_sample`` per image."""
    height, width = crop_size
    v, u = torch.meshgrid(
        torch.arange(height, device=affines.device) + 0.5,
        torch.arange(width, device=affines.device) + 0.5,
        indexing="ij",
    )
    centres = torch.stack([u, v], dim=-1).reshape(1, -1, 2).expand(len(affines), -1, -1)
    points = apply_affines(centres, affines.float())
    crops = torch.zeros((len(affines), images[0].shape[0], height, width), device=affines.device)
    for i in image_index.unique().tolist():
        chosen = (image_index == i).nonzero().squeeze(1)
        image_height, image_width = images[i].shape[-2:]
        grid = points[chosen] / points.new_tensor([image_width, image_height]) * 2 - 1
        source = images[i].float()[None].expand(len(chosen), -1, -1, -1)
        crops[chosen] = torch.nn.functional.grid_sample(
            source, grid.view(len(chosen), height, width, 2), align_corners=False
        )
    return crops
