"""TorchServe handler for pose tracking over video: the pose pipeline on each frame, then its sequence's tracker.

A video is a TorchServe sequence: sequence batching routes its frames, in order, to one
worker, at most one frame of a sequence per batch. Each frame's people are found as
``pose_pipeline`` finds them (or given as ``boxes``), matched to the tracks of its sequence
(``tracking.track``) and answered with a ``track_id`` each, plus the answer's
``sequence_id``, ``frame`` and ``reset``. The state between frames is a
``tracking.SequenceStore`` in the worker.
"""

import time
from dataclasses import replace
from pathlib import Path

from handlers.core.answers import Answer
from handlers.core.base import Item
from handlers.core.options import flag
from handlers.pose.steps import POSE_LAYOUT
from handlers.pose_pipeline.handler import PipelineInputs, PosePipelineHandler
from handlers.pose_tracker.schema import PoseTrackerConfig
from handlers.pose_tracker.steps import SequenceStore, track
from handlers.vision.people import People, people_answer, ranked

SEQUENCE_END_HEADER = "ts_request_sequence_end"  # TorchServe's (continuous sequence batching) answer header


class PoseTrackerHandler(PosePipelineHandler):
    """Detect-then-pose per frame, tracked per sequence: stable person IDs across a video's frames."""

    options = {
        **PosePipelineHandler.options,
        "end": flag(False, "the sequence's last frame: answer it, then free the sequence's state"),
    }
    schema = PoseTrackerConfig

    def initialize(self, context):
        if not context.model_yaml_config.get("sequenceBatching"):
            raise ValueError(
                f"{context.manifest['model']['modelName']} tracks sequences: its model-config.yaml needs sequenceBatching: true"
            )
        super().initialize(context)
        tracking = self.settings.tracking
        self.tracker_config = tracking.tracker
        self.sequences = SequenceStore(tracking.ttl_s, tracking.max_sequences, Path(self.model_dir) / "sequences")

    def prepare(self, items: list[Item]) -> PipelineInputs:
        images, options, scales = super().prepare(items)
        # The tracker sees people down to its low score band (ByteTrack's second stage);
        # each answer keeps only those its request asks for.
        floor = self.tracker_config.low_score
        seen = [
            {**item_options, "score_threshold": min(floor, item_options["score_threshold"]), "max_people": None}
            for item_options in options
        ]
        return images, seen, scales

    def answer(self, items: list[Item], inputs: PipelineInputs, found: list[People]) -> list[Answer]:
        now = time.time()
        return [self.track_frame(item, people, now) for item, people in zip(items, found)]

    def track_frame(self, item: Item, people: People, now: float) -> Answer:
        """Match one frame's people to its sequence's tracks, keep the new state and answer the frame."""
        sequence_id = item.sequence_id
        state, reset = self.sequences.open(sequence_id, now)
        frame = state.frame
        state, track_ids = track(state, people.boxes, people.keypoints, people.scores, self.tracker_config)
        shown = ranked(people.scores, item.options)
        answered = People(
            people.boxes[shown],
            people.scores[shown],
            people.keypoints[shown],
            {"track_id": [track_ids[p] for p in shown.tolist()]},
        )
        header = {**self.answer_header, "sequence_id": sequence_id, "frame": frame, "reset": reset}
        answer = people_answer(item, answered, POSE_LAYOUT, header)
        if not item.options["end"]:
            self.sequences.save(sequence_id, state, now)
            return answer
        self.sequences.end(sequence_id)
        # TorchServe closes the sequence at once rather than after its idle time.
        return replace(answer, headers={SEQUENCE_END_HEADER: sequence_id})
