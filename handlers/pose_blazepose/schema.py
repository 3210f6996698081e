"""BlazePose's archive config: how its detector and landmark model see a photo and whom they keep."""

from dataclasses import dataclass

from handlers.core.schema import ConfigSchema, HandlerConfig


@dataclass(frozen=True)
class BlazePoseDetectorSpec(ConfigSchema):
    """The person detector's settings (mediapipe/modules/pose_detection): the ``detector`` section."""

    input_size: int  # the letterboxed square the detector sees
    min_score: float
    nms_iou: float  # weighted suppression of overlapping detections
    max_people: int  # best detections kept per photo


@dataclass(frozen=True)
class BlazePoseLandmarkSpec(ConfigSchema):
    """The landmark model's settings (mediapipe/modules/pose_landmark): the ``landmarks`` section."""

    input_size: int  # the square person crop it sees
    roi_scale: float  # the crop's side over the detected body's diameter
    min_pose_score: float  # detected people whose crop scores below it are dropped
    max_crops_per_forward: int  # the landmark program's batch bound


@dataclass(frozen=True, kw_only=True)
class BlazePoseConfig(HandlerConfig):
    """BlazePose's two sections and the image limits."""

    detector: BlazePoseDetectorSpec
    landmarks: BlazePoseLandmarkSpec
