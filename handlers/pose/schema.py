"""Pose's archive config: how the model sees a person (``PoseSpec``), and the pose handler's whole config."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.core.schema import HandlerConfig


@dataclass(frozen=True)
class PoseSpec:
    """How the model sees a person: crop size, pixel normalisation, heatmap geometry (archive config)."""

    crop_size: tuple[int, int]  # (height, width)
    channels: str  # rgb | bgr: the channel order the model was trained on
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stride: float  # crop pixels per heatmap pixel
    offset: float  # heatmap index u is crop point stride * u + offset
    sigma: float = 2.0
    refine: str = "dark"
    padding: float = 1.25  # boxes widen by this before cropping
    max_crops_per_forward: int = 64

    def to_config(self) -> dict[str, Any]:
        """The ``input`` and ``heatmap`` sections, the box padding and crops per call."""
        height, width = self.crop_size
        return {
            "input": {
                "height": height,
                "width": width,
                "channels": self.channels,
                "mean": list(self.mean),
                "std": list(self.std),
            },
            "heatmap": {"stride": self.stride, "offset": self.offset, "sigma": self.sigma, "refine": self.refine},
            "box_padding": self.padding,
            "max_crops_per_forward": self.max_crops_per_forward,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "PoseSpec":
        """Read the ``input`` and ``heatmap`` sections written by the export recipe."""
        image, heatmap = config["input"], config["heatmap"]
        return cls(
            crop_size=(int(image["height"]), int(image["width"])),
            channels=image["channels"],
            mean=tuple(image["mean"]),
            std=tuple(image["std"]),
            stride=float(heatmap["stride"]),
            offset=float(heatmap["offset"]),
            sigma=float(heatmap.get("sigma", 2.0)),
            refine=heatmap.get("refine", "dark"),
            padding=float(config.get("box_padding", 1.25)),
            max_crops_per_forward=int(config.get("max_crops_per_forward", 64)),
        )

    @property
    def flip_shift(self) -> int:
        """Columns that realign mirrored heatmaps (see ``heatmaps.flip_back``)."""
        shift = 1 - 2 * self.offset / self.stride
        if shift != int(shift):
            raise ValueError(f"heatmap offset {self.offset} gives a fractional flip shift {shift}")
        return int(shift)


@dataclass(frozen=True, kw_only=True)
class PoseConfig(HandlerConfig):
    """The pose handler's config: the pose sections at the top level, and the image limits."""

    pose: PoseSpec

    def to_config(self) -> dict[str, Any]:
        return {**self.pose.to_config(), "limits": self.limits.to_config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "PoseConfig":
        return cls(pose=PoseSpec.from_config(config), limits=cls.limits_of(config))
