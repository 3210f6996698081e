"""Pose tracking's archive config: the tracker's settings, the sequences a worker keeps, and the handler's config."""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from handlers.core.schema import ConfigSchema
from handlers.pose_blazepose.schema import BlazePoseConfig
from handlers.pose_pipeline.schema import PipelineConfig


@dataclass(frozen=True)
class TrackerConfig(ConfigSchema):
    """Score bands, match thresholds and track lifetimes of ``track``.

    Its section holds only the settings that differ from these defaults, and reading it refuses an unknown one.
    """

    high_score: float = 0.5  # people at least this sure are matched first and may start tracks
    low_score: float = 0.1  # people under this are ignored
    min_similarity: float = 0.3  # least similarity of a match in the first stage
    min_similarity_low: float = 0.5  # ... in the second, where people are less sure
    oks_weight: float = 0.5  # similarity = oks_weight * OKS + (1 - oks_weight) * box IoU
    track_buffer: int = 30  # frames a confirmed track may go unmatched and keep its ID
    min_hits: int = 2  # consecutive matched frames before a new track gets an ID
    keypoint_visibility: float = 0.2  # joints scored at most this are left out of OKS
    velocity_smoothing: float = 0.5  # weight of the old velocity in each update

    def to_config(self) -> dict[str, Any]:
        """The ``tracker`` section: the settings that differ from these defaults."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "TrackerConfig":
        """Read the ``tracker`` section (``TypeError`` naming a setting it does not know)."""
        return cls(**config)


@dataclass(frozen=True)
class TrackingSpec(ConfigSchema):
    """How long a worker keeps an idle sequence's state, how many sequences at most, and how it tracks."""

    ttl_s: float = 60
    max_sequences: int = 256
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


def _tracking_last(config: dict[str, Any]) -> dict[str, Any]:
    config["tracking"] = config.pop("tracking")  # after the people model's limits, where the archives have it
    return config


@dataclass(frozen=True, kw_only=True)
class PoseTrackerConfig(PipelineConfig):
    """The pipeline's config and the ``tracking`` section."""

    tracking: TrackingSpec

    def to_config(self) -> dict[str, Any]:
        """The pipeline's config, then the ``tracking`` section."""
        return _tracking_last(super().to_config())


@dataclass(frozen=True, kw_only=True)
class BlazePoseTrackerConfig(BlazePoseConfig):
    """BlazePose's config and the ``tracking`` section."""

    tracking: TrackingSpec

    def to_config(self) -> dict[str, Any]:
        """BlazePose's config, then the ``tracking`` section."""
        return _tracking_last(super().to_config())
