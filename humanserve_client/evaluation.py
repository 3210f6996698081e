"""Accuracy of a served pose model (``humanserve evaluate``): COCO keypoint AP with pycocotools, and PCK.

Ground truth is a COCO keypoints file: ``images`` (``id``, ``file_name``), ``annotations``
(``id``, ``image_id``, ``bbox`` [x, y, w, h], ``keypoints`` 17 x [x, y, v], ``area``;
optional ``iscrowd``, ``num_keypoints`` and an MPII-style ``head_bbox`` [x, y, w, h]) and
``categories``. Keypoints are in COCO's pixel-index convention, as the server's
``format=coco`` answers are.

- AP, AP50, AP75, APm, APl, AR: pycocotools' ``COCOeval`` (OKS), over every image of the file.
- PCK@alpha: a labelled joint (v > 0) is correct when the prediction for its person lies within
  alpha times the longer side of the person's box (default 0.2). PCKh@0.5 (annotations with a
  ``head_bbox``): within half the head size, 0.6 times the head box's diagonal (MPII's rule).
  Each prediction belongs to the annotation whose box it was asked for (top-down models sent
  the annotations' boxes) or else, one to one, to the annotation it matches best by OKS; a
  labelled joint of an annotation without a prediction counts as wrong.
"""

import contextlib
import io
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .client import Client, OptionValue, ServerError
from .coco import COCO_KEYPOINTS

# COCO's per-joint OKS constants (pycocotools' COCOeval uses the same).
OKS_SIGMAS = (
    np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89])
    / 10
)
AP_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR")  # COCOeval.stats[0:6]
HEAD_SIZE_PER_DIAGONAL = 0.6  # MPII's evaluation: head size = 0.6 x the head box's diagonal
PCKH_FRACTION = 0.5
MAX_BOXES_PER_REQUEST = 64  # the pose models' limit on given boxes


class AnnotationError(ValueError):
    """A ground-truth file that cannot be evaluated; the message names the problem and where it is."""


@dataclass
class GroundTruth:
    """A validated COCO keypoints file, indexed by pycocotools."""

    path: Path
    coco: COCO
    joint_names: tuple[str, ...]

    @property
    def image_ids(self) -> list[int]:
        return sorted(self.coco.imgs)

    def people(self, image_id: int) -> list[dict[str, Any]]:
        """The annotations of an image that can be scored: not crowds, with a box and at least one labelled joint."""
        return [
            a
            for a in self.coco.imgToAnns.get(image_id, [])
            if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0 and a["num_keypoints"] > 0
        ]


