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
import torch.nn.functional as F
from torch import Tensor, nn

from handlers.vision.keypoints import COCO_KEYPOINTS, mirror_index

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
        np.array(c, dtype=np.float32)
        for c in itertools.product(levels, repeat=3)
        if max(c) >= 192 and len(set(c)) > 1 and c[0] != c[2]  # bright, not grey, R != B so a BGR swap shows
    ]
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
    width: int,
    height: int,
    regions: list[list[float]],
    seed: int,
    joints: tuple[str, ...] | None = None,
    layouts: list[int] | None = None,
) -> PaintedPeople:
    """Paint 17 two-tone discs per region on a dark noisy background, on a jittered grid inside the region.

    Each region is [x1, y1, x2, y2]; only its part inside the image is painted. With
    ``joints``, only those joints are painted (all are still placed, so positions do not
    depend on the choice). ``layouts``: a seed per region for where its joints go, so that
    a person keeps its pose from frame to frame of a video (default: all from ``seed``).
    """
    painted = set(range(NUM_JOINTS)) if joints is None else {COCO_KEYPOINTS.index(name) for name in joints}
    rng = np.random.default_rng(seed)
    image = rng.integers(0, BACKGROUND_MAX, size=(height, width, 3), dtype=np.uint8)
    colours_a, colours_b = joint_colours()
    ys, xs = np.mgrid[0:height, 0:width]
    centres_x, centres_y = xs + 0.5, ys + 0.5
    all_joints = []
    for region, (x1, y1, x2, y2) in enumerate(regions):
        vx1, vy1, vx2, vy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        cols, rows = 4, 5
        cell_w, cell_h = (vx2 - vx1) / cols, (vy2 - vy1) / rows
        radius = 0.28 * min(cell_w, cell_h)
        placing = np.random.default_rng(layouts[region]) if layouts is not None else rng
        cells = placing.permutation(cols * rows)[:NUM_JOINTS]
        positions = np.zeros((NUM_JOINTS, 2))
        for joint, cell in enumerate(cells):
            cx = vx1 + (cell % cols + 0.5 + placing.uniform(-0.15, 0.15)) * cell_w
            cy = vy1 + (cell // cols + 0.5 + placing.uniform(-0.15, 0.15)) * cell_h
            positions[joint] = (cx, cy)
            if joint not in painted:
                continue
            inside = (centres_x - cx) ** 2 + (centres_y - cy) ** 2 <= radius**2
            image[inside & (centres_x < cx)] = colours_a[joint]
            image[inside & (centres_x >= cx)] = colours_b[joint]
        all_joints.append(positions)
    return PaintedPeople(
        image,
        np.stack(all_joints) if all_joints else np.zeros((0, NUM_JOINTS, 2)),
        [list(map(float, r)) for r in regions],
    )


# Person frames: grey outlines (never a joint colour) whose shade sets the detection score,
# and one coloured frame the detector labels as something else (label 3), which must be ignored.
PERSON_FRAMES = ((255, 255, 255), (176, 176, 176), (112, 112, 112))
PERSON_SCORES = (0.99, 0.80, 0.60)
OTHER_FRAME = (96, 32, 160)
FRAME_TOLERANCE = 8.0


class DetectorOracle(nn.Module):
    """torchvision-style detector: one box per painted frame colour, scored and labelled by colour.

    Takes a list of RGB ``uint8`` images of any sizes and returns ``(losses, detections)``
    like an archived torchvision detection model, boxes in image pixels.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("colours", torch.tensor([*PERSON_FRAMES, OTHER_FRAME], dtype=torch.float32))
        self.register_buffer("labels", torch.tensor([1] * len(PERSON_FRAMES) + [3]))
        self.register_buffer("scores", torch.tensor([*PERSON_SCORES, 0.95]))
        self.tolerance = FRAME_TOLERANCE

    def frames(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        boxes = torch.jit.annotate(list[Tensor], [])
        keep = torch.jit.annotate(list[int], [])
        pixels = image.float()
        for f in range(self.colours.shape[0]):
            match = ((pixels - self.colours[f].view(3, 1, 1)).abs() <= self.tolerance).all(dim=0)
            if bool(match.any()):
                yx = torch.nonzero(match)
                low, high = yx.min(dim=0).values, yx.max(dim=0).values + 1
                boxes.append(torch.stack([low[1], low[0], high[1], high[0]]).float())
                keep.append(f)
        if len(boxes) == 0:
            return torch.zeros((0, 4), device=image.device), self.labels[:0], self.scores[:0]
        chosen = torch.tensor(keep, device=image.device)
        return torch.stack(boxes), self.labels[chosen], self.scores[chosen]

    def forward(self, images: list[Tensor]) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        detections = torch.jit.annotate(list[dict[str, Tensor]], [])
        for image in images:
            boxes, labels, scores = self.frames(image)
            detections.append({"boxes": boxes, "labels": labels, "scores": scores})
        return {}, detections


class KeypointOracle(DetectorOracle):
    """torchvision-style Keypoint R-CNN: frames as in ``DetectorOracle``, joints found by colour in each box.

    A joint scores +10 (a confident heatmap logit) where its painted disc is found
    inside the box, -10 where it is not painted.
    """

    def __init__(self):
        super().__init__()
        colours_a, colours_b = joint_colours()
        self.register_buffer("joint_colours", torch.from_numpy(np.stack([colours_a, colours_b], axis=1)))  # [K, 2, 3]

    def forward(self, images: list[Tensor]) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        detections = torch.jit.annotate(list[dict[str, Tensor]], [])
        for image in images:
            boxes, labels, scores = self.frames(image)
            count = self.joint_colours.shape[0]
            joints = torch.zeros((boxes.shape[0], count, 3), device=image.device)
            joint_scores = torch.full((boxes.shape[0], count), -10.0, device=image.device)
            pixels = image.float()
            for n in range(boxes.shape[0]):
                x1, y1 = int(boxes[n, 0].item()), int(boxes[n, 1].item())
                x2, y2 = int(boxes[n, 2].item()), int(boxes[n, 3].item())
                region = pixels[:, y1:y2, x1:x2]
                distance = (region.unsqueeze(0).unsqueeze(0) - self.joint_colours.view(count, 2, 3, 1, 1)).abs()
                match = (distance <= self.tolerance).all(dim=2).any(dim=1).float()  # [K, h, w]
                mass = match.sum(dim=(1, 2))
                ys = torch.arange(y2 - y1, device=image.device).float() + 0.5 + y1
                xs = torch.arange(x2 - x1, device=image.device).float() + 0.5 + x1
                cx = (match.sum(dim=1) * xs).sum(dim=1) / mass.clamp(min=1.0)
                cy = (match.sum(dim=2) * ys).sum(dim=1) / mass.clamp(min=1.0)
                joints[n] = torch.stack([cx, cy, torch.ones_like(cx)], dim=1)
                joint_scores[n] = torch.where(mass >= 3, torch.full_like(mass, 10.0), torch.full_like(mass, -10.0))
            detections.append(
                {
                    "boxes": boxes,
                    "labels": labels,
                    "scores": scores,
                    "keypoints": joints,
                    "keypoints_scores": joint_scores,
                }
            )
        return {}, detections


def paint_frames(image: np.ndarray, frames: list[tuple[list[float], tuple[int, int, int]]], thickness: int = 3) -> None:
    """Paint rectangle outlines [x1, y1, x2, y2] (integer pixel edges) in their colours onto ``image``."""
    for (x1, y1, x2, y2), colour in frames:
        x1, y1, x2, y2 = (int(v) for v in (x1, y1, x2, y2))
        image[y1:y2, x1 : x1 + thickness] = colour
        image[y1:y2, x2 - thickness : x2] = colour
        image[y1 : y1 + thickness, x1:x2] = colour
        image[y2 - thickness : y2, x1:x2] = colour


# People in segmentation photos: one colour, far from the dark backgrounds.
SEGMENT_COLOUR = (230, 40, 200)
SEGMENT_BACKGROUND = 20.0  # mean of the background noise


class SegmenterOracle(nn.Module):
    """RGB ``uint8[N, 3, h, w]`` photos to person log-odds ``[N, 1, h, w]``: how much of each pixel is the person
    colour.

    The log-odds are proportional to the pixel's share of ``SEGMENT_COLOUR`` against the
    background (0 for an even blend), so a resized photo keeps its edges where they were.
    """

    def __init__(self, colour: tuple[int, int, int] = SEGMENT_COLOUR):
        super().__init__()
        self.register_buffer("colour", torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1))
        self.background = SEGMENT_BACKGROUND

    def forward(self, images: Tensor) -> Tensor:
        rgb = images.float()
        direction = self.colour - self.background
        share = ((rgb - self.background) * direction).sum(dim=1, keepdim=True) / (direction * direction).sum()
        return 20 * (share - 0.5)


class IdentityStyle(nn.Module):
    """A style network that changes nothing (``uint8`` photos in and out): served, it must hand the photo back."""

    def forward(self, photos: Tensor) -> Tensor:
        return photos


class IdentityGenerator(nn.Module):
    """A pix2pix / CycleGAN generator that changes nothing ([-1, 1] in, the same out): served, it must hand the photo
    back."""

    def forward(self, photos: Tensor) -> Tensor:
        return photos


@dataclass
class PaintedSegments:
    """A photo with painted people (ellipses and rectangles in ``SEGMENT_COLOUR``) and their mask."""

    image: np.ndarray  # [H, W, 3] RGB uint8
    mask: np.ndarray  # [H, W] bool


def paint_segments(width: int, height: int, seed: int, noise: bool = False) -> PaintedSegments:
    """An ellipse and a rectangle of person colour on a dark background (``noise``: strong texture everywhere)."""
    rng = np.random.default_rng(seed)
    spread = 12 if not noise else 40
    image = np.clip(rng.normal(SEGMENT_BACKGROUND, spread / 3, size=(height, width, 3)), 0, 255).astype(np.uint8)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    cx, cy = rng.uniform(0.3, 0.45) * width, rng.uniform(0.35, 0.65) * height
    rx, ry = 0.2 * width, 0.3 * height
    ellipse = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
    x1, y1 = int(0.6 * width), int(rng.uniform(0.15, 0.3) * height)
    rectangle = np.zeros_like(ellipse)
    rectangle[y1 : int(0.85 * height), x1 : int(0.9 * width)] = True
    mask = ellipse | rectangle
    colour = np.array(SEGMENT_COLOUR, dtype=float)
    person = colour if not noise else np.clip(colour + rng.normal(0, 8, size=(int(mask.sum()), 3)), 0, 255)
    image[mask] = np.asarray(person, dtype=np.uint8)
    return PaintedSegments(image, mask)


ORACLE_WEIGHTS = {"source": "oracle", "pretrained": False, "reason": "test model: answers are known from the input"}


def _crops(n: int) -> tuple[Tensor]:
    from export.pose import SIMPLEBASELINE_INPUT

    return (torch.randn(n, 3, SIMPLEBASELINE_INPUT["height"], SIMPLEBASELINE_INPUT["width"]),)


def _images(n: int) -> tuple[list[Tensor]]:
    return ([torch.randint(0, 256, (3, 60 + 10 * i, 80), dtype=torch.uint8) for i in range(n)],)


def oracle_packages(batch_size: int = 8, max_batch_delay_ms: int = 300):
    """Every oracle archived exactly like its real model: same handler, same handler config."""
    from dataclasses import replace

    from export.archive import Part, Sequences, Serving
    from export.generators import UNET_PT2, pixel_generator
    from export.pose import POSE_CONFIG, POSE_PT2
    from export.registry import RECIPES
    from export.segmentation import SEGMENTER_PT2
    from export.style import STYLE_PT2

    serving = Serving(batch_size=batch_size, max_batch_delay_ms=max_batch_delay_ms)

    def pose_part(name: str) -> Part:
        return Part(
            name,
            PoseOracle(POSE_CONFIG["input"], POSE_CONFIG["heatmap"]),
            _crops,
            ORACLE_WEIGHTS,
            "script",
            pt2=POSE_PT2,
        )

    def detector_part(name: str, module: nn.Module) -> Part:
        return Part(name, module, _images, ORACLE_WEIGHTS, "script", check_batch=2)

    def photos(n: int, height: int = 100, width: int = 132) -> tuple[Tensor]:
        return (torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8),)

    def generator_part(pt2, example) -> Part:
        return Part("model", pixel_generator(IdentityGenerator()), example, ORACLE_WEIGHTS, "script", pt2=pt2)

    def face_part(name: str, module: nn.Module, shape: tuple[int, int, int]) -> Part:
        return Part(name, module, lambda n: (torch.rand(n, *shape) * 255,), ORACLE_WEIGHTS, "script")

    face_parts = (
        face_part("pnet", PNetOracle(), (3, 64, 80)),
        face_part("rnet", CropOracle(FACE_STAGE_MARGIN, False), (3, 24, 24)),
        face_part("onet", CropOracle(0.0, True), (3, 48, 48)),
        face_part("expression", ExpressionOracle(), (1, 48, 48)),
    )
    recipes = {
        "face_oracle": (RECIPES["faces"], face_parts),
        "smart_filter_oracle": (
            RECIPES["smart_filter"],
            (Part("model", SegmenterOracle(FILTER_PERSON_COLOUR), photos, ORACLE_WEIGHTS, "script"), *face_parts),
        ),
        "segmenter_oracle": (
            RECIPES["person_segmenter"],
            (Part("model", SegmenterOracle(), photos, ORACLE_WEIGHTS, "script", pt2=SEGMENTER_PT2),),
        ),
        "style_oracle": (
            RECIPES["style_candy"],
            (Part("model", IdentityStyle(), photos, ORACLE_WEIGHTS, "script", pt2=STYLE_PT2),),
        ),
        "cyclegan_oracle": (RECIPES["cyclegan_style_vangogh"], (generator_part(STYLE_PT2, photos),)),
        "pix2pix_oracle": (RECIPES["pix2pix_edges2shoes"], (generator_part(UNET_PT2, lambda n: photos(n, 256, 256)),)),
        "pose_oracle": (RECIPES["pose_resnet50"], (pose_part("model"),)),
        "detector_oracle": (RECIPES["person_detector"], (detector_part("model", DetectorOracle()),)),
        "keypoint_oracle": (RECIPES["keypoint_rcnn"], (detector_part("model", KeypointOracle()),)),
        "pipeline_oracle": (RECIPES["pose_pipeline"], (detector_part("detector", DetectorOracle()), pose_part("pose"))),
        "tracker_oracle": (RECIPES["pose_tracker"], (detector_part("detector", DetectorOracle()), pose_part("pose"))),
    }
    packages = {name: replace(recipe.package(parts, serving), name=name) for name, (recipe, parts) in recipes.items()}
    # Short-lived, few sequences, so that the tests see the handler forget them (TorchServe's own idle limit is longer).
    tracker = packages["tracker_oracle"]
    packages["tracker_oracle"] = replace(
        tracker,
        serving=replace(
            serving,
            sequences=Sequences(
                60_000, 0, max_sequences=32, queue_size=8, unhealthy_after_s=TRACKER_ORACLE_UNHEALTHY_AFTER_S
            ),
        ),
        handler_config={**tracker.handler_config, "tracking": TRACKER_ORACLE_TRACKING},
    )
    return list(packages.values())


TRACKER_ORACLE_TRACKING = {"ttl_s": 5, "max_sequences": 4, "tracker": {}}
TRACKER_ORACLE_UNHEALTHY_AFTER_S = 10


# Faces: rectangles of red (R = 255) on a background whose red is constant, so a pixel's red
# tells exactly how much of it is face, also after resampling. Each face's quadrants have
# their own grey (G = B = level), which the expression oracle reads back to show where the
# classifier's crop was cut.
FACE_BACKGROUND_RED = 20.0
FACE_QUADRANT_LEVELS = (140, 160, 180, 200)  # top left, top right, bottom left, bottom right
# People for the smart filter: red as the background's (no face to P-Net), far from it in green and
# blue, so that the segmenter oracle given this colour reads people and faces (G = B >= 140) as person.
FILTER_PERSON_COLOUR = (int(FACE_BACKGROUND_RED), 200, 200)
FACE_LANDMARK_FRACTIONS = ((0.3, 0.35), (0.7, 0.35), (0.5, 0.55), (0.35, 0.75), (0.65, 0.75))  # of the face's box
FACE_STAGE_MARGIN = (
    0.25  # P-Net and R-Net oracles widen the face by this much per side, so the next crop holds it whole
)


def face_coverage(pixels: Tensor, background_red: float) -> Tensor:
    """RGB ``float[N, C, H, W]`` (0..255) to ``[N, 1, H, W]``: how much of each pixel is face."""
    return ((pixels[:, :1] - background_red) / (255.0 - background_red)).clamp(0.0, 1.0)


def face_extent(coverage: Tensor, margin: float) -> Tensor:
    """``[N, 1, S, S]`` coverage of square crops to the face box ``[N, 4]`` in crop pixels, widened by ``margin`` per
    side."""
    columns = coverage.amax(dim=2)[:, 0]  # each column's covered width: a face is an axis-aligned rectangle
    rows = coverage.amax(dim=3)[:, 0]
    centres = torch.arange(coverage.shape[-1], device=coverage.device, dtype=coverage.dtype) + 0.5
    width, height = columns.sum(dim=1).clamp(min=1e-6), rows.sum(dim=1).clamp(min=1e-6)
    cx, cy = (columns * centres).sum(dim=1) / width, (rows * centres).sum(dim=1) / height
    half_w, half_h = width * (0.5 + margin), height * (0.5 + margin)
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)


class PNetOracle(nn.Module):
    """Like P-Net: ``[N, 3, H, W]`` levels to ``[N, 5, h, w]`` per 12x12 window at stride 2 (probability, box offsets).

    A window is a face when it holds face and its 1-pixel rim holds none (the whole face is
    inside); its offsets move it onto the face, widened by ``FACE_STAGE_MARGIN``.
    """

    def __init__(self):
        super().__init__()
        self.background_red, self.margin = FACE_BACKGROUND_RED, FACE_STAGE_MARGIN

    def forward(self, pixels: Tensor) -> Tensor:
        m = face_coverage(pixels, self.background_red)
        fill = F.avg_pool2d(m, 12, 2)
        h, w = fill.shape[2], fill.shape[3]
        inner = F.avg_pool2d(m[:, :, 1:, 1:], 10, 2)[:, :, :h, :w]
        rim = (fill * 144 - inner * 100) / 44
        columns = F.max_pool2d(m, (12, 1), (2, 1))  # [N, 1, h, W]: each window row's column maxima
        rows = F.max_pool2d(m, (1, 12), (1, 2))  # [N, 1, H, w]
        ones = torch.ones(12, device=pixels.device, dtype=pixels.dtype)
        centres = torch.arange(12, device=pixels.device, dtype=pixels.dtype) + 0.5
        width = F.conv2d(columns, ones.view(1, 1, 1, 12), stride=(1, 2)).clamp(min=1e-6)
        height = F.conv2d(rows, ones.view(1, 1, 12, 1), stride=(2, 1)).clamp(min=1e-6)
        cx = F.conv2d(columns, centres.view(1, 1, 1, 12), stride=(1, 2)) / width
        cy = F.conv2d(rows, centres.view(1, 1, 12, 1), stride=(2, 1)) / height
        half_w, half_h = width * (0.5 + self.margin), height * (0.5 + self.margin)
        offsets = torch.cat([cx - half_w, cy - half_h, cx + half_w - 12, cy + half_h - 12], dim=1) / 12
        face = ((rim < 0.02) & (fill > 0.02)).to(pixels.dtype) * (0.9 + 0.1 * fill)
        return torch.cat([face, offsets], dim=1)


class CropOracle(nn.Module):
    """Like R-Net (``landmarks`` False) or O-Net: square crops to probability, box offsets and, for O-Net, landmarks."""

    def __init__(self, margin: float, landmarks: bool):
        super().__init__()
        self.background_red, self.margin = FACE_BACKGROUND_RED, margin
        self.register_buffer(
            "fractions", torch.tensor(FACE_LANDMARK_FRACTIONS, dtype=torch.float32) if landmarks else torch.zeros(0, 2)
        )

    def forward(self, crops: Tensor) -> Tensor:
        side = float(crops.shape[-1])
        m = face_coverage(crops, self.background_red)
        box = face_extent(m, self.margin)
        face = (m.mean(dim=(1, 2, 3)) > 0.02).to(crops.dtype) * 0.99
        offsets = (box - torch.tensor([0.0, 0.0, side, side], device=crops.device)) / side
        size = box[:, 2:] - box[:, :2]
        points = (box[:, None, :2] + self.fractions[None] * size[:, None]) / side  # [N, L, 2]
        return torch.cat([face[:, None], offsets, points[..., 0], points[..., 1]], dim=1)


class ExpressionOracle(nn.Module):
    """Grey ``[N, 1, 48, 48]`` faces to 7 scores: the mean grey (0..1) of each quadrant, then zeros."""

    def forward(self, faces: Tensor) -> Tensor:
        quadrants = F.avg_pool2d(faces, faces.shape[-1] // 2).flatten(1) / 255
        return torch.cat([quadrants, quadrants.new_zeros((quadrants.shape[0], 3))], dim=1)


def face_quadrant_greys(levels: tuple[int, ...] = FACE_QUADRANT_LEVELS) -> list[float]:
    """The grey (0..1) the expression oracle should read in each quadrant of a face painted with ``levels``."""
    return [(0.299 * 255 + (0.587 + 0.114) * level) / 255 for level in levels]


def paint_faces(
    width: int,
    height: int,
    faces: list[list[int]],
    seed: int,
    levels: tuple[int, ...] = FACE_QUADRANT_LEVELS,
    people: tuple[list[int], ...] = (),
) -> np.ndarray:
    """An RGB photo with face rectangles ``[x1, y1, x2, y2]`` (even sides) on a textured background, over ``people``
    rectangles."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    image[..., 0] = FACE_BACKGROUND_RED
    for x1, y1, x2, y2 in people:
        image[y1:y2, x1:x2] = FILTER_PERSON_COLOUR
    for x1, y1, x2, y2 in faces:
        mx, my = (x1 + x2) // 2, (y1 + y2) // 2
        for (ys, xs), level in zip(
            (
                (slice(y1, my), slice(x1, mx)),
                (slice(y1, my), slice(mx, x2)),
                (slice(my, y2), slice(x1, mx)),
                (slice(my, y2), slice(mx, x2)),
            ),
            levels,
        ):
            image[ys, xs] = (255, level, level)
    return image
