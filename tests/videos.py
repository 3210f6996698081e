"""Synthetic videos for tracking: painted people (oracle-readable) on known paths, and MOT scores of tracked answers.

Each person is a ``Walker``: a box moving at a constant velocity (or turning back once),
painted as the oracle models read it (``oracles.paint_people`` discs inside a
``PERSON_FRAMES`` outline, so the detector oracle finds and scores it), hidden in some
frames, and seen only while wholly inside the picture, so walking out and back in is a
disappearance and a return.
"""

from dataclasses import dataclass
from typing import Any

import motmetrics
import numpy as np
import torch
from torchvision.ops import box_iou

from oracles import PERSON_FRAMES, paint_frames, paint_people


@dataclass(frozen=True)
class Walker:
    """One person of a synthetic video and its path."""

    box: tuple[int, int, int, int]  # x1, y1, x2, y2 at frame 0, in pixels
    velocity: tuple[int, int]  # pixels per frame
    colour: int  # PERSON_FRAMES index: how the detector oracle finds it (and scores it: 0.99, 0.80, 0.60)
    layout: int  # seed of where its joints sit in its box (its pose)
    hidden: tuple[int, ...] = ()  # frames in which something hides it
    turn: int | None = None  # frame at which it turns back

    def box_at(self, frame: int) -> list[int]:
        """Its box at ``frame``."""
        steps = frame if self.turn is None or frame <= self.turn else 2 * self.turn - frame
        x1, y1, x2, y2 = self.box
        dx, dy = self.velocity[0] * steps, self.velocity[1] * steps
        return [x1 + dx, y1 + dy, x2 + dx, y2 + dy]


@dataclass
class VideoFrame:
    """One painted frame and the truth: which walkers are seen, at which boxes."""

    image: np.ndarray  # [H, W, 3] RGB uint8
    walkers: list[int]
    boxes: list[list[int]]


def paint_video(width: int, height: int, walkers: list[Walker], frames: int, seed: int = 0) -> list[VideoFrame]:
    """``frames`` frames of ``walkers`` on a noisy background (new noise each frame)."""
    video = []
    for frame in range(frames):
        seen = [
            index
            for index, walker in enumerate(walkers)
            if frame not in walker.hidden and _inside(walker.box_at(frame), width, height)
        ]
        boxes = [walkers[index].box_at(frame) for index in seen]
        painted = paint_people(
            width, height, boxes, seed=seed + frame, layouts=[walkers[index].layout for index in seen]
        )
        paint_frames(painted.image, [(box, PERSON_FRAMES[walkers[index].colour]) for index, box in zip(seen, boxes)])
        video.append(VideoFrame(painted.image, seen, boxes))
    return video


def mot_scores(video: list[VideoFrame], answers: list[list[dict[str, Any]]], min_iou: float = 0.5) -> dict[str, float]:
    """MOTA, IDF1, ID switches (py-motmetrics) of per-frame answered people (``box``, ``track_id``) against the truth.

    People answered without a ``track_id`` (not yet confirmed) are not hypotheses.
    """
    accumulator = motmetrics.MOTAccumulator(auto_id=True)
    for frame, people in zip(video, answers):
        tracked = [person for person in people if person.get("track_id") is not None]
        truth = torch.tensor(frame.boxes, dtype=torch.float64).view(-1, 4)
        guesses = torch.tensor([person["box"] for person in tracked], dtype=torch.float64).view(-1, 4)
        overlap = box_iou(truth, guesses)
        # motmetrics' own iou_matrix needs NumPy 1: distances as it wants them, NaN for "cannot match".
        distance = torch.where(overlap >= min_iou, 1 - overlap, torch.nan).numpy()
        accumulator.update(frame.walkers, [person["track_id"] for person in tracked], distance)
    summary = motmetrics.metrics.create().compute(
        accumulator, metrics=["mota", "idf1", "num_switches", "num_frames"], name="video"
    )
    row = summary.iloc[0]
    return {
        "mota": float(row["mota"]),
        "idf1": float(row["idf1"]),
        "id_switches": int(row["num_switches"]),
        "frames": int(row["num_frames"]),
    }


def _inside(box: list[int], width: int, height: int) -> bool:
    x1, y1, x2, y2 = box
    return x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height


# Scenes the tests and the tracking benchmark share (320x240 frames).
SCENES: dict[str, tuple[list[Walker], int]] = {
    "apart": ([Walker((10, 20, 90, 180), (4, 0), 0, layout=1), Walker((230, 40, 310, 200), (-4, 1), 1, layout=2)], 16),
    "occluded": (
        [
            Walker((10, 20, 90, 180), (5, 0), 0, layout=1, hidden=(5, 6, 7, 8, 9)),
            Walker((200, 40, 280, 200), (0, 0), 1, layout=2),
        ],
        18,
    ),
    "crossing": (
        [Walker((20, 30, 100, 190), (8, 0), 0, layout=1), Walker((220, 40, 300, 200), (-8, 0), 1, layout=2)],
        26,
    ),
    "leaving": (
        [Walker((150, 30, 230, 190), (12, 0), 0, layout=1, turn=10), Walker((20, 40, 100, 200), (0, 0), 1, layout=2)],
        22,
    ),
}
