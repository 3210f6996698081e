"""TorchServe handler for pose tracking over video with BlazePose: ``pose_blazepose`` on each frame, then its
sequence's tracker (``tracked.TrackedSequences``); real weights offline, from MediaPipe's wheel."""

from handlers.pose_blazepose.handler import BlazePoseHandler
from handlers.pose_tracker.schema import BlazePoseTrackerConfig
from handlers.pose_tracker.tracked import TRACKING_OPTIONS, TrackedSequences


class BlazePoseTrackerHandler(TrackedSequences, BlazePoseHandler):
    """BlazePose per frame, tracked per sequence: stable person IDs across a video's frames."""

    options = {**BlazePoseHandler.options, **TRACKING_OPTIONS}
    schema = BlazePoseTrackerConfig
