"""Heatmap decoding to keypoints in image pixels: batched tensor code, no loop over people or joints.

A heatmap pixel (u, v) (integer indices) stands for crop point
``(stride * u + offset, stride * v + offset)``. ``offset`` records how the model's training
targets were placed: ``stride / 2`` when heatmap pixels are centred on their crop blocks,
``0`` for the MSRA SimpleBaseline release (targets at ``crop_index / stride``; see
``export/pose.py`` for the derivation).
"""

import functools

import torch
from torch import Tensor

from handlers.vision.geometry import crop_to_image

REFINEMENTS = ("dark", "quarter", "none")

# Neighbourhood read around each peak: (dx, dy) pairs, gathered in one indexing op.
_NEIGHBOURS = torch.tensor(
    [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2), (0, -2), (1, 1), (-1, 1), (1, -1), (-1, -1)]
)


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

    Only the 5x5 neighbourhood of each peak is smoothed: a window the kernel's size around
    it is gathered from the map, reflected at the edges as a reflect-padded map would be,
    and blurred by the separable Gaussian as two small matrix products. That equals smoothing whole maps at every
    peak that is refined, for a
    fraction of the work. The step is kept only at a true maximum (negative-definite
    Hessian) at least two pixels from the border, clamped to one pixel.
    """
    n, k, height, width = heatmaps.shape
    radius = round(3 * sigma) - 1  # kernel 11 for sigma 2, as DARK uses
    reach = radius + 2
    side = 2 * reach + 1
    window = torch.arange(-reach, reach + 1, device=heatmaps.device)
    sizes = heatmaps.new_tensor([width, height], dtype=torch.long).view(1, 1, 2, 1)
    # Kept steps have peaks >= 2 pixels inside, so their windows stay within the reflected margin.
    read = _reflected(xy.long().unsqueeze(-1) + window, sizes)  # [N, K, 2 (x, y), side]
    index = (read[..., 1, :].unsqueeze(-1) * width + read[..., 0, :].unsqueeze(-2)).view(n, k, side * side)
    patches = heatmaps.flatten(2).gather(2, index).view(n, k, side, side)
    band, derivatives = _dark_constants(sigma, radius, side, heatmaps.dtype, heatmaps.device)
    smooth = band @ patches @ band.T  # [N, K, 5, 5]
    dx, dy, dxx, dyy, dxy = (smooth.view(n, k, 25).clamp(min=1e-10).log() @ derivatives).unbind(-1)
    det = dxx * dyy - dxy * dxy
    maximum = (dxx < 0) & (det > 1e-12)
    safe_det = torch.where(maximum, det, torch.ones_like(det))
    step = torch.stack([(dyy * dx - dxy * dy), (dxx * dy - dxy * dx)], dim=-1) / safe_det[..., None]
    keep = maximum & _inside(heatmaps, xy, margin=2)
    return torch.where(keep[..., None], -step.clamp(-1, 1), torch.zeros_like(step))


@functools.lru_cache(maxsize=16)
def _dark_constants(
    sigma: float, radius: int, side: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The separable blur as a ``[5, side]`` band matrix, and ``[25, 5]`` finite differences on the 5x5 logs.

    The differences are the gradient (dx, dy) and Hessian (dxx, dyy, dxy) at the centre:
    central steps of 1 pixel for the gradient and the mixed term, of 2 for dxx and dyy.
    """
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    band = torch.zeros(5, side, dtype=torch.float64)
    for row in range(5):
        band[row, row : row + taps.numel()] = taps / taps.sum()
    derivatives = torch.zeros(5, 5, 5, dtype=torch.float64)  # [y, x, which] on the 5x5 window, centre (2, 2)
    derivatives[2, 3, 0], derivatives[2, 1, 0] = 0.5, -0.5
    derivatives[3, 2, 1], derivatives[1, 2, 1] = 0.5, -0.5
    derivatives[2, 4, 2], derivatives[2, 2, 2], derivatives[2, 0, 2] = 0.25, -0.5, 0.25
    derivatives[4, 2, 3], derivatives[2, 2, 3], derivatives[0, 2, 3] = 0.25, -0.5, 0.25
    derivatives[3, 3, 4], derivatives[1, 3, 4], derivatives[3, 1, 4], derivatives[1, 1, 4] = 0.25, -0.25, -0.25, 0.25
    return band.to(device, dtype), derivatives.view(25, 5).to(device, dtype)


def _reflected(index: Tensor, size: Tensor) -> Tensor:
    """The map index that ``index`` reads in a map of ``size`` reflect-padded at both ends (clamped far outside)."""
    last = size - 1
    return (last - (last - index.abs()).abs()).clamp(min=0).minimum(last)


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
    low, high = xy.amin(dim=-1), (xy - xy.new_tensor([width, height])).amax(dim=-1)
    return (low >= margin) & (high <= -1 - margin)
