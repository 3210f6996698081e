"""BlazePose: MediaPipe's pose detector and landmark model (full), converted from the TFLite files of its wheel; the
recipe."""

from handlers.pose_blazepose.schema import BlazePoseConfig, BlazePoseDetectorSpec, BlazePoseLandmarkSpec

from .archive import Pt2Shapes
from .mediapipe import POSE_DETECTION, POSE_LANDMARK_FULL, mediapipe_part
from .recipe import IMAGE_LIMITS, POSE_SERVING, Recipe

# MediaPipe's pose graph settings (mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt: score 0.5, weighted
# suppression at IoU 0.3; pose_landmark/pose_detection_to_roi.pbtxt: a 1.25 square; pose_landmark_by_roi_cpu.pbtxt:
# a pose flag of 0.5); at most 16 people per photo and 16 crops per landmark call (the program's batch bound).
BLAZEPOSE_DETECTOR = BlazePoseDetectorSpec(input_size=224, min_score=0.5, nms_iou=0.3, max_people=16)
BLAZEPOSE_LANDMARKS = BlazePoseLandmarkSpec(
    input_size=256, roi_scale=1.25, min_pose_score=0.5, max_crops_per_forward=16
)
BLAZEPOSE_DETECTOR_PART = mediapipe_part("model", POSE_DETECTION, (BLAZEPOSE_DETECTOR.input_size,) * 2, Pt2Shapes())
BLAZEPOSE_PARTS = (
    BLAZEPOSE_DETECTOR_PART,
    mediapipe_part(
        "landmarks",
        POSE_LANDMARK_FULL,
        (BLAZEPOSE_LANDMARKS.input_size,) * 2,
        Pt2Shapes(batch=BLAZEPOSE_LANDMARKS.max_crops_per_forward),
    ),
)
BLAZEPOSE_CONFIG = BlazePoseConfig(detector=BLAZEPOSE_DETECTOR, landmarks=BLAZEPOSE_LANDMARKS, limits=IMAGE_LIMITS)

RECIPES = (
    Recipe(
        name="pose_blazepose",
        parts=BLAZEPOSE_PARTS,
        handler="handlers.pose_blazepose.handler",
        config=BLAZEPOSE_CONFIG,
        serving=POSE_SERVING,
        served_by_default=True,
    ),
)
