"""Multi-person pose tracking by detection, in the ByteTrack manner: pure functions over one sequence's tensors.

Each frame, every track is moved forward at its constant velocity; confident people are
matched to all tracks, then weaker people to the tracks left over, by a mix of OKS and box
IoU. A track keeps its ID through up to ``track_buffer`` missed frames; a new person gets
an ID only after ``min_hits`` consecutive matched frames. People are ``Tensor[N, 4]`` boxes
(x1, y1, x2, y2), ``Tensor[N, 17, 3]`` COCO keypoints (x, y, score), both in image pixels,
and ``Tensor[N]`` scores.
"""

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_area, box_iou

from handlers.pose_tracker.schema import TrackerConfig
from handlers.vision.keypoints import COCO_KEYPOINTS

# Per-joint falloff of the COCO keypoint evaluation, in COCO_KEYPOINTS order.
COCO_SIGMAS = (
    0.026,
    0.025,
    0.025,
    0.035,
    0.035,
    0.079,
    0.079,
    0.072,
    0.072,
    0.062,
    0.062,
    0.107,
    0.107,
    0.087,
    0.087,
    0.089,
    0.089,
)

_TRACK_FIELDS = ("ids", "boxes", "keypoints", "box_velocity", "keypoint_velocity", "hits", "missed")


@dataclass(frozen=True)
class TrackState:
    """The tracks of one sequence, one row each, and the sequence's next ID and frame count."""

    ids: Tensor  # [T] long, -1 while tentative
    boxes: Tensor  # [T, 4] when last matched
    keypoints: Tensor  # [T, K, 3] when last matched
    box_velocity: Tensor  # [T, 4] pixels per frame
    keypoint_velocity: Tensor  # [T, K, 2] pixels per frame
    hits: Tensor  # [T] long, matched frames (all consecutive while tentative)
    missed: Tensor  # [T] long, frames since last matched
    next_id: int = 0
    frame: int = 0

    @classmethod
    def empty(cls, device: str | torch.device = "cpu") -> "TrackState":
        """A sequence with no tracks yet."""
        joints = len(COCO_KEYPOINTS)
        count = torch.zeros(0, dtype=torch.long, device=device)
        return cls(
            ids=count,
            boxes=torch.zeros(0, 4, device=device),
            keypoints=torch.zeros(0, joints, 3, device=device),
            box_velocity=torch.zeros(0, 4, device=device),
            keypoint_velocity=torch.zeros(0, joints, 2, device=device),
            hits=count,
            missed=count,
        )

    @property
    def confirmed(self) -> Tensor:
        """Which tracks have an ID, ``Tensor[T]`` bool."""
        return self.ids >= 0


def oks(tracked: Tensor, detected: Tensor, areas: Tensor, visibility: float = 0.2) -> Tensor:
    """Object keypoint similarity of each ``Tensor[T, K, 3]`` pose with each ``Tensor[N, K, 3]`` pose: ``Tensor[T, N]``.

    ``areas[N]`` are the detected people's areas. A pair counts only the joints scored
    above ``visibility`` in both poses; with none in common its OKS is 0.
    """
    variances = (2 * tracked.new_tensor(COCO_SIGMAS)) ** 2
    squared = (tracked[:, None, :, :2] - detected[None, :, :, :2]).square().sum(-1)  # [T, N, K]
    scale = 2 * (areas[None, :, None] + torch.finfo(areas.dtype).eps) * variances
    visible = (tracked[:, None, :, 2] > visibility) & (detected[None, :, :, 2] > visibility)
    return (torch.exp(-squared / scale) * visible).sum(-1) / visible.sum(-1).clamp(min=1)


def predict(state: TrackState, steps: Tensor) -> tuple[Tensor, Tensor]:
    """Boxes ``Tensor[T, 4]`` and keypoints ``Tensor[T, K, 3]`` of tracks ``steps[T]`` frames on at their velocity."""
    steps = steps.to(state.boxes.dtype).unsqueeze(1)
    boxes = state.boxes + steps * state.box_velocity
    xy = state.keypoints[..., :2] + steps.unsqueeze(2) * state.keypoint_velocity
    return boxes, torch.cat([xy, state.keypoints[..., 2:]], dim=2)


