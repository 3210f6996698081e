"""Keypoint R-CNN steps: which way each person faces and how much of them shows, from joint confidences.

The view rule (thresholds are on Keypoint R-CNN's joint scores, which are heatmap logits):

- front when at least 2 of nose, left eye and right eye score at least ``face_threshold``
  (a face turned to the camera shows them; from behind, at most the ears show);
- full body when at least 4 of the 6 hips, knees and ankles score at least
  ``body_threshold`` (a waist-up shot shows at most the 2 hips; one occluded leg
  still leaves 4);
- otherwise back, and head-and-shoulders.
"""

import torch
from torch import Tensor

from handlers.core.options import number
from handlers.keypoint_rcnn.schema import ViewThresholds
from handlers.vision.keypoints import COCO_KEYPOINTS

VIEWS = ("full-body-front", "full-body-back", "head-and-shoulders-front", "head-and-shoulders-back")
FACE = torch.tensor([COCO_KEYPOINTS.index(n) for n in ("nose", "left_eye", "right_eye")])
LOWER_BODY = torch.tensor(
    [COCO_KEYPOINTS.index(f"{side}_{joint}") for joint in ("hip", "knee", "ankle") for side in ("left", "right")]
)
MIN_FACE_JOINTS = 2
MIN_LOWER_BODY_JOINTS = 4


def view_options(view: ViewThresholds) -> dict:
    """The view thresholds as request options, defaulting to the archive's config."""
    return {
        "view_face_threshold": number(
            view.face_threshold, -100.0, 100.0, "joint score above which a face joint counts as seen (front view)"
        ),
        "view_body_threshold": number(
            view.body_threshold,
            -100.0,
            100.0,
            "joint score above which a hip, knee or ankle counts as seen (full body)",
        ),
    }


def classify_views(joint_scores: Tensor, face_threshold: float, body_threshold: float) -> list[str]:
    """One of ``VIEWS`` per person from ``joint_scores[P, 17]`` (COCO order), by the rule in the module docstring."""
    front = (joint_scores[:, FACE] >= face_threshold).sum(dim=1) >= MIN_FACE_JOINTS
    full_body = (joint_scores[:, LOWER_BODY] >= body_threshold).sum(dim=1) >= MIN_LOWER_BODY_JOINTS
    index = (~full_body).long() * 2 + (~front).long()
    return [VIEWS[i] for i in index.tolist()]
