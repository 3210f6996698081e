"""Pose tracking: the pose pipeline's parts per video frame, with stable person IDs across a sequence; its recipe."""

from dataclasses import replace

from handlers.pose_tracker.schema import PoseTrackerConfig, TrackerConfig, TrackingSpec

from .archive import Sequences
from .pose_pipeline import PIPELINE_CONFIG, PIPELINE_PARTS
from .recipe import DETECTION_SERVING, Recipe

# Pose tracking: a video is a sequence; TorchServe closes one idle for a minute (the handler
# frees its state as soon), refuses new ones beyond 64 open per model, and lets one
# sequence queue 8 frames. A worker keeps at most 256 sequences' state (a few kB each).
TRACKER_SERVING = replace(
    DETECTION_SERVING, sequences=Sequences(max_idle_ms=60_000, timeout_ms=0, max_sequences=64, queue_size=8)
)
TRACKING = TrackingSpec(ttl_s=60, max_sequences=256, tracker=TrackerConfig())
# The same as model-config.yaml holds it (load tests put it on archives of their own).
TRACKING_CONFIG = TRACKING.to_config()

RECIPES = (
    Recipe(
        name="pose_tracker",
        parts=PIPELINE_PARTS,
        handler="handlers.pose_tracker.handler",
        config=PoseTrackerConfig(
            detector=PIPELINE_CONFIG.detector,
            pose=PIPELINE_CONFIG.pose,
            limits=PIPELINE_CONFIG.limits,
            tracking=TRACKING,
        ),
        serving=TRACKER_SERVING,
        served_by_default=False,
    ),
)
