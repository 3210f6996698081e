"""The smart filter's own steps: a palette of backgrounds made in code, and the choice of one from the largest face's
expression.

Backgrounds are pure functions of the photo's size and device to ``uint8[3, H, W]``, the
same for the same size, so a test can rebuild what was composited; ``blur`` is the
segmenter's blur of the photo itself.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from handlers.core.errors import RequestError
from handlers.core.options import Option, choice

Background = Callable[[Tensor], Tensor]


def vertical_gradient(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Background:
    """A background fading from ``top`` to ``bottom`` (RGB)."""

    def make(photo: Tensor) -> Tensor:
        height, width = photo.shape[-2:]
        t = torch.linspace(0, 1, height, device=photo.device).view(1, height, 1)
        ends = torch.tensor([top, bottom], dtype=torch.float32, device=photo.device).view(2, 3, 1, 1)
        return (ends[0] * (1 - t) + ends[1] * t).expand(3, height, width).round().to(torch.uint8)

    return make


def rainbow(photo: Tensor) -> Tensor:
    """Hues from red to violet across the picture, paler towards the bottom."""
    height, width = photo.shape[-2:]
    hue = torch.linspace(0, 5 / 6, width, device=photo.device).view(1, 1, width)
    saturation = torch.linspace(0.75, 0.35, height, device=photo.device).view(1, height, 1)
    # HSV to RGB with value 1: each channel's distance from its hue sector, clamped.
    k = (torch.tensor([5.0, 3.0, 1.0], device=photo.device).view(3, 1, 1) + hue * 6) % 6
    rgb = 1 - saturation * (torch.minimum(k, 4 - k).clamp(0, 1))
    return (rgb * 255).round().to(torch.uint8)


def _seeded(shape: tuple[int, ...], seed: int, device: torch.device) -> Tensor:
    """Uniform noise that is the same on every device (drawn on the CPU)."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(device)


def texture(photo: Tensor) -> Tensor:
    """Soft marbled blobs in two tones: smooth noise (8 cells on the long side), stretched to the picture."""
    height, width = photo.shape[-2:]
    cells = (max(2, round(8 * height / max(height, width))), max(2, round(8 * width / max(height, width))))
    noise = F.interpolate(
        _seeded((1, 1, *cells), 11, photo.device), size=(height, width), mode="bicubic", align_corners=True
    )[0]
    tones = torch.tensor([[38.0, 70, 90], [222, 196, 160]], device=photo.device).view(2, 3, 1, 1)
    t = noise.clamp(0, 1)
    return (tones[0] * (1 - t) + tones[1] * t).round().to(torch.uint8)


