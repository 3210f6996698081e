"""Keypoint R-CNN view classes from constructed joint-score vectors, including the edge cases of the rule."""

import pytest
import torch

from handlers.keypoint_rcnn.steps import VIEWS, classify_views
from handlers.vision.keypoints import COCO_KEYPOINTS

SEEN, UNSEEN = 5.0, -5.0
FACE = COCO_KEYPOINTS[:3]  # nose, eyes
UPPER = COCO_KEYPOINTS[3:11]  # ears, shoulders, elbows, wrists
LOWER = COCO_KEYPOINTS[11:]  # hips, knees, ankles


def scores(seen: tuple[str, ...], value: float = SEEN) -> torch.Tensor:
    """Joint scores with ``seen`` joints at ``value`` and every other joint unseen."""
    return torch.tensor([value if name in seen else UNSEEN for name in COCO_KEYPOINTS])


CASES = [
    ("everything seen", FACE + UPPER + LOWER, "full-body-front"),
    ("from behind, legs visible", UPPER + LOWER, "full-body-back"),
    ("portrait", FACE + UPPER[:4], "head-and-shoulders-front"),
    ("back of the head", UPPER[:4], "head-and-shoulders-back"),
    ("profile: nose and one eye", ("nose", "left_eye") + UPPER + LOWER, "full-body-front"),
    ("nose alone is not a face", ("nose",) + UPPER + LOWER, "full-body-back"),
    ("both eyes without the nose", ("left_eye", "right_eye") + UPPER, "head-and-shoulders-front"),
    ("waist-up: hips only", FACE + UPPER + LOWER[:2], "head-and-shoulders-front"),
    ("3 of 6 lower joints", FACE + UPPER + LOWER[:3], "head-and-shoulders-front"),
    ("4 of 6: one leg hidden", FACE + UPPER + ("left_hip", "right_hip", "left_knee", "left_ankle"), "full-body-front"),
    ("legs without hips", FACE + LOWER[2:], "full-body-front"),
    ("nothing seen", (), "head-and-shoulders-back"),
]


@pytest.mark.parametrize(("seen", "view"), [(seen, view) for _, seen, view in CASES], ids=[name for name, *_ in CASES])
def test_view_rule(seen, view):
    assert classify_views(scores(seen).unsqueeze(0), face_threshold=2.0, body_threshold=2.0) == [view]


def test_a_score_exactly_at_the_threshold_counts_as_seen():
    at_threshold = scores(FACE + LOWER, value=2.0)
    assert classify_views(at_threshold.unsqueeze(0), 2.0, 2.0) == ["full-body-front"]
    assert classify_views(at_threshold.unsqueeze(0), 2.0001, 2.0001) == ["head-and-shoulders-back"]


def test_face_and_body_thresholds_act_separately():
    person = torch.tensor([3.0 if name in FACE else 1.0 for name in COCO_KEYPOINTS]).unsqueeze(0)
    assert classify_views(person, face_threshold=2.0, body_threshold=2.0) == ["head-and-shoulders-front"]
    assert classify_views(person, face_threshold=2.0, body_threshold=0.5) == ["full-body-front"]
    assert classify_views(person, face_threshold=4.0, body_threshold=0.5) == ["full-body-back"]


def test_a_batch_of_people_is_classified_in_one_call():
    batch = torch.stack([scores(seen) for _, seen, _ in CASES])
    assert classify_views(batch, 2.0, 2.0) == [view for *_, view in CASES]
    assert classify_views(batch[:0], 2.0, 2.0) == []
    assert set(view for *_, view in CASES) == set(VIEWS)
