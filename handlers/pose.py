"""Top-down pose steps on whole batches: boxes to crops, crops to heatmaps, heatmaps to answers.

``pose_handler.PoseHandler`` wires them into the life cycle; a detect-then-pose handler
composes them with a detector. (TorchServe wants exactly one class in a handler module,
so the steps and their data classes live here.)
"""

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from humanserve_core.base import Item
from humanserve_core.errors import RequestError
from humanserve_core.geometry import crop_and_resize, widen_boxes
from humanserve_core.heatmaps import decode_heatmaps, flip_back
from humanserve_core.images import normalize
from humanserve_core.keypoints import COCO_KEYPOINTS, COCO_SKELETON, mirror_index
from humanserve_core.options import choice, flag, integer, number
from humanserve_core.render import draw_people
from humanserve_core.responses import Answer, image_answer, json_answer

MAX_BOXES = 64
MIRROR = torch.tensor(mirror_index(COCO_KEYPOINTS))


@dataclass(frozen=True)
class PoseSpec:
    """How the model sees a person: crop size, pixel normalisation, heatmap geometry (archive config)."""

    crop_size: tuple[int, int]
    channels: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stride: float
    offset: float
    sigma: float
    refine: str
    padding: float
    max_crops_per_forward: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "PoseSpec":
        """Read the ``input`` and ``heatmap`` sections written by the export recipe."""
        image, heatmap = config["input"], config["heatmap"]
        return cls(
            crop_size=(int(image["height"]), int(image["width"])),
            channels=image["channels"],
            mean=tuple(image["mean"]),
            std=tuple(image["std"]),
            stride=float(heatmap["stride"]),
            offset=float(heatmap["offset"]),
            sigma=float(heatmap.get("sigma", 2.0)),
            refine=heatmap.get("refine", "dark"),
            padding=float(config.get("box_padding", 1.25)),
            max_crops_per_forward=int(config.get("max_crops_per_forward", 64)),
        )

    @property
    def flip_shift(self) -> int:
        """Columns that realign mirrored heatmaps (see ``heatmaps.flip_back``)."""
        shift = 1 - 2 * self.offset / self.stride
        if shift != int(shift):
            raise ValueError(f"heatmap offset {self.offset} gives a fractional flip shift {shift}")
        return int(shift)


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


def pose_crops(images: list[Tensor], boxes: Tensor, image_index: Tensor, spec: PoseSpec) -> tuple[Tensor, Tensor]:
    """Widen boxes to the crop's aspect ratio, cut and normalise: ``(crops[N, 3, h, w], crop_boxes[N, 4])``."""
    height, width = spec.crop_size
    crop_boxes = widen_boxes(boxes, width / height, spec.padding)
    crops = crop_and_resize(images, crop_boxes, image_index, spec.crop_size)
    return normalize(crops, spec.mean, spec.std, spec.channels), crop_boxes


def pose_heatmaps(model: torch.nn.Module, crops: Tensor, flip: Tensor, spec: PoseSpec) -> Tensor:
    """Heatmaps ``[N, K, h, w]``; rows with ``flip`` average in their mirrored crop's maps (one model pass)."""
    both = torch.cat([crops, crops[flip].flip(-1)])
    maps = torch.cat([model(chunk) for chunk in both.split(spec.max_crops_per_forward)])
    heatmaps, mirrored = maps[: crops.shape[0]], maps[crops.shape[0] :]
    if mirrored.shape[0]:
        heatmaps[flip] = (heatmaps[flip] + flip_back(mirrored, MIRROR, spec.flip_shift)) / 2
    return heatmaps


def pose_keypoints(heatmaps: Tensor, crop_boxes: Tensor, spec: PoseSpec) -> Tensor:
    """Keypoints ``[N, K, 3]`` (x, y, score) in image pixels."""
    return decode_heatmaps(
        heatmaps, crop_boxes, spec.crop_size, spec.stride, spec.offset, spec.refine, spec.sigma
    )


