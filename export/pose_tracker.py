"""Pose tracking: the pose pipeline's parts (or BlazePose's) per video frame, with stable person IDs across a
sequence; its recipes."""

from dataclasses import fields, replace

from handlers.pose_tracker.schema import BlazePoseTrackerConfig, PoseTrackerConfig, TrackerConfig, TrackingSpec

from .archive import Sequences
from .pose_blazepose import RECIPES as BLAZEPOSE_RECIPES
from .pose_pipeline import RECIPES as PIPELINE_RECIPES
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


def tracker_recipe(name: str, people: Recipe, handler: str, config: type) -> Recipe:
    """``people``'s parts and config (``config``, a subclass of its config's class, adds ``tracking``) per frame,
    people tracked across each video."""
    people_config = {f.name: getattr(people.config, f.name) for f in fields(people.config)}
    return Recipe(
        name=name,
        parts=people.parts,
        handler=handler,
        config=config(**people_config, tracking=TRACKING),
        serving=TRACKER_SERVING,
    )


(POSE_PIPELINE,) = PIPELINE_RECIPES
(BLAZEPOSE,) = BLAZEPOSE_RECIPES
RECIPES = (
    tracker_recipe("pose_tracker", POSE_PIPELINE, "handlers.pose_tracker.handler", PoseTrackerConfig),
    # Real weights offline: BlazePose from MediaPipe's wheel.
    tracker_recipe(
        "pose_tracker_blazepose", BLAZEPOSE, "handlers.pose_tracker.blazepose_handler", BlazePoseTrackerConfig
    ),
)
