"""BlazePose steps on whole batches: letterboxed photos to detections, detections to rotated person crops, crops to
landmarks in image pixels, landmarks to people.

As MediaPipe's pose graphs (mediapipe/modules/pose_detection, pose_landmark) do it, batched
over every photo and person of a batch: the detector sees each photo letterboxed to a
square; weighted suppression merges its overlapping detections; each detection's first two
alignment keypoints (hips' centre, a point on the circle around the body) give a square
region about the hips, rotated so that the body stands upright in the crop and 1.25 times
the circle's diameter; the landmark model answers 39 landmarks (33 of the body, 6
auxiliary) in crop pixels, mapped back to the photo. (TorchServe wants exactly one class
in a handler module, so the steps and their data classes live here.)
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as coco_mask
from torch import Tensor
from torchvision.ops import box_iou

from handlers.pose_blazepose.schema import BlazePoseDetectorSpec, BlazePoseLandmarkSpec
from handlers.vision.geometry import (
    affine_crops,
    apply_affines,
    crop_and_resize,
    crop_to_image,
    invert_affines,
    pixel_index_maps,
    square_crop_affines,
)
from handlers.vision.keypoints import COCO_KEYPOINTS
from handlers.vision.people import People, ranked

BLAZEPOSE_LANDMARKS = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)
# The BlazePose landmark of each COCO keypoint, in COCO's order: they share their names.
COCO_FROM_BLAZEPOSE = tuple(BLAZEPOSE_LANDMARKS.index(name) for name in COCO_KEYPOINTS)
NOBODY_LOG_ODDS = -100.0  # a mask's log-odds where nobody is (outside a person's crop, a photo without people)


@dataclass
class Bodies:
    """The people found in one photo, as the landmark model saw them (the photo's pixels throughout)."""

    landmarks: Tensor  # [P, 39, 5]: x, y, z (z at the scale of x), visibility, presence
    scores: Tensor  # [P] the landmark model's probability that its crop holds a pose
    crops: Tensor  # [P, 2, 3] crop -> photo maps of the landmark model's crops
    mask_log_odds: Tensor  # [P, L, L] each person's mask in its crop

    def select(self, chosen: Tensor) -> "Bodies":
        """The people ``chosen`` (indices or a mask), in that order."""
        return Bodies(self.landmarks[chosen], self.scores[chosen], self.crops[chosen], self.mask_log_odds[chosen])


def as_pixels(crops: Tensor) -> Tensor:
    """Crops sampled as floats on a device, as the ``uint8`` pixels the networks take (CPU crops already are)."""
    return crops if crops.dtype == torch.uint8 else crops.round().clamp(0, 255).to(torch.uint8)


def letterbox_frames(sizes: Sequence[tuple[int, int]]) -> Tensor:
    """``[N, 4]`` the square about each photo's centre that holds it whole: the letterbox the detector sees."""
    frames = []
    for height, width in sizes:
        half = max(height, width) / 2
        frames.append([width / 2 - half, height / 2 - half, width / 2 + half, height / 2 + half])
    return torch.tensor(frames, dtype=torch.float32).view(-1, 4)


def weighted_nms(boxes: Tensor, keypoints: Tensor, scores: Tensor, iou_threshold: float) -> tuple[Tensor, Tensor]:
    """MediaPipe's weighted suppression of one photo's detections: best first, each takes every remaining detection
    overlapping it by more than ``iou_threshold`` and answers their score-weighted mean keypoints with its own score.

    ``boxes[D, 4]``, ``keypoints[D, K, 2]``, ``scores[D]`` -> ``(keypoints[P, K, 2], scores[P])``, best first.
    """
    order = scores.argsort(descending=True)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    overlaps = box_iou(boxes, boxes) > iou_threshold
    remaining = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
    kept_points, kept_scores = [], []
    for best in range(len(scores)):
        if not remaining[best]:
            continue
        cluster = overlaps[best] & remaining
        remaining &= ~cluster
        weights = scores[cluster] / scores[cluster].sum()
        kept_points.append((keypoints[cluster] * weights[:, None, None]).sum(dim=0))
        kept_scores.append(scores[best])
    if not kept_scores:
        return keypoints[:0], scores[:0]
    return torch.stack(kept_points), torch.stack(kept_scores)


def detect_bodies(
    model: torch.nn.Module,
    images: Sequence[Tensor],
    sizes: Sequence[tuple[int, int]],
    scales: Sequence[int],
    spec: BlazePoseDetectorSpec,
) -> list[tuple[Tensor, Tensor]]:
    """Each photo's detected people, best first: ``(alignment keypoints[P, 4, 2] in photo pixels, scores[P])``.

    One detector call for the batch, on the letterboxed photos (``images[i]`` decoded at ``scales[i]``).
    """
    frames = letterbox_frames(sizes)
    side = spec.input_size
    crops = crop_and_resize(images, frames, torch.arange(len(images)), (side, side), scales)
    boxes, keypoints, scores = model(as_pixels(crops))
    found = []
    for n in range(len(images)):
        keep = scores[n] >= spec.min_score
        points, kept = weighted_nms(boxes[n][keep], keypoints[n][keep], scores[n][keep], spec.nms_iou)
        points, kept = points[: spec.max_people], kept[: spec.max_people]
        frame = frames[n : n + 1].to(points.device)
        found.append((crop_to_image(points.reshape(1, -1, 2), frame, (side, side)).view(-1, 4, 2), kept))
    return found


def alignment_regions(keypoints: Tensor, roi_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Square regions ``(centres[P, 2], sides[P], angles[P])`` from detections' alignment keypoints ``[P, 4, 2]``:
    centred on the hips, ``roi_scale`` times the body circle's diameter, turned so that hips -> circle point is up
    (MediaPipe's AlignmentPointsRectsCalculator, then RectTransformationCalculator)."""
    centre, circle = keypoints[:, 0], keypoints[:, 1]
    towards = circle - centre
    angles = math.pi / 2 - torch.atan2(-towards[:, 1], towards[:, 0])
    return centre, 2 * towards.norm(dim=1) * roi_scale, angles


def box_regions(boxes: Tensor, roi_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Upright square regions about given ``boxes[P, 4]``: their longer side times ``roi_scale``."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1) * roi_scale
    return centres, sides, torch.zeros_like(sides)


def body_landmarks(
    model: torch.nn.Module,
    images: Sequence[Tensor],
    regions: Sequence[tuple[Tensor, Tensor, Tensor]],
    scales: Sequence[int],
    spec: BlazePoseLandmarkSpec,
) -> list[Bodies]:
    """Each photo's people at its ``regions`` (centres, sides, angles): the landmark model on every crop of the batch,
    ``max_crops_per_forward`` at a time, its landmarks mapped back to the photo."""
    counts = [len(sides) for _, sides, _ in regions]
    centres, sides, angles = (torch.cat(values).float().to(images[0].device) for values in zip(*regions))
    size = spec.input_size
    crops = square_crop_affines(centres, sides, angles, (size, size))
    image_index = torch.repeat_interleave(torch.arange(len(images)), torch.tensor(counts)).to(crops.device)
    pixels = as_pixels(affine_crops(images, crops, image_index, (size, size), scales))
    outputs = [model(chunk) for chunk in pixels.split(spec.max_crops_per_forward)]
    if outputs:
        landmarks, scores, masks = (torch.cat(values) for values in zip(*outputs))
    else:  # nobody in the whole batch
        landmarks, scores, masks = crops.new_zeros((0, 39, 5)), crops.new_zeros(0), crops.new_zeros((0, size, size))
    points = apply_affines(landmarks[..., :2], crops)
    depth = landmarks[..., 2:3] * (sides / size)[:, None, None]
    in_photo = torch.cat([points, depth, landmarks[..., 3:]], dim=-1)
    return [
        Bodies(*values)
        for values in zip(in_photo.split(counts), scores.split(counts), crops.split(counts), masks.split(counts))
    ]


def blazepose_people(
    bodies: Bodies, size: tuple[int, int], options: Mapping[str, Any], given: Tensor | None = None
) -> People:
    """One photo's answer: boxes around the 33 body landmarks (within the photo), or the ``given`` boxes ``[P, 4]``
    the bodies were estimated in, as every pose model answers the boxes it was given; the 17 COCO keypoints (x, y,
    visibility), ranked and filtered by the request's options; ``landmarks`` and ``mask`` options add each person's
    33 landmarks and mask (COCO RLE)."""
    order = ranked(bodies.scores, options)
    body = bodies.landmarks[order, : len(BLAZEPOSE_LANDMARKS)].cpu()
    if given is None:
        height, width = size
        corners = torch.cat([body[..., :2].amin(dim=1), body[..., :2].amax(dim=1)], dim=1)
        boxes = torch.minimum(corners.clamp(min=0), torch.tensor([width, height, width, height], dtype=corners.dtype))
    else:
        boxes = given[order.cpu()]
    keypoints = body[:, COCO_FROM_BLAZEPOSE][..., [0, 1, 3]]
    fields: dict[str, list[Any]] = {}
    if options["landmarks"]:
        fields["landmarks"] = torch.cat(
            [body[..., :3].double().round(decimals=2), body[..., 3:].double().round(decimals=4)], dim=2
        ).tolist()
    if options["mask"]:
        fields["mask"] = person_masks(bodies.mask_log_odds[order].cpu(), bodies.crops[order].cpu(), size)
    return People(boxes, bodies.scores[order].cpu(), keypoints, fields)


def person_masks(log_odds: Tensor, crops: Tensor, size: tuple[int, int]) -> list[dict[str, Any]]:
    """Each person's mask over the photo as COCO RLE (counts as text): its crop's log-odds ``[L, L]`` warped back
    through ``crops[P, 2, 3]`` (OpenCV, bilinear), above 0 (probability 0.5)."""
    height, width = size
    masks = []
    for odds, source in zip(log_odds.numpy(), pixel_index_maps(invert_affines(crops.double()))):
        photo = cv2.warpAffine(
            np.ascontiguousarray(odds),
            source,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=NOBODY_LOG_ODDS,
        )
        rle = coco_mask.encode(np.asfortranarray(photo > 0))
        masks.append({"size": [height, width], "counts": rle["counts"].decode("ascii")})
    return masks