def people(boxes: Tensor, keypoints: Tensor, options: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
    """One image's people as (boxes, keypoints, scores), best first, filtered by score and count."""
    scores = keypoints[:, :, 2].mean(dim=1)
    order = scores.argsort(descending=True)
    threshold: Optional[float] = options["score_threshold"]
    if threshold is not None:
        order = order[scores[order] >= threshold]
    if options["max_people"] is not None:
        order = order[: options["max_people"]]
    return boxes[order], keypoints[order], scores[order]


def pose_answer(
    item: Item, boxes: Tensor, keypoints: Tensor, scores: Tensor, model: str, version: str
) -> Answer:
    """Answer one image: JSON, COCO results, or the picture with the skeletons drawn."""
    options = item.options
    image_format = output_format(options)
    if image_format in ("jpeg", "png"):
        drawn_boxes = boxes.numpy() if options["boxes"] is not None else boxes[:0].numpy()
        picture = draw_people(
            item.image.permute(1, 2, 0).numpy(), drawn_boxes, keypoints.numpy(), COCO_SKELETON,
            min_score=options["score_threshold"] or 0.0,
        )
        return image_answer(picture, image_format)
    boxes_r = _rounded(boxes, 2)
    xy_r = _rounded(keypoints[:, :, :2], 2)
    kp_scores_r = _rounded(keypoints[:, :, 2:], 4)
    scores_r = _rounded(scores, 4)
    if image_format == "coco":
        return json_answer(
            [
                {
                    "image_id": options["image_id"],
                    "category_id": 1,
                    "bbox": [b[0], b[1], round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
                    "keypoints": [v for joint in torch.cat([xy_r, kp_scores_r], 2)[p].tolist() for v in joint],
                    "score": scores_r[p].item(),
                }
                for p, b in enumerate(boxes_r.tolist())
            ]
        )
    height, width = item.size
    return json_answer(
        {
            "model": model,
            "version": version,
            "image": {"width": width, "height": height},
            "people": [
                {"box": box, "score": score, "keypoints": joints}
                for box, score, joints in zip(
                    boxes_r.tolist(), scores_r.tolist(), torch.cat([xy_r, kp_scores_r], 2).tolist()
                )
            ],
            "keypoint_names": list(COCO_KEYPOINTS),
            "skeleton": [list(limb) for limb in COCO_SKELETON],
        }
    )


def output_format(options: Mapping[str, Any]) -> str:
    """The answer's format: ``format`` if given, else jpeg when ``render``, else json."""
    return options["format"] or ("jpeg" if options["render"] else "json")


def check_output_options(options: Mapping[str, Any]) -> None:
    """``render`` asks for a picture, so it cannot be combined with a data format."""
    if options["render"] and options["format"] in ("json", "coco"):
        raise RequestError(
            f"render=true returns a picture; format must be jpeg or png, not {options['format']!r}",
            "InvalidOption",
        )


def check_boxes_overlap(item: Item) -> None:
    """Every given box must overlap the image (it may extend past its edges)."""
    height, width = item.size
    for index, (x1, y1, x2, y2) in enumerate(item.options["boxes"] or []):
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            raise RequestError(
                f"boxes[{index}] = {[x1, y1, x2, y2]} lies outside the {width}x{height} image",
                "InvalidOption",
            )


def _rounded(values: Tensor, decimals: int) -> Tensor:
    # In float64, so that JSON shows 322.67 rather than float32's 322.6700134277344.
    return values.double().round(decimals=decimals)


OUTPUT_OPTIONS = {
    "score_threshold": number(None, 0.0, 1.0, "leave out people whose score is below this; also hides weaker joints in renders"),
    "max_people": integer(None, 1, 1000, "answer at most this many people, best first"),
    "render": flag(False, "answer the picture with the skeletons drawn (JPEG unless format=png)"),
    "format": choice(None, ("json", "coco", "jpeg", "png"), "json (default), coco (COCO results list), jpeg or png (rendered picture)"),
    "image_id": integer(0, 0, 2**63 - 1, "image_id written in format=coco answers"),
}
