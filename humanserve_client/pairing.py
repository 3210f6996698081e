"""Pose pairing of two patch sets (``humanserve pair``): for each patch of A, the patches of B with the same view whose
poses match best.

A pose is its 17 keypoints moved to the patch box's corner and divided by the box's longer
side, so neither position nor scale in the frame matters (the aspect of the pose stays).
Two poses compare by cosine similarity over the joints both are sure of (score at least
``min_joint_score``): one matrix product per view and chunk of A, so memory stays bounded
and 50,000 x 50,000 patches pair in minutes.
"""

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

JOINTS = 17
PATCH_COLUMNS = ("video", "frame", "time_s", "person", "patch", "x1", "y1", "x2", "y2", "score", "view", "keypoints")
PAIR_COLUMNS = ("a_patch", "b_patch", "view", "similarity", "rank")
UNIQUE_MOST_CELLS = 25_000_000  # --unique solves one assignment per view: about 5,000 x 5,000 patches


class PatchFileError(ValueError):
    """A patches CSV that cannot be read; the message names the file, the line and the problem."""


@dataclass
class Patches:
    """A patch set: names, views, box-normalised poses ``[N, 17, 2]`` and joint scores ``[N, 17]``."""

    names: list[str]
    views: np.ndarray
    poses: np.ndarray
    scores: np.ndarray


def read_patches(path: Path) -> Patches:
    """Read a patches CSV as ``humanserve patches`` writes it."""
    names, views, poses, scores = [], [], [], []
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [
                c for c in ("patch", "x1", "y1", "x2", "y2", "view", "keypoints") if c not in (reader.fieldnames or [])
            ]
            if missing:
                raise PatchFileError(f"{path}: no column {missing[0]!r} (columns: {', '.join(PATCH_COLUMNS)})")
            for line, row in enumerate(reader, start=2):
                keypoints, box = _row_pose(path, line, row)
                side = max(box[2] - box[0], box[3] - box[1])
                names.append(row["patch"])
                views.append(row["view"])
                poses.append((keypoints[:, :2] - box[:2]) / side)
                scores.append(keypoints[:, 2])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PatchFileError(f"{path}: {error}") from None
    return Patches(
        names,
        np.array(views, dtype=object),
        np.array(poses).reshape(-1, JOINTS, 2),
        np.array(scores).reshape(-1, JOINTS),
    )


def _row_pose(path: Path, line: int, row: dict) -> tuple[np.ndarray, np.ndarray]:
    where = f"{path}, line {line}"
    try:
        box = np.array([float(row[c]) for c in ("x1", "y1", "x2", "y2")])
    except (TypeError, ValueError):
        raise PatchFileError(f"{where}: the box x1, y1, x2, y2 must be numbers") from None
    if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise PatchFileError(f"{where}: the box {box.tolist()} must have x2 > x1 and y2 > y1")
    try:
        keypoints = np.array(json.loads(row["keypoints"]), dtype=float)
    except (TypeError, ValueError):
        raise PatchFileError(f"{where}: keypoints must be a JSON array of {JOINTS} [x, y, score]") from None
    if keypoints.shape != (JOINTS, 3) or not np.isfinite(keypoints).all():
        raise PatchFileError(f"{where}: keypoints must be {JOINTS} finite [x, y, score], got shape {keypoints.shape}")
    return keypoints, box


