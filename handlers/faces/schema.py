"""Faces' archive config: the MTCNN cascade's fixed settings (``CascadeSpec``), and the handler's config."""

from dataclasses import dataclass

from handlers.core.schema import ConfigSchema, HandlerConfig, config_key, top_level


@dataclass(frozen=True)
class CascadeSpec(ConfigSchema):
    """The cascade's fixed settings (archive config); per-request options come with each item.

    Written as the faces section: pyramid, thresholds, NMS overlaps, expression names, batch bounds.
    """

    factor: float = config_key("pyramid.factor")  # pyramid step
    max_side: int = config_key("pyramid.max_side")  # the largest pyramid level's long side (P-Net's compiled bound)
    min_padded_side: int = config_key("pyramid.min_padded_side")  # levels go to P-Net padded to at least this,
    padded_multiple: int = config_key("pyramid.padded_multiple")  # and to a multiple of this (its compiled shapes)
    proposal_threshold: float = config_key("thresholds.proposal")
    refine_threshold: float = config_key("thresholds.refine")
    proposal_level_nms: float = config_key("nms.proposal_level")
    proposal_nms: float = config_key("nms.proposal")
    refine_nms: float = config_key("nms.refine")
    output_min_overlap: float = config_key("nms.output_min_overlap")  # final suppression: overlap over the smaller box
    expressions: tuple[str, ...]
    max_crops: int = config_key("max_crops_per_forward")
    # Per image and pyramid level, the best kept: bounds NMS's cost on pathological pictures.
    max_proposals: int = config_key("max_proposals_per_level")

    def padded_side(self, side: int) -> int:
        """The side a level of ``side`` pixels is padded to for P-Net."""
        return max(self.min_padded_side, -(-side // self.padded_multiple) * self.padded_multiple)


@dataclass(frozen=True, kw_only=True)
class FacesConfig(HandlerConfig):
    """The cascade's sections at the top level, and the image limits."""

    cascade: CascadeSpec = top_level()
