"""Oracle models (design.md section 5): TorchScript modules whose right answer is known from the input.

The pose oracle finds painted joints by colour. Each joint is a disc whose left half
has colour A[k] and right half colour B[k]; a mirrored disc (B left of A) reads as the
mirror joint, as a mirrored left wrist looks like a right wrist to a trained model. So
flip test, channel order, normalisation, crop geometry and heatmap decoding are all
checked end to end: any slip moves the served keypoints off the painted discs.
"""

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from humanserve_core.keypoints import COCO_KEYPOINTS, mirror_index

NUM_JOINTS = len(COCO_KEYPOINTS)


BACKGROUND_MAX = 40  # painted backgrounds are noise in [0, BACKGROUND_MAX)
BLEND_CLEARANCE = 30.0  # RGB distance every colour keeps from every blend it is not part of


def _segment_distance(point: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    direction = end - start
    t = np.clip(np.dot(point - start, direction) / np.dot(direction, direction), 0.0, 1.0)
    return float(np.linalg.norm(point - (start + t * direction)))


def _clear_of_blends(colours: list[np.ndarray], pairs: list[tuple[int, int]]) -> bool:
    """No colour lies near a blend it is not part of: A|B at a disc's middle, or background to any colour."""
    background = np.full(3, BACKGROUND_MAX / 2)
    segments = [(i, j, colours[i], colours[j]) for i, j in pairs]
    segments += [(i, i, background, colours[i]) for i in range(len(colours))]
    return all(
        _segment_distance(colour, start, end) >= BLEND_CLEARANCE
        for i, j, start, end in segments
        for n, colour in enumerate(colours)
        if n not in (i, j)
    )


@functools.cache
def joint_colours() -> tuple[np.ndarray, np.ndarray]:
    """Two bright RGB colours per joint, chosen so no bilinear blend in a painted photo mimics another joint."""
    levels = (0, 64, 128, 192, 255)
    palette = [
        np.array(c, dtype=np.float32) for c in itertools.product(levels, repeat=3)
        if max(c) >= 192 and len(set(c)) > 1 and c[0] != c[2]  # bright, not grey, R != B so a BGR swap shows
    ]  # fmt: skip
    order = np.random.default_rng(7).permutation(len(palette))
    colours: list[np.ndarray] = []
    pairs: list[tuple[int, int]] = []
    for first, second in itertools.combinations(order, 2):
        if len(pairs) == NUM_JOINTS:
            break
        a, b = palette[first], palette[second]
        if any(np.array_equal(a, c) or np.array_equal(b, c) for c in colours):
            continue
        trial = colours + [a, b]
        if _clear_of_blends(trial, pairs + [(len(colours), len(colours) + 1)]):
            colours, pairs = trial, pairs + [(len(colours), len(colours) + 1)]
    if len(pairs) < NUM_JOINTS:
        raise RuntimeError(f"only {len(pairs)} joint colour pairs satisfy the blend clearance")
    stacked = np.stack(colours)
    return stacked[0::2], stacked[1::2]


class PoseOracle(nn.Module):
    """Normalised crops ``[N, 3, h, w]`` to heatmaps ``[N, 17, h/stride, w/stride]`` peaking on painted joints."""

    def __init__(self, input_config: dict[str, Any], heatmap_config: dict[str, Any], sigma: float = 2.0):
        super().__init__()
        colours_a, colours_b = joint_colours()
        self.register_buffer("colours", torch.from_numpy(np.concatenate([colours_a, colours_b])))
        self.register_buffer("mirror", torch.tensor(mirror_index(COCO_KEYPOINTS)))
        self.register_buffer("mean", torch.tensor(input_config["mean"]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(input_config["std"]).view(1, 3, 1, 1) * 255)
        self.bgr = input_config["channels"] == "bgr"
        self.stride = float(heatmap_config["stride"])
        self.offset = float(heatmap_config["offset"])
        self.sigma = sigma
        self.colour_tolerance = 12.0
        self.min_pixels = 3.0

    def forward(self, crops: Tensor) -> Tensor:
        n, _, height, width = crops.shape
        rgb = crops * self.std + self.mean
        if self.bgr:
            rgb = rgb.flip(1)
        pixels = rgb.flatten(2).transpose(1, 2)  # [N, P, 3]
        distance = torch.cdist(pixels, self.colours.unsqueeze(0).expand(n, -1, -1))  # [N, P, 2K]
        weight = torch.exp(-0.5 * (distance / self.colour_tolerance) ** 2)
        index = torch.arange(height * width, device=crops.device)
        centres = torch.stack([index % width, torch.div(index, width, rounding_mode="floor")], 1).float() + 0.5
        mass = weight.sum(1)  # [N, 2K]
        centroid = weight.transpose(1, 2) @ centres / mass.clamp(min=1e-6).unsqueeze(-1)  # [N, 2K, 2]
        k = self.mirror.shape[0]
        mass_a, mass_b = mass[:, :k], mass[:, k:]
        found = (mass_a > self.min_pixels) & (mass_b > self.min_pixels)
        centre = (centroid[:, :k] * mass_a.unsqueeze(-1) + centroid[:, k:] * mass_b.unsqueeze(-1)) / (
            (mass_a + mass_b).clamp(min=1e-6).unsqueeze(-1)
        )
        upright = centroid[:, :k, 0] < centroid[:, k:, 0]
        seen_upright = found & upright
        seen_mirrored = (found & ~upright)[:, self.mirror]
        position = torch.where(seen_upright.unsqueeze(-1), centre, centre[:, self.mirror])
        present = (seen_upright | seen_mirrored).float()
        peak = (position - self.offset) / self.stride  # heatmap pixel indices
        grid_x = torch.arange(width // int(self.stride), device=crops.device).float()
        grid_y = torch.arange(height // int(self.stride), device=crops.device).float()
        gx = torch.exp(-0.5 * ((grid_x - peak[..., 0:1]) / self.sigma) ** 2)  # [N, K, w]
        gy = torch.exp(-0.5 * ((grid_y - peak[..., 1:2]) / self.sigma) ** 2)  # [N, K, h]
        return gy.unsqueeze(-1) * gx.unsqueeze(-2) * present[..., None, None]


@dataclass
class PaintedPeople:
    """A painted test photo and where each person's joints are (continuous image pixels)."""

    image: np.ndarray  # [H, W, 3] RGB uint8
    joints: np.ndarray  # [P, 17, 2]
    boxes: list[list[float]]  # the person boxes the joints were placed in


def paint_people(
    width: int, height: int, regions: list[list[float]], seed: int
) -> PaintedPeople:
    """Paint 17 two-tone discs per region on a dark noisy background, on a jittered grid inside the region.

    Each region is [x1, y1, x2, y2]; only its part inside the image is painted.
    """
    rng = np.random.default_rng(seed)
    image = rng.integers(0, BACKGROUND_MAX, size=(height, width, 3), dtype=np.uint8)
    colours_a, colours_b = joint_colours()
    ys, xs = np.mgrid[0:height, 0:width]
    centres_x, centres_y = xs + 0.5, ys + 0.5
    all_joints = []
    for x1, y1, x2, y2 in regions:
        vx1, vy1, vx2, vy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        cols, rows = 4, 5
        cell_w, cell_h = (vx2 - vx1) / cols, (vy2 - vy1) / rows
        radius = 0.28 * min(cell_w, cell_h)
        cells = rng.permutation(cols * rows)[:NUM_JOINTS]
        joints = np.zeros((NUM_JOINTS, 2))
        for joint, cell in enumerate(cells):
            cx = vx1 + (cell % cols + 0.5 + rng.uniform(-0.15, 0.15)) * cell_w
            cy = vy1 + (cell // cols + 0.5 + rng.uniform(-0.15, 0.15)) * cell_h
            joints[joint] = (cx, cy)
            inside = (centres_x - cx) ** 2 + (centres_y - cy) ** 2 <= radius**2
            image[inside & (centres_x < cx)] = colours_a[joint]
            image[inside & (centres_x >= cx)] = colours_b[joint]
        all_joints.append(joints)
    return PaintedPeople(image, np.stack(all_joints), [list(map(float, r)) for r in regions])


def pose_oracle_package(name: str = "pose_oracle", batch_size: int = 8, max_batch_delay_ms: int = 300):
    """The pose oracle archived exactly like a real pose model: same handler, same input config."""
    from export.archive import Package, Serving
    from export.recipes import POSE_HANDLER_CONFIG

    input_config = POSE_HANDLER_CONFIG["input"]
    return Package(
        name=name,
        module=PoseOracle(input_config, POSE_HANDLER_CONFIG["heatmap"]),
        example_inputs=lambda n: (torch.randn(n, 3, input_config["height"], input_config["width"]),),
        handler="pose_handler.py",
        handler_modules=("pose.py",),
        handler_config=POSE_HANDLER_CONFIG,
        serving=Serving(batch_size=batch_size, max_batch_delay_ms=max_batch_delay_ms),
        torchscript="script",
    )


ORACLE_WEIGHTS = {"source": "oracle", "pretrained": False, "reason": "test model: answers are known from the input"}
