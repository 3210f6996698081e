"""Drawing answers onto the picture (the ``render`` option)."""

from collections.abc import Sequence

import cv2
import numpy as np

# OpenCV draws at pixel indices; 4 fractional bits keep sub-pixel positions.
_SHIFT = 4
_ONE = 1 << _SHIFT
_LIMB = (0, 200, 255)
_JOINT = (255, 60, 60)
_BOX = (60, 255, 60)


def _fixed(x: float, y: float) -> tuple[int, int]:
    # Continuous coordinates put pixel centres at +0.5; OpenCV puts them at integers.
    return round((x - 0.5) * _ONE), round((y - 0.5) * _ONE)


def draw_people(
    rgb: np.ndarray,
    boxes: np.ndarray,
    keypoints: np.ndarray,
    skeleton: tuple[tuple[int, int], ...],
    min_score: float,
) -> np.ndarray:
    """Draw ``boxes[P, 4]`` and ``keypoints[P, K, 3]`` (x, y, score) with the skeleton on a copy of ``rgb``."""
    canvas = np.array(rgb, order="C")  # one copy whatever the layout (decoded JPEGs are RGBX views)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for box in boxes:
        cv2.rectangle(canvas, _fixed(*box[:2]), _fixed(*box[2:]), _BOX, thickness, cv2.LINE_AA, _SHIFT)
    for person in keypoints:
        visible = person[:, 2] >= min_score
        for a, b in skeleton:
            if visible[a] and visible[b]:
                start, end = _fixed(*person[a, :2]), _fixed(*person[b, :2])
                cv2.line(canvas, start, end, _LIMB, thickness, cv2.LINE_AA, _SHIFT)
        for x, y, _ in person[visible]:
            cv2.circle(canvas, _fixed(x, y), (thickness + 2) * _ONE, _JOINT, -1, cv2.LINE_AA, _SHIFT)
    return canvas


def draw_faces(
    rgb: np.ndarray, boxes: Sequence[Sequence[float]], landmarks: Sequence[Sequence[Sequence[float]]], labels: list[str]
) -> np.ndarray:
    """Draw face boxes ``[F][4]``, landmarks ``[F][L][2]`` and a label above each box on a copy of ``rgb``."""
    canvas = np.array(rgb, order="C")
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    font_scale = thickness * 0.5
    for box, points, label in zip(boxes, landmarks, labels):
        cv2.rectangle(canvas, _fixed(*box[:2]), _fixed(*box[2:]), _BOX, thickness, cv2.LINE_AA, _SHIFT)
        for x, y in points:
            cv2.circle(canvas, _fixed(x, y), (thickness + 1) * _ONE, _JOINT, -1, cv2.LINE_AA, _SHIFT)
        (width, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        left, top = int(box[0]), max(height + 2 * thickness, int(box[1]))
        cv2.rectangle(canvas, (left, top - height - 2 * thickness), (left + width, top), _BOX, -1)
        cv2.putText(
            canvas,
            label,
            (left, top - thickness),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    return canvas
