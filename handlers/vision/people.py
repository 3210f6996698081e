"""Answers about people (boxes, scores, optional keypoints and per-person fields), shared by every person model.

One shape for all of them: JSON ``people: [{box, score, ...}]``, COCO results, or the
picture with the answer drawn on it, chosen by the same output options.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from handlers.core.answers import Answer, image_answer, json_answer
from handlers.core.errors import RequestError
from handlers.core.inputs import Item
from handlers.core.options import choice, flag, integer, number
from handlers.vision.render import draw_people

OUTPUT_OPTIONS = {
    "score_threshold": number(
        None, 0.0, 1.0, "leave out people whose score is below this; also hides weaker joints in renders"
    ),
    "max_people": integer(None, 1, 1000, "answer at most this many people, best first"),
    "render": flag(False, "answer the picture with the answer drawn (JPEG unless format=png)"),
    "format": choice(
        None,
        ("json", "coco", "jpeg", "png"),
        "json (default), coco (COCO results list), jpeg or png (rendered picture)",
    ),
    "image_id": integer(0, 0, 2**63 - 1, "image_id written in format=coco answers"),
}


@dataclass
class People:
    """The people of one image, best first: ``boxes[P, 4]``, ``scores[P]``, optional ``keypoints[P, K, 3]``."""

    boxes: Tensor
    scores: Tensor
    keypoints: Tensor | None = None
    fields: dict[str, list[Any]] = field(default_factory=dict)  # extra per-person values, e.g. "view"


@dataclass(frozen=True)
class Layout:
    """What a model's people carry: keypoint names and skeleton (empty for boxes only), drawn boxes."""

    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    draw_boxes: bool = True


def ranked(scores: Tensor, options: Mapping[str, Any]) -> Tensor:
    """Indices of the people to answer: best first, at least ``score_threshold``, at most ``max_people``."""
    order = scores.argsort(descending=True, stable=True)  # equal scores keep their given order
    if options["score_threshold"] is not None:
        order = order[scores[order] >= options["score_threshold"]]
    if options["max_people"] is not None:
        order = order[: options["max_people"]]
    return order


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


def people_answer(item: Item, people: People, layout: Layout, header: Mapping[str, Any]) -> Answer:
    """Answer one item as its options say: JSON (``header`` fields first), COCO results, or a rendered picture.

    A picture is drawn on the item's image, which handlers decode whole (scale 1) for it.
    """
    options = item.options
    image_format = output_format(options)
    keypoints = people.keypoints
    if image_format in ("jpeg", "png"):
        empty = people.boxes.new_zeros((len(people.boxes), 0, 3))
        picture = draw_people(
            item.image.permute(1, 2, 0).cpu().numpy(),
            people.boxes.numpy() if layout.draw_boxes else people.boxes[:0].numpy(),
            (keypoints if keypoints is not None else empty).numpy(),
            layout.skeleton,
            min_score=options["score_threshold"] or 0.0,
        )
        return image_answer(torch.from_numpy(picture).permute(2, 0, 1), image_format)
    boxes = rounded(people.boxes, 2).tolist()
    scores = rounded(people.scores, 4).tolist()
    joints = (
        torch.cat([rounded(keypoints[..., :2], 2), rounded(keypoints[..., 2:], 4)], dim=2).tolist()
        if keypoints is not None
        else None
    )
    if image_format == "coco":
        return json_answer([_coco_result(options["image_id"], p, boxes, scores, joints) for p in range(len(boxes))])
    answers = []
    for p, (box, score) in enumerate(zip(boxes, scores)):
        person = {"box": box, "score": score}
        if joints is not None:
            person["keypoints"] = joints[p]
        person.update({name: values[p] for name, values in people.fields.items()})
        answers.append(person)
    height, width = item.size
    payload = {**header, "image": {"width": int(width), "height": int(height)}, "people": answers}
    if layout.keypoint_names:
        payload["keypoint_names"] = list(layout.keypoint_names)
        payload["skeleton"] = [list(limb) for limb in layout.skeleton]
    return json_answer(payload)


def _coco_result(image_id: int, p: int, boxes: list, scores: list, joints: list | None) -> dict[str, Any]:
    """One COCO result. Boxes are continuous in COCO too; its keypoints are pixel indices (the top-left pixel's centre
    is
    (0, 0), as its annotations and evaluation assume), so joints move by half a pixel."""
    x1, y1, x2, y2 = boxes[p]
    result = {
        "image_id": image_id,
        "category_id": 1,
        "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
        "score": scores[p],
    }
    if joints is not None:
        result["keypoints"] = [
            value for x, y, score in joints[p] for value in (round(x - 0.5, 2), round(y - 0.5, 2), score)
        ]
    return result


def rounded(values: Tensor, decimals: int) -> Tensor:
    """``values`` rounded in float64, so that JSON shows 322.67 rather than float32's 322.6700134277344."""
    # In float64, so that JSON shows 322.67 rather than float32's 322.6700134277344.
    return values.double().round(decimals=decimals)
