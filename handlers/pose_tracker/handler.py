"""TorchServe handler for pose tracking over video: the pose pipeline on each frame, then its sequence's tracker.

A video is a TorchServe sequence: sequence batching routes its frames, in order, to one
worker, at most one frame of a sequence per batch. Each frame's people are found as
``pose_pipeline`` finds them (or given as ``boxes``) and tracked (``tracked.TrackedSequences``).
"""

from handlers.pose_pipeline.handler import PosePipelineHandler
from handlers.pose_tracker.schema import PoseTrackerConfig
from handlers.pose_tracker.tracked import TRACKING_OPTIONS, TrackedSequences


class PoseTrackerHandler(TrackedSequences, PosePipelineHandler):
    """Detect-then-pose per frame, tracked per sequence: stable person IDs across a video's frames."""

    options = {**PosePipelineHandler.options, **TRACKING_OPTIONS}
    schema = PoseTrackerConfig
