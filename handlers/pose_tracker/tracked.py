"""Tracking over any people handler: each frame's people matched to its sequence's tracks, answered with IDs.

``TrackedSequences`` goes before the handler it tracks in a handler class's bases
(``class PoseTrackerHandler(TrackedSequences, PosePipelineHandler)``): the handler finds
each frame's people, this matches them to the tracks of the frame's sequence
(``steps.track``) and answers them with a ``track_id`` each, plus the answer's
``sequence_id``, ``frame`` and ``reset``. The state between frames is a
``steps.SequenceStore`` in the worker.
"""

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from handlers.core.answers import Answer
from handlers.core.base import SEQUENCE_END_HEADER, Item
from handlers.core.options import flag
from handlers.pose.steps import POSE_LAYOUT
from handlers.pose_tracker.steps import SequenceStore, track
from handlers.vision.people import People, people_answer, ranked

TRACKING_OPTIONS = {"end": flag(False, "the sequence's last frame: answer it, then free the sequence's state")}


class TrackedSequences:
    """The tracking half of a tracker handler: sequences, their state and the tracked answers."""

    def initialize(self, context):
        if not context.model_yaml_config.get("sequenceBatching"):
            raise ValueError(
                f"{context.manifest['model']['modelName']} tracks sequences: its model-config.yaml needs sequenceBatching: true"
            )
        super().initialize(context)
        tracking = self.settings.tracking
        self.tracker_config = tracking.tracker
        self.sequences = SequenceStore(tracking.ttl_s, tracking.max_sequences, Path(self.model_dir) / "sequences")

    def prepare(self, items: list[Item]) -> Any:
        # The tracker sees people down to its low score band (ByteTrack's second stage);
        # each answer keeps only those its request asks for.
        floor = self.tracker_config.low_score
        seen = []
        for item in items:
            asked = item.options["score_threshold"]
            threshold = floor if asked is None else min(floor, asked)
            seen.append(replace(item, options={**item.options, "score_threshold": threshold, "max_people": None}))
        return super().prepare(seen)

    def answer(self, items: list[Item], inputs: Any, found: list[People]) -> list[Answer]:
        now = time.time()
        return [self.track_frame(item, people, now) for item, people in zip(items, found)]

    def track_frame(self, item: Item, people: People, now: float) -> Answer:
        """Match one frame's people to its sequence's tracks, keep the new state and answer the frame."""
        sequence_id = item.sequence_id
        state, reset = self.sequences.open(sequence_id, now)
        frame = state.frame
        state, track_ids = track(state, people.boxes, people.keypoints, people.scores, self.tracker_config)
        shown = ranked(people.scores, item.options).tolist()
        fields = {name: [values[p] for p in shown] for name, values in people.fields.items()}
        answered = People(
            people.boxes[shown],
            people.scores[shown],
            people.keypoints[shown],
            {**fields, "track_id": [track_ids[p] for p in shown]},
        )
        header = {**self.answer_header, "sequence_id": sequence_id, "frame": frame, "reset": reset}
        answer = people_answer(item, answered, POSE_LAYOUT, header)
        if not item.options["end"]:
            self.sequences.save(sequence_id, state, now)
            return answer
        self.sequences.end(sequence_id)
        # TorchServe closes the sequence at once rather than after its idle time.
        return replace(answer, headers={SEQUENCE_END_HEADER: sequence_id})
