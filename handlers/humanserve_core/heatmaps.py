"""Heatmap decoding to keypoints in image pixels: batched tensor code, no loop over people or joints.

A heatmap pixel (u, v) (integer indices) stands for crop point
``(stride * u + offset, stride * v + offset)``. ``offset`` records how the model's training
targets were placed: ``stride / 2`` when heatmap pixels are centred on their crop blocks,
``0`` for the MSRA SimpleBaseline release (targets at ``crop_index / stride``; see
``export/recipes.py`` for the derivation).
"""

import torch
from torch import Tensor

from .geometry import crop_to_image

REFINEMENTS = ("dark", "quarter", "none")

# Neighbourhood read around each peak: (dx, dy) pairs, gathered in one indexing op.
_NEIGHBOURS = torch.tensor(
    [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2), (0, -2),
     (1, 1), (-1, 1), (1, -1), (-1, -1)]
)  # fmt: skip


def peaks(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """Integer (x, y) of each map's maximum as ``Tensor[N, K, 2]`` float, and its value ``Tensor[N, K]``."""
    width = heatmaps.shape[-1]
    values, flat = heatmaps.flatten(2).max(dim=2)
    xy = torch.stack([flat % width, torch.div(flat, width, rounding_mode="floor")], dim=2)
    return xy.to(heatmaps.dtype), values


def neighbourhood(maps: Tensor, xy: Tensor) -> Tensor:
    """Values at each peak's 13 neighbours (``_NEIGHBOURS`` order), ``Tensor[N, K, 13]``; 0 off the map."""
    n, k, height, width = maps.shape
    padded = torch.nn.functional.pad(maps, (2, 2, 2, 2)).flatten(2)
    offsets = _NEIGHBOURS.to(maps.device)
    x = xy[..., 0].long().unsqueeze(-1) + offsets[:, 0] + 2
    y = xy[..., 1].long().unsqueeze(-1) + offsets[:, 1] + 2
    count = offsets.shape[0]  # explicit sizes keep empty batches (no people) well-defined
    return padded.gather(2, (y * (width + 4) + x).view(n, k, count)).view(n, k, count)


def dark_offsets(heatmaps: Tensor, xy: Tensor, sigma: float = 2.0) -> Tensor:
    """DARK sub-pixel step: smooth, take logs, one Newton step of the local quadratic; ``Tensor[N, K, 2]``.

    Only the 5x5 neighbourhood of each peak is smoothed (a reflect-padded window the
    kernel's size around it), which equals smoothing whole maps at every peak that is
    refined, for a fraction of the work. The step is kept only at a true maximum
    (negative-definite Hessian) at least two pixels from the border, clamped to one pixel.
    """
    n, k, height, width = heatmaps.shape
    radius = round(3 * sigma) - 1  # kernel 11 for sigma 2, as DARK uses
    reach = radius + 2
    padded = torch.nn.functional.pad(heatmaps, (radius,) * 4, mode="reflect")
    padded = torch.nn.functional.pad(padded, (2, 2, 2, 2)).flatten(2)
    window = torch.arange(-reach, reach + 1, device=heatmaps.device)
    rows = xy[..., 1].long().view(n, k, 1, 1) + reach + window.view(1, 1, -1, 1)
    cols = xy[..., 0].long().view(n, k, 1, 1) + reach + window.view(1, 1, 1, -1)
    side = 2 * reach + 1
    patches = padded.gather(2, (rows * (width + 2 * reach) + cols).view(n, k, side * side))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, device=heatmaps.device) / sigma) ** 2)
    kernel = (taps[:, None] * taps[None, :] / taps.sum() ** 2).to(heatmaps.dtype)
    smooth = torch.nn.functional.conv2d(patches.view(n * k, 1, side, side), kernel.view(1, 1, *kernel.shape))
    taps_at = ((_NEIGHBOURS[:, 1] + 2) * 5 + _NEIGHBOURS[:, 0] + 2).to(heatmaps.device)  # in the 5x5 result
    v = smooth.view(n, k, 25).clamp(min=1e-10).log()[..., taps_at]
    dx = (v[..., 1] - v[..., 2]) / 2
    dy = (v[..., 3] - v[..., 4]) / 2
    dxx = (v[..., 5] - 2 * v[..., 0] + v[..., 6]) / 4
    dyy = (v[..., 7] - 2 * v[..., 0] + v[..., 8]) / 4
    dxy = (v[..., 9] - v[..., 10] - v[..., 11] + v[..., 12]) / 4
    det = dxx * dyy - dxy * dxy
    maximum = (dxx < 0) & (det > 1e-12)
    safe_det = torch.where(maximum, det, torch.ones_like(det))
    step = torch.stack([(dyy * dx - dxy * dy), (dxx * dy - dxy * dx)], dim=-1) / safe_det[..., None]
    keep = maximum & _inside(heatmaps, xy, margin=2)
    return torch.where(keep[..., None], -step.clamp(-1, 1), torch.zeros_like(step))


def quarter_offsets(heatmaps: Tensor, xy: Tensor) -> Tensor:
    """The SimpleBaseline step: a quarter pixel towards the higher neighbour; ``Tensor[N, K, 2]``."""
    v = neighbourhood(heatmaps, xy)
    step = torch.stack([v[..., 1] - v[..., 2], v[..., 3] - v[..., 4]], dim=-1).sign() * 0.25
    return torch.where(_inside(heatmaps, xy, margin=1)[..., None], step, torch.zeros_like(step))


def flip_back(heatmaps: Tensor, flip_index: Tensor, shift: int) -> Tensor:
    """Heatmaps of mirrored crops back to the unmirrored frame: mirror, swap left/right joints, realign.

    ``shift`` columns compensate where heatmap pixels are not centred on their crop
    blocks: ``shift = 1 - 2 * offset / stride`` (1 for the MSRA release, 0 when centred).
    """
    restored = heatmaps.flip(-1)[:, flip_index.to(heatmaps.device)]
    if shift:
        restored = torch.nn.functional.pad(restored, (shift, 0))[..., :-shift]
    return restored


def decode_heatmaps(
    heatmaps: Tensor,
    boxes: Tensor,
    crop_size: tuple[int, int],
    stride: float,
    offset: float,
    refine: str = "dark",
    sigma: float = 2.0,
) -> Tensor:
    """``Tensor[N, K, h, w]`` heatmaps of crops cut from ``boxes`` to ``Tensor[N, K, 3]`` (x, y, score).

    x, y are image pixels; score is the heatmap's peak value.
    """
    xy, scores = peaks(heatmaps)
    if refine == "dark":
        xy = xy + dark_offsets(heatmaps, xy, sigma)
    elif refine == "quarter":
        xy = xy + quarter_offsets(heatmaps, xy)
    elif refine != "none":
        raise ValueError(f"refine must be one of {REFINEMENTS}, got {refine!r}")
    image_xy = crop_to_image(xy * stride + offset, boxes, crop_size)
    return torch.cat([image_xy, scores.unsqueeze(-1)], dim=-1)


def _inside(heatmaps: Tensor, xy: Tensor, margin: int) -> Tensor:
    height, width = heatmaps.shape[-2:]
    x, y = xy[..., 0], xy[..., 1]
    return (x >= margin) & (x <= width - 1 - margin) & (y >= margin) & (y <= height - 1 - margin)