def associate(similarity: Tensor, min_similarity: float) -> tuple[Tensor, Tensor]:
    """One-to-one (track, person) pairs of most total ``Tensor[T, N]`` similarity, less any under ``min_similarity``."""
    rows, cols = linear_sum_assignment(-similarity.detach().cpu().double().numpy())
    rows, cols = torch.as_tensor(rows, device=similarity.device), torch.as_tensor(cols, device=similarity.device)
    allowed = similarity[rows, cols] >= min_similarity
    return rows[allowed], cols[allowed]


def track(
    state: TrackState, boxes: Tensor, keypoints: Tensor, scores: Tensor, config: TrackerConfig = TrackerConfig()
) -> tuple[TrackState, list[int | None]]:
    """Match one frame's people to the tracks of ``state``: the next state, and each person's ID (None if none yet)."""
    boxes, keypoints, scores = boxes.to(state.boxes), keypoints.to(state.boxes), scores.to(state.boxes)
    predicted_boxes, predicted_keypoints = predict(state, state.missed + 1)
    pose_similarity = oks(predicted_keypoints, keypoints, box_area(boxes), config.keypoint_visibility)
    similarity = config.oks_weight * pose_similarity + (1 - config.oks_weight) * box_iou(predicted_boxes, boxes)

    person_track = torch.full(scores.shape, -1, dtype=torch.long, device=scores.device)
    free = torch.arange(len(state.ids), device=scores.device)
    high = scores >= config.high_score
    low = (scores >= config.low_score) & ~high
    for chosen, min_similarity in ((high, config.min_similarity), (low, config.min_similarity_low)):
        people = chosen.nonzero().squeeze(1)
        rows, cols = associate(similarity[free][:, people], min_similarity)
        person_track[people[cols]] = free[rows]
        free = free[~torch.isin(torch.arange(len(free), device=free.device), rows)]

    born = (high & (person_track < 0)).nonzero().squeeze(1)
    person_track[born] = len(state.ids) + torch.arange(len(born), device=born.device)
    tracks = _with_new_tracks(state, boxes[born], keypoints[born])

    people = (person_track >= 0).nonzero().squeeze(1)
    rows = person_track[people]
    steps = (tracks.missed[rows] + 1).to(boxes.dtype).unsqueeze(1)
    # A track's first step sets its velocity outright; later ones are smoothed into it.
    weight = torch.where(tracks.hits[rows] >= 2, config.velocity_smoothing, 0.0).to(boxes.dtype).unsqueeze(1)
    box_step = (boxes[people] - tracks.boxes[rows]) / steps
    keypoint_step = (keypoints[people, :, :2] - tracks.keypoints[rows, :, :2]) / steps.unsqueeze(2)
    box_velocity = weight * tracks.box_velocity[rows] + (1 - weight) * box_step
    keypoint_velocity = weight.unsqueeze(2) * tracks.keypoint_velocity[rows] + (1 - weight.unsqueeze(2)) * keypoint_step
    hits = tracks.hits.index_put((rows,), tracks.hits[rows] + 1)
    confirm = (tracks.ids[rows] < 0) & (hits[rows] >= config.min_hits)
    new_ids = tracks.next_id + torch.arange(int(confirm.sum()), device=rows.device)  # in input order
    updated = replace(
        tracks,
        ids=tracks.ids.index_put((rows[confirm],), new_ids),
        boxes=tracks.boxes.index_put((rows,), boxes[people]),
        keypoints=tracks.keypoints.index_put((rows,), keypoints[people]),
        box_velocity=tracks.box_velocity.index_put((rows,), box_velocity),
        keypoint_velocity=tracks.keypoint_velocity.index_put((rows,), keypoint_velocity),
        hits=hits,
        missed=(tracks.missed + 1).index_put((rows,), torch.zeros_like(rows)),
        next_id=tracks.next_id + len(new_ids),
        frame=tracks.frame + 1,
    )
    # A tentative track dies at its first miss; a confirmed one once missed for more than track_buffer frames.
    keep = (updated.missed == 0) | (updated.confirmed & (updated.missed <= config.track_buffer))
    answer: list[int | None] = [None] * len(scores)
    for person, track_id in zip(people.tolist(), updated.ids[rows].tolist()):
        answer[person] = track_id if track_id >= 0 else None
    return replace(updated, **{name: getattr(updated, name)[keep] for name in _TRACK_FIELDS}), answer