def bokeh(photo: Tensor, discs: int = 24) -> Tensor:
    """Out-of-focus lights: soft discs of warm colours on a dark gradient, drawn at most 256 px wide, then resized."""
    height, width = photo.shape[-2:]
    scale = min(1.0, 256 / max(height, width))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    canvas = vertical_gradient((18, 16, 48), (50, 20, 60))(torch.empty(0, h, w, device=photo.device)).float()
    draws = _seeded((discs, 6), 7, photo.device)
    centres = draws[:, :2] * torch.tensor([w, h], device=photo.device)
    radii = (0.04 + 0.1 * draws[:, 2]) * max(h, w)
    colours = torch.stack([200 + 55 * draws[:, 3], 120 + 100 * draws[:, 4], 60 + 120 * draws[:, 5]], dim=1)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=photo.device) + 0.5, torch.arange(w, device=photo.device) + 0.5, indexing="ij"
    )
    distance = ((xs[None] - centres[:, 0, None, None]) ** 2 + (ys[None] - centres[:, 1, None, None]) ** 2).sqrt()
    light = 0.55 * torch.sigmoid((radii[:, None, None] - distance) / (0.15 * radii[:, None, None]))  # [discs, h, w]
    for weight, colour in zip(light, colours):  # discs over each other, as lights through a lens
        canvas = canvas * (1 - weight) + colour.view(3, 1, 1) * weight
    return (
        F.interpolate(canvas[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )


@dataclass(frozen=True)
class PaletteEntry:
    """A background and the theme keywords that select it; ``make`` None: the segmenter's own blur of the photo."""

    make: Background | None
    keywords: frozenset[str]


PALETTE: dict[str, PaletteEntry] = {
    "rainbow": PaletteEntry(rainbow, frozenset({"rainbow", "colourful", "colorful", "bright"})),
    "bokeh": PaletteEntry(bokeh, frozenset({"bokeh", "lights", "party", "night"})),
    "sunset": PaletteEntry(
        vertical_gradient((255, 176, 92), (214, 72, 110)), frozenset({"gradient", "warm", "sunset"})
    ),
    "ocean": PaletteEntry(
        vertical_gradient((120, 200, 230), (20, 60, 140)), frozenset({"gradient", "cool", "calm", "ocean"})
    ),
    "texture": PaletteEntry(texture, frozenset({"texture", "pattern", "marble"})),
    "blur": PaletteEntry(None, frozenset({"blur", "subtle", "original"})),
}
KEYWORDS = frozenset().union(*(entry.keywords for entry in PALETTE.values()))

# The default mapping, best first: every list names the whole palette, so any theme leaves a choice.
# Joy gets colour and light; sadness and fear warm tones; anger and disgust calm, cool ones; no face the photo's own
# blur.
EXPRESSION_BACKGROUNDS: dict[str | None, tuple[str, ...]] = {
    "happy": ("rainbow", "bokeh", "sunset", "texture", "ocean", "blur"),
    "surprise": ("bokeh", "rainbow", "texture", "sunset", "ocean", "blur"),
    "neutral": ("ocean", "texture", "blur", "sunset", "bokeh", "rainbow"),
    "sad": ("sunset", "bokeh", "rainbow", "texture", "ocean", "blur"),
    "fear": ("sunset", "ocean", "blur", "texture", "bokeh", "rainbow"),
    "angry": ("ocean", "blur", "texture", "sunset", "bokeh", "rainbow"),
    "disgust": ("texture", "ocean", "blur", "sunset", "bokeh", "rainbow"),
    None: ("blur", "ocean", "texture", "sunset", "bokeh", "rainbow"),
}


def _theme(name: str, value: Any) -> frozenset[str]:
    """Comma-separated keywords (or a JSON list of them), each one the palette knows."""
    words = value if isinstance(value, list) else str(value).split(",")
    keywords = frozenset(str(word).strip().lower() for word in words if str(word).strip())
    unknown = sorted(keywords - KEYWORDS)
    if unknown or not keywords:
        raise RequestError(
            f"option {name!r} has {'unknown keyword ' + repr(unknown[0]) if unknown else 'no keyword'}; known: {', '.join(sorted(KEYWORDS))}",
            "InvalidOption",
        )
    return keywords


FILTER_OPTIONS = {
    "theme": Option(
        _theme,
        None,
        "keywords that narrow the palette, e.g. rainbow,texture (the expression still orders what is left)",
    ),
    "background": choice(None, tuple(PALETTE), f"force one background: {', '.join(PALETTE)}"),
}


def choose_background(expression: str | None, theme: frozenset[str] | None, forced: str | None) -> str:
    """The background for a photo whose largest face shows ``expression`` (None: no face), within ``theme``, unless
    ``forced``."""
    if forced is not None:
        return forced
    preferred = EXPRESSION_BACKGROUNDS[expression]
    return next(name for name in preferred if theme is None or PALETTE[name].keywords & theme)


def largest(boxes: Tensor) -> int | None:
    """Index of the largest of ``boxes[F, 4]`` by area, None when there is none."""
    return int(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).argmax()) if len(boxes) else None


def decision(faces: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> dict[str, Any]:
    """The filter's choice from a photo's face records (as answered, best first): expression, smiling and background."""
    index = largest(torch.tensor([face["box"] for face in faces], dtype=torch.float64).view(-1, 4))
    face = faces[index] if index is not None else None
    expression = face["expression"]["label"] if face else None
    return {
        "expression": expression,
        "smiling": face["smiling"] if face else None,
        "background": choose_background(expression, options["theme"], options["background"]),
    }


def decision_headers(chosen: Mapping[str, Any]) -> dict[str, str]:
    """The decision beside a picture answer, so that a picture's client learns why without asking for JSON:
    ``X-Filter-Background``, and ``X-Filter-Expression`` / ``X-Filter-Smiling`` when a face was found."""
    headers = {"X-Filter-Background": chosen["background"]}
    if chosen["expression"] is not None:
        headers.update(
            {"X-Filter-Expression": chosen["expression"], "X-Filter-Smiling": str(chosen["smiling"]).lower()}
        )
    return headers