def similarities(a: Patches, b: Patches, rows: slice, columns: np.ndarray, min_joint_score: float) -> np.ndarray:
    """Cosine similarity ``[len(rows), len(columns)]`` over the joints both poses are sure of; NaN where they share
    none."""
    sure_a = (a.scores[rows] >= min_joint_score).astype(np.float32)
    sure_b = (b.scores[columns] >= min_joint_score).astype(np.float32)
    pose_a = (a.poses[rows] * sure_a[..., None]).reshape(len(sure_a), -1).astype(np.float32)
    pose_b = (b.poses[columns] * sure_b[..., None]).reshape(len(sure_b), -1).astype(np.float32)
    dot = pose_a @ pose_b.T  # a masked joint is zero in its own vector, so only shared joints add up
    norm_a = ((a.poses[rows] ** 2).sum(-1) * sure_a).astype(
        np.float32
    ) @ sure_b.T  # |a| over the joints b is sure of too
    norm_b = sure_a @ ((b.poses[columns] ** 2).sum(-1) * sure_b).astype(np.float32).T
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.clip(dot / np.sqrt(norm_a * norm_b), -1.0, 1.0)  # float32 rounding can pass 1
    cosine[(sure_a @ sure_b.T) == 0] = np.nan
    return cosine


def best_pairs(
    a: Patches, b: Patches, top: int, min_joint_score: float, chunk: int = 512
) -> Iterator[tuple[str, str, str, float, int]]:
    """For each patch of A, its ``top`` best patches of B with the same view: (a, b, view, similarity, rank)."""
    for view in sorted(set(a.views) & set(b.views)):
        rows_a, columns = np.flatnonzero(a.views == view), np.flatnonzero(b.views == view)
        keep = min(top, len(columns))
        for start in range(0, len(rows_a), chunk):
            rows = rows_a[start : start + chunk]
            cosine = np.nan_to_num(similarities(a, b, rows, columns, min_joint_score), nan=-np.inf)
            best = np.argpartition(-cosine, keep - 1, axis=1)[:, :keep]
            order = np.take_along_axis(
                best, np.argsort(-np.take_along_axis(cosine, best, axis=1), axis=1, kind="stable"), axis=1
            )
            for local, (row, picks) in enumerate(zip(rows, order)):
                for rank, column in enumerate(picks, start=1):
                    value = cosine[local, column]
                    if np.isfinite(value):
                        yield a.names[row], b.names[columns[column]], view, float(value), rank


def unique_pairs(a: Patches, b: Patches, min_joint_score: float) -> Iterator[tuple[str, str, str, float, int]]:
    """A one-to-one assignment per view maximising the summed similarity (scipy's ``linear_sum_assignment``)."""
    from scipy.optimize import linear_sum_assignment

    for view in sorted(set(a.views) & set(b.views)):
        rows, columns = np.flatnonzero(a.views == view), np.flatnonzero(b.views == view)
        if len(rows) * len(columns) > UNIQUE_MOST_CELLS:
            raise ValueError(
                f"--unique: view {view!r} has {len(rows)} x {len(columns)} patches, more than one assignment can take here "
                f"({UNIQUE_MOST_CELLS:,} pairs); use --top instead, or split the sets"
            )
        cosine = similarities(a, b, rows, columns, min_joint_score)
        matched_a, matched_b = linear_sum_assignment(np.nan_to_num(cosine, nan=-1.0), maximize=True)
        for i, j in zip(matched_a, matched_b):
            if np.isfinite(cosine[i, j]):
                yield a.names[rows[i]], b.names[columns[j]], view, float(cosine[i, j]), 1


def write_pairs(path: Path, pairs: Iterator[tuple[str, str, str, float, int]]) -> int:
    """Write ``pairs`` as CSV; how many."""
    count = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PAIR_COLUMNS)
        for a_patch, b_patch, view, similarity, rank in pairs:
            writer.writerow((a_patch, b_patch, view, f"{similarity:.6f}", rank))
            count += 1
    return count


def pair_files(a: Path, b: Path, out: Path, top: int = 1, min_joint_score: float = 0.0, unique: bool = False) -> int:
    """``humanserve pair``: read both sets, pair them, write ``out``; the number of pairs."""
    first, second = read_patches(a), read_patches(b)
    pairs = unique_pairs(first, second, min_joint_score) if unique else best_pairs(first, second, top, min_joint_score)
    return write_pairs(out, pairs)