def _with_new_tracks(state: TrackState, boxes: Tensor, keypoints: Tensor) -> TrackState:
    """``state`` with a tentative, still, unmatched track added at each ``Tensor[M, 4]`` box and its keypoints."""
    count = state.ids.new_zeros(len(boxes))
    rows = dict(
        ids=count - 1,
        boxes=boxes,
        keypoints=keypoints,
        box_velocity=torch.zeros_like(boxes),
        keypoint_velocity=torch.zeros_like(keypoints[..., :2]),
        hits=count,
        missed=count,
    )
    return replace(state, **{name: torch.cat([getattr(state, name), rows[name]]) for name in _TRACK_FIELDS})


class SequenceStore:
    """Each live sequence's ``TrackState`` in one worker, bounded in time and number, and which sequences had state.

    TorchServe's sequence batching tells a handler neither that a sequence ended nor that
    another worker served it before a restart. So state is freed by ``end``, after
    ``ttl_s`` unused, or least recently used first beyond ``max_sequences``; and a marker
    file per sequence in ``markers`` (a folder the model's workers share, which outlives
    them) remembers that it had state, so that a sequence whose state was lost is told so.
    Markers are removed by ``end`` and once unused for ``marker_ttl_s``.
    """

    def __init__(self, ttl_s: float, max_sequences: int, markers: Path, marker_ttl_s: float = 24 * 3600):
        self.ttl_s, self.max_sequences, self.marker_ttl_s = ttl_s, max_sequences, marker_ttl_s
        self.markers = markers
        self.markers.mkdir(parents=True, exist_ok=True)
        self._states: OrderedDict[str, tuple[TrackState, float]] = OrderedDict()  # least recently used first
        self._swept = 0.0

    def __len__(self) -> int:
        return len(self._states)

    def open(self, sequence_id: str, now: float) -> tuple[TrackState, bool]:
        """The sequence's state, and whether it had state that was lost (then its state starts empty)."""
        self._expire(now)
        if sequence_id in self._states:
            return self._states[sequence_id][0], False
        marker = self._marker(sequence_id)
        lost = marker.exists()
        marker.touch()
        os.utime(marker, (now, now))
        return TrackState.empty(), lost

    def save(self, sequence_id: str, state: TrackState, now: float) -> None:
        """Keep ``state`` as the sequence's latest; drop the least recently used sequences beyond the bound."""
        self._states[sequence_id] = (state, now)
        self._states.move_to_end(sequence_id)
        while len(self._states) > self.max_sequences:
            self._states.popitem(last=False)
        os.utime(self._marker(sequence_id), (now, now))

    def end(self, sequence_id: str) -> None:
        """Forget the sequence: its next frame starts a new one."""
        self._states.pop(sequence_id, None)
        self._marker(sequence_id).unlink(missing_ok=True)

    def _expire(self, now: float) -> None:
        while self._states and next(iter(self._states.values()))[1] < now - self.ttl_s:
            self._states.popitem(last=False)
        if now - self._swept > min(self.ttl_s, self.marker_ttl_s):
            self._swept = now
            for marker in self.markers.iterdir():
                try:
                    if marker.stat().st_mtime < now - self.marker_ttl_s:
                        marker.unlink()
                except FileNotFoundError:  # another worker of the model removed it
                    pass

    def _marker(self, sequence_id: str) -> Path:
        # Sequence IDs are any text a client sends: hash them into file names.
        return self.markers / hashlib.sha256(sequence_id.encode("utf-8", "surrogatepass")).hexdigest()
