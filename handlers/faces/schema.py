"""Faces' archive config: the MTCNN cascade's fixed settings (``CascadeSpec``), and the handler's config."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.core.schema import HandlerConfig


@dataclass(frozen=True)
class CascadeSpec:
    """The cascade's fixed settings (archive config); per-request options come with each item."""

    factor: float  # pyramid step
    max_side: int  # the largest pyramid level's long side (P-Net's compiled bound)
    min_padded_side: int  # levels go to P-Net padded to at least this,
    padded_multiple: int  # and to a multiple of this (its compiled shapes)
    proposal_threshold: float
    refine_threshold: float
    proposal_level_nms: float
    proposal_nms: float
    refine_nms: float
    output_min_overlap: float  # final suppression: overlap over the smaller box
    expressions: tuple[str, ...]
    max_crops: int
    max_proposals: int  # per image and pyramid level, the best kept: bounds NMS's cost on pathological pictures

    def padded_side(self, side: int) -> int:
        """The side a level of ``side`` pixels is padded to for P-Net."""
        return max(self.min_padded_side, -(-side // self.padded_multiple) * self.padded_multiple)

    def to_config(self) -> dict[str, Any]:
        """The faces section: pyramid, thresholds, NMS overlaps, expression names, batch bounds."""
        return {
            "pyramid": {
                "factor": self.factor,
                "max_side": self.max_side,
                "min_padded_side": self.min_padded_side,
                "padded_multiple": self.padded_multiple,
            },
            "thresholds": {"proposal": self.proposal_threshold, "refine": self.refine_threshold},
            "nms": {
                "proposal_level": self.proposal_level_nms,
                "proposal": self.proposal_nms,
                "refine": self.refine_nms,
                "output_min_overlap": self.output_min_overlap,
            },
            "expressions": list(self.expressions),
            "max_crops_per_forward": self.max_crops,
            "max_proposals_per_level": self.max_proposals,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "CascadeSpec":
        """Read the faces section written by the export recipe."""
        pyramid, thresholds, nms = config["pyramid"], config["thresholds"], config["nms"]
        return cls(
            float(pyramid["factor"]),
            int(pyramid["max_side"]),
            int(pyramid["min_padded_side"]),
            int(pyramid["padded_multiple"]),
            float(thresholds["proposal"]),
            float(thresholds["refine"]),
            float(nms["proposal_level"]),
            float(nms["proposal"]),
            float(nms["refine"]),
            float(nms["output_min_overlap"]),
            tuple(config["expressions"]),
            int(config["max_crops_per_forward"]),
            int(config["max_proposals_per_level"]),
        )


@dataclass(frozen=True, kw_only=True)
class FacesConfig(HandlerConfig):
    """The cascade's sections at the top level, and the image limits."""

    cascade: CascadeSpec

    def to_config(self) -> dict[str, Any]:
        return {**self.cascade.to_config(), "limits": self.limits.to_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "FacesConfig":
        return cls(cascade=CascadeSpec.from_config(config), limits=cls.limits_of(config))
