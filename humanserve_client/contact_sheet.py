"""The contact sheet of a pairing (``humanserve contact-sheet``): the best pairs side by side, skeletons drawn, for a
check by eye."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from .coco import COCO_SKELETON
from .patches import square_around
from .tracking import draw_pose

LIMB, JOINT, LABEL_HEIGHT = (0, 200, 255), (60, 60, 255), 22  # BGR


def patch_keypoints(row: dict, padding: float, size: int) -> np.ndarray:
    """A patches.csv row's keypoints ``[17, 3]`` moved from frame pixels into its ``size`` px patch."""
    keypoints = np.array(json.loads(row["keypoints"]), dtype=float).reshape(-1, 3)
    x1, y1, side = square_around([float(row[c]) for c in ("x1", "y1", "x2", "y2")], padding)
    keypoints[:, :2] = (keypoints[:, :2] - (x1, y1)) * size / side
    return keypoints


def read_rows(path: Path, key: str) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {row[key]: row for row in csv.DictReader(handle)}


def contact_sheet(
    pairs: Path,
    a: Path,
    b: Path,
    out: Path,
    top: int = 20,
    padding: float = 0.1,
    min_score: float = 0.3,
    cell: int = 192,
) -> int:
    """Draw the ``top`` most similar rank-1 pairs of ``pairs`` (A's patch, then B's, in rows) into ``out``; how many
    rows.

    ``a`` and ``b`` are ``humanserve patches`` output folders (patches.csv and patches/);
    ``padding`` must be the one they were cut with, so the keypoints land on the patches.
    """
    with open(pairs, newline="") as handle:
        best = sorted(
            (row for row in csv.DictReader(handle) if row["rank"] == "1"), key=lambda row: -float(row["similarity"])
        )[:top]
    sets = [(folder, read_rows(folder / "patches.csv", "patch")) for folder in (a, b)]
    rows = []
    for pair in best:
        tiles = []
        for (folder, patches), name in zip(sets, (pair["a_patch"], pair["b_patch"])):
            image = cv2.imread(str(folder / "patches" / name))
            if image is None:
                raise FileNotFoundError(f"{folder / 'patches' / name} is missing or not an image")
            draw_pose(
                image,
                patch_keypoints(patches[name], padding, image.shape[1]),
                COCO_SKELETON,
                min_score,
                LIMB,
                JOINT,
                2,
                3,
            )
            tiles.append(cv2.resize(image, (cell, cell), interpolation=cv2.INTER_AREA))
        label = np.full((LABEL_HEIGHT, 2 * cell, 3), 255, np.uint8)
        cv2.putText(
            label,
            f"{pair['view'] or '-'}  {float(pair['similarity']):.3f}",
            (6, 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        rows.append(np.vstack([label, np.hstack(tiles)]))
    if rows:
        cv2.imwrite(str(out), np.vstack(rows))
    return len(rows)
