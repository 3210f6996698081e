"""Pose's archive config: how the model sees a person (``PoseSpec``), and the pose handler's whole config."""

from dataclasses import dataclass

from handlers.core.schema import ConfigSchema, HandlerConfig, config_key, top_level


@dataclass(frozen=True)
class PoseSpec(ConfigSchema):
    """How the model sees a person: crop size, pixel normalisation, heatmap geometry (archive config).

    Written as the ``input`` and ``heatmap`` sections, the box padding and crops per call.
    """

    crop_size: tuple[int, int] = config_key("input.height", "input.width")  # (height, width)
    channels: str = config_key("input.channels")  # rgb | bgr: the channel order the model was trained on
    mean: tuple[float, ...] = config_key("input.mean")
    std: tuple[float, ...] = config_key("input.std")
    stride: float = config_key("heatmap.stride")  # crop pixels per heatmap pixel
    offset: float = config_key("heatmap.offset")  # heatmap index u is crop point stride * u + offset
    sigma: float = config_key("heatmap.sigma", default=2.0)
    refine: str = config_key("heatmap.refine", default="dark")
    padding: float = config_key("box_padding", default=1.25)  # boxes widen by this before cropping
    max_crops_per_forward: int = 64

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

    pose: PoseSpec = top_level()
