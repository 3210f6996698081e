"""Style transfer's archive config: the image limits alone (the network takes any photo within them)."""

from dataclasses import dataclass

from handlers.core.schema import HandlerConfig


@dataclass(frozen=True, kw_only=True)
class StyleConfig(HandlerConfig):
    """The style handler's config: nothing beyond the image limits."""