def read_ground_truth(path: Path) -> GroundTruth:
    """``path`` checked and indexed (``AnnotationError`` naming the first problem); ``area`` and ``num_keypoints``
    filled in where absent."""
    dataset = _read_json(path)
    if not isinstance(dataset, dict):
        raise AnnotationError(
            f"{path}: a COCO file is a JSON object with images, annotations and categories, not a {type(dataset).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise AnnotationError(f"{path}: no '{key}' list")
    image_ids = set()
    for n, image in enumerate(dataset["images"]):
        if (
            not isinstance(image, dict)
            or not isinstance(image.get("id"), int)
            or not isinstance(image.get("file_name"), str)
        ):
            raise AnnotationError(f"{path}: images[{n}] needs an integer 'id' and a 'file_name'")
        image_ids.add(image["id"])
    joint_names = COCO_KEYPOINTS
    for category in dataset["categories"]:
        if isinstance(category, dict) and category.get("id") == 1 and isinstance(category.get("keypoints"), list):
            joint_names = tuple(category["keypoints"])
    if len(joint_names) != len(COCO_KEYPOINTS):
        raise AnnotationError(
            f"{path}: the person category names {len(joint_names)} keypoints; COCO's AP and the served models have 17"
        )
    for n, annotation in enumerate(dataset["annotations"]):
        _check_annotation(path, n, annotation, image_ids)
        keypoints = annotation["keypoints"]
        annotation.setdefault("num_keypoints", sum(1 for v in keypoints[2::3] if v > 0))
        annotation.setdefault("area", annotation["bbox"][2] * annotation["bbox"][3])
        annotation.setdefault("iscrowd", 0)
        annotation.setdefault("category_id", 1)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco.createIndex()
    return GroundTruth(Path(path), coco, joint_names)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise AnnotationError(f"{path}: cannot be read ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{path}: not JSON ({error})") from None


def _check_annotation(path: Path, n: int, annotation: Any, image_ids: set[int]) -> None:
    where = f"{path}: annotations[{n}]"
    if not isinstance(annotation, dict):
        raise AnnotationError(f"{where} is not an object")
    if not isinstance(annotation.get("id"), int) or annotation.get("image_id") not in image_ids:
        raise AnnotationError(
            f"{where} needs an integer 'id' and the 'image_id' of one of the images (got {annotation.get('image_id')!r})"
        )
    if not _numbers(annotation.get("bbox"), 4):
        raise AnnotationError(f"{where}: 'bbox' must be [x, y, width, height]")
    if not _numbers(annotation.get("keypoints"), 3 * len(COCO_KEYPOINTS)):
        raise AnnotationError(f"{where}: 'keypoints' must be 17 x [x, y, v], 51 numbers")
    if "head_bbox" in annotation and not _numbers(annotation["head_bbox"], 4):
        raise AnnotationError(f"{where}: 'head_bbox' must be [x, y, width, height]")
    if "area" in annotation and not _numbers([annotation["area"]], 1):
        raise AnnotationError(f"{where}: 'area' must be a number")


def _numbers(value: Any, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def read_results(path: Path, truth: GroundTruth) -> list[dict[str, Any]]:
    """A COCO keypoint results file (a list of ``image_id``, ``category_id``, ``keypoints``, ``score``), checked against
    ``truth``."""
    results = _read_json(path)
    if not isinstance(results, list):
        raise AnnotationError(f"{path}: COCO results are a JSON list, not a {type(results).__name__}")
    for n, result in enumerate(results):
        if not isinstance(result, dict) or result.get("image_id") not in truth.coco.imgs:
            raise AnnotationError(f"{path}: results[{n}] needs the 'image_id' of an image of {truth.path.name}")
        if not _numbers(result.get("keypoints"), 3 * len(COCO_KEYPOINTS)) or not _numbers([result.get("score")], 1):
            raise AnnotationError(f"{path}: results[{n}] needs 51 'keypoints' numbers and a 'score'")
    return results


@dataclass
class Collected:
    """What the server answered: COCO results, the annotation each was asked for (top-down), and the failures."""

    results: list[dict[str, Any]] = field(default_factory=list)
    made_for: list[int | None] = field(default_factory=list)  # annotation id per result, None: found by the model
    failures: list[dict[str, Any]] = field(default_factory=list)


def collect_results(
    client: Client,
    model: str,
    truth: GroundTruth,
    images: Path,
    send_boxes: bool,
    options: dict[str, OptionValue],
    concurrency: int = 4,
    step: Callable[[], None] = lambda: None,
) -> Collected:
    """Send every image of ``truth`` to ``model`` (with its annotations' boxes when ``send_boxes``) and gather COCO
    results."""
    collected = Collected()

    def ask(image_id: int) -> tuple[list[dict[str, Any]], list[int | None], dict[str, Any] | None]:
        record = truth.coco.imgs[image_id]
        path = images / record["file_name"]
        try:
            data = path.read_bytes()
            if not send_boxes:
                return _answered(client, model, data, {**options, "format": "coco", "image_id": image_id}), [], None
            results, made_for = [], []
            people = truth.people(image_id)
            for start in range(0, len(people), MAX_BOXES_PER_REQUEST):
                chunk = people[start : start + MAX_BOXES_PER_REQUEST]
                boxes = [_corners(person["bbox"]) for person in chunk]
                answered = _answered(
                    client, model, data, {**options, "boxes": boxes, "format": "coco", "image_id": image_id}
                )
                results += answered
                made_for += [chunk[_box_index(result["bbox"], boxes)]["id"] for result in answered]
            return results, made_for, None
        except ServerError as error:
            return [], [], {"image_id": image_id, "file": str(path), "error": error.as_dict()}
        except OSError as error:
            return (
                [],
                [],
                {
                    "image_id": image_id,
                    "file": str(path),
                    "error": {"code": None, "type": "UnreadableFile", "message": str(error)},
                },
            )

    with ThreadPoolExecutor(concurrency) as pool:
        for results, made_for, failure in pool.map(ask, truth.image_ids):
            collected.results += results
            collected.made_for += made_for or [None] * len(results)
            if failure:
                collected.failures.append(failure)
            step()
    return collected


def _answered(client: Client, model: str, data: bytes, options: dict[str, Any]) -> list[dict[str, Any]]:
    return [result for result in client.predict(model, data, options).json() if "keypoints" in result]


def _corners(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)]


def _box_index(bbox: list[float], boxes: list[list[float]]) -> int:
    """Which sent box a result's ``bbox`` [x, y, w, h] is (the pose models answer the boxes they were given, best
    first)."""
    x, y, w, h = bbox
    distances = [abs(x - b[0]) + abs(y - b[1]) + abs(x + w - b[2]) + abs(y + h - b[3]) for b in boxes]
    return int(np.argmin(distances))


def object_keypoint_similarity(predicted: np.ndarray, truth: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """OKS ``[P, G]`` of predicted joints ``[P, 17, 2]`` against annotated ``[G, 17, 3]`` (v > 0 labelled) of areas
    ``[G]``."""
    labelled = truth[None, :, :, 2] > 0  # [1, G, 17]
    squared = ((predicted[:, None] - truth[None, :, :, :2]) ** 2).sum(-1)  # [P, G, 17]
    scale = 2 * areas[None, :, None] * (2 * OKS_SIGMAS) ** 2 + np.spacing(1)
    similarity = np.exp(-squared / scale) * labelled
    return similarity.sum(-1) / np.maximum(labelled.sum(-1), 1)


def match_by_oks(predicted: np.ndarray, truth: np.ndarray, areas: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one ``(prediction, annotation)`` pairs, best OKS first (greedy); pairs with no labelled joint in common
    are left out."""
    if not len(predicted) or not len(truth):
        return []
    similarity = object_keypoint_similarity(predicted, truth, areas)
    pairs, used_p, used_g = [], set(), set()
    for flat in np.argsort(-similarity, axis=None, kind="stable"):
        p, g = divmod(int(flat), similarity.shape[1])
        if p not in used_p and g not in used_g and similarity[p, g] > 0:
            pairs.append((p, g))
            used_p.add(p)
            used_g.add(g)
    return pairs


def correct_keypoints(predicted: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``bool[G, 17]``: prediction ``[G, 17, 2]`` within ``thresholds[G]`` pixels of the truth ``[G, 17, 3]`` (NaN
    predictions are wrong)."""
    distance = np.linalg.norm(predicted - truth[..., :2], axis=-1)
    return distance <= thresholds[:, None]


def keypoint_ap(truth: GroundTruth, results: list[dict[str, Any]]) -> dict[str, float | None]:
    """pycocotools' keypoint AP and AR over every image of ``truth``; None where it had nothing to score (no medium
    people, say)."""
    if not results:  # COCO.loadRes refuses an empty list
        return dict.fromkeys(AP_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        detections = truth.coco.loadRes([{**r, "category_id": r.get("category_id", 1)} for r in results])
        evaluation = COCOeval(truth.coco, detections, "keypoints")
        evaluation.params.imgIds = truth.image_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: None if value < 0 else float(value) for name, value in zip(AP_NAMES, evaluation.stats)}


def score(
    truth: GroundTruth,
    results: list[dict[str, Any]],
    made_for: list[int | None] | None = None,
    alpha: float = 0.2,
) -> dict[str, Any]:
    """Every figure: AP..AR, ``PCK`` (a fraction) with ``PCK_per_joint``, and ``PCKh`` likewise when annotations carry
    head boxes."""
    made_for = made_for or [None] * len(results)
    report: dict[str, Any] = {**keypoint_ap(truth, results), "PCK_alpha": alpha}
    annotations = [a for image_id in truth.image_ids for a in truth.people(image_id)]
    predicted = {a["id"]: np.full((len(COCO_KEYPOINTS), 2), np.nan) for a in annotations}
    by_image: dict[int, list[int]] = {}
    for n, (result, annotation_id) in enumerate(zip(results, made_for)):
        if annotation_id is not None:
            predicted[annotation_id] = np.reshape(result["keypoints"], (-1, 3))[:, :2]
        else:
            by_image.setdefault(result["image_id"], []).append(n)
    for image_id, members in by_image.items():
        people = truth.people(image_id)
        joints = np.array([np.reshape(results[n]["keypoints"], (-1, 3))[:, :2] for n in members])
        truths = np.array([np.reshape(a["keypoints"], (-1, 3)) for a in people]).reshape(-1, len(COCO_KEYPOINTS), 3)
        for p, g in match_by_oks(joints, truths, np.array([a["area"] for a in people], dtype=float)):
            predicted[people[g]["id"]] = joints[p]
    report.update(
        _pck("PCK", annotations, predicted, lambda a: alpha * max(a["bbox"][2], a["bbox"][3]), truth.joint_names)
    )
    with_head = [a for a in annotations if "head_bbox" in a]
    if with_head:
        report.update(
            _pck(
                "PCKh",
                with_head,
                predicted,
                lambda a: PCKH_FRACTION * HEAD_SIZE_PER_DIAGONAL * math.hypot(*a["head_bbox"][2:]),
                truth.joint_names,
            )
        )
    report.update({"images": len(truth.image_ids), "annotations": len(annotations), "predictions": len(results)})
    return report


def _pck(
    name: str,
    annotations: list[dict[str, Any]],
    predicted: dict[int, np.ndarray],
    threshold: Callable[[dict[str, Any]], float],
    joint_names: tuple[str, ...],
) -> dict[str, Any]:
    if not annotations:
        return {name: 0.0, f"{name}_per_joint": dict.fromkeys(joint_names)}
    truths = np.array([np.reshape(a["keypoints"], (-1, 3)) for a in annotations], dtype=float)
    joints = np.array([predicted[a["id"]] for a in annotations])
    labelled = truths[..., 2] > 0
    correct = correct_keypoints(joints, truths, np.array([threshold(a) for a in annotations])) & labelled
    per_joint = {
        joint: (float(correct[:, j].sum() / labelled[:, j].sum()) if labelled[:, j].any() else None)
        for j, joint in enumerate(joint_names)
    }
    return {name: float(correct.sum() / max(labelled.sum(), 1)), f"{name}_per_joint": per_joint}


def summary(report: dict[str, Any]) -> str:
    """The report as a short table for people."""
    lines = ["  ".join(f"{name} {'n/a' if report[name] is None else format(report[name], '.3f')}" for name in AP_NAMES)]
    for name in ("PCK", "PCKh"):
        if name in report:
            what = f"@{report['PCK_alpha']:g}" if name == "PCK" else f"@{PCKH_FRACTION:g}"
            lines.append(f"{name}{what} {report[name]:.3f}")
            lines += [
                f"  {joint:<16} {'n/a' if value is None else f'{value:.3f}'}"
                for joint, value in report[f"{name}_per_joint"].items()
            ]
    lines.append(
        f"{report['images']} images, {report['annotations']} people annotated, {report['predictions']} predicted"
    )
    return "\n".join(lines)


TABLE_COLUMNS = ("date", "model", "ground truth", "boxes", "options", "AP", "AP50", "AP75", "APm", "APl", "AR", "PCK")


def table_row(
    report: dict[str, Any], model: str, annotations: Path, boxes: str, options: dict[str, Any], date: str
) -> str:
    """The report as a row of ``docs/accuracy.md``'s table (``TABLE_COLUMNS``)."""
    figures = [("n/a" if report[name] is None else f"{100 * report[name]:.1f}") for name in AP_NAMES]
    chosen = ", ".join(f"{name}={value}" for name, value in options.items()) or "none"
    pck = f"{100 * report['PCK']:.1f} (@{report['PCK_alpha']:g})"
    return (
        "| "
        + " | ".join([date, model, f"{annotations.name} ({report['images']} images)", boxes, chosen, *figures, pck])
        + " |"
    )
