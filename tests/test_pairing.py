"""Pose pairing of patch sets (``humanserve pair``), on synthetic CSVs: invariance, views, joint scores, top K,
one-to-one."""

import csv
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from export.archive import REPO
from humanserve_client.pairing import (
    PATCH_COLUMNS,
    PatchFileError,
    best_pairs,
    read_patches,
    similarities,
    unique_pairs,
)

RNG = np.random.default_rng(3)
POSES = RNG.uniform(0, 1, size=(6, 17, 2))  # in box units


def patch_row(
    name: str, pose: np.ndarray, box: list[float], view: str = "full-body-front", scores: np.ndarray | None = None
) -> dict:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    scores = np.ones(17) if scores is None else scores
    keypoints = np.concatenate([pose * side + [x1, y1], scores[:, None]], axis=1)
    return {
        "video": "v.mp4",
        "frame": 0,
        "time_s": 0.0,
        "person": 0,
        "patch": name,
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "score": 0.99,
        "view": view,
        "keypoints": json.dumps(keypoints.round(4).tolist()),
    }


def write(path, rows: list[dict]):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PATCH_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_same_pose_anywhere_in_the_frame_at_any_scale_is_a_perfect_match(tmp_path):
    a = read_patches(write(tmp_path / "a.csv", [patch_row(f"a{i}", POSES[i], [10, 20, 110, 220]) for i in range(3)]))
    b = read_patches(
        write(tmp_path / "b.csv", [patch_row(f"b{i}", POSES[i], [500 + 7 * i, 40, 800 + 7 * i, 640]) for i in range(3)])
    )
    pairs = list(best_pairs(a, b, top=1, min_joint_score=0.0))
    assert [(p[0], p[1], p[4]) for p in pairs] == [("a0", "b0", 1), ("a1", "b1", 1), ("a2", "b2", 1)]
    assert all(p[3] == pytest.approx(1.0, abs=1e-5) for p in pairs)


def test_only_the_same_view_pairs_and_top_k_is_best_first(tmp_path):
    a = read_patches(write(tmp_path / "a.csv", [patch_row("a", POSES[0], [0, 0, 100, 200])]))
    b_rows = [patch_row(f"b{i}", POSES[i], [0, 0, 100, 200]) for i in range(1, 5)]
    b_rows.append(patch_row("other view", POSES[0], [0, 0, 100, 200], view="full-body-back"))
    b = read_patches(write(tmp_path / "b.csv", b_rows))
    pairs = list(best_pairs(a, b, top=3, min_joint_score=0.0))
    expected = similarities(a, b, np.arange(1), np.arange(4), 0.0)[0]
    assert [p[1] for p in pairs] == [f"b{i + 1}" for i in np.argsort(-expected)[:3]]
    assert [p[4] for p in pairs] == [1, 2, 3] and all("other view" != p[1] for p in pairs)


def test_unsure_joints_are_left_out_of_both_poses(tmp_path):
    wild = POSES[0].copy()
    wild[:5] += 5.0  # the head, far off: but its joints are unsure
    scores = np.ones(17)
    scores[:5] = 0.1
    a = read_patches(write(tmp_path / "a.csv", [patch_row("a", wild, [0, 0, 100, 200], scores=scores)]))
    b = read_patches(write(tmp_path / "b.csv", [patch_row("b", POSES[0], [0, 0, 100, 200])]))
    assert next(best_pairs(a, b, 1, min_joint_score=0.5))[3] == pytest.approx(1.0, abs=1e-5)
    assert next(best_pairs(a, b, 1, min_joint_score=0.0))[3] < 0.99


def test_the_cosine_is_computed_over_shared_joints_as_by_hand():
    sure = np.ones(17)
    sure[3] = 0
    a = read_patches_from_arrays(POSES[:2], np.ones((2, 17)))
    b = read_patches_from_arrays(POSES[2:5], np.stack([sure] * 3))
    cosine = similarities(a, b, np.arange(2), np.arange(3), 0.5)
    for i, j in itertools.product(range(2), range(3)):
        u, v = np.delete(POSES[i], 3, axis=0).ravel(), np.delete(POSES[2 + j], 3, axis=0).ravel()
        assert cosine[i, j] == pytest.approx(u @ v / np.linalg.norm(u) / np.linalg.norm(v), abs=1e-5)


def read_patches_from_arrays(poses: np.ndarray, scores: np.ndarray):
    from humanserve_client.pairing import Patches

    return Patches([f"p{i}" for i in range(len(poses))], np.array(["v"] * len(poses), dtype=object), poses, scores)


def test_chunks_change_nothing_and_unique_is_the_best_assignment():
    poses = RNG.uniform(0, 1, size=(7, 17, 2))
    a, b = read_patches_from_arrays(poses[:5], np.ones((5, 17))), read_patches_from_arrays(poses[2:], np.ones((5, 17)))
    chunked, whole = list(best_pairs(a, b, 2, 0.0, chunk=2)), list(best_pairs(a, b, 2, 0.0, chunk=512))
    assert [(p[0], p[1], p[4]) for p in chunked] == [(p[0], p[1], p[4]) for p in whole]
    assert np.allclose([p[3] for p in chunked], [p[3] for p in whole], atol=1e-6)
    cosine = similarities(a, b, np.arange(5), np.arange(5), 0.0)
    best = max(sum(cosine[i, j] for i, j in enumerate(order)) for order in itertools.permutations(range(5)))
    assigned = list(unique_pairs(a, b, 0.0))
    assert len({p[1] for p in assigned}) == 5 and sum(p[3] for p in assigned) == pytest.approx(best, abs=1e-5)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda row: row.update(keypoints="[[1, 2, 3]]"), "line 2: keypoints must be 17"),
        (lambda row: row.update(keypoints="not json"), "line 2: keypoints must be a JSON array"),
        (lambda row: row.update(x2=row["x1"]), "line 2: the box"),
        (lambda row: row.pop("view"), "no column 'view'"),
    ],
)
def test_malformed_patch_files_name_the_problem(tmp_path, change, words):
    row = patch_row("a", POSES[0], [0, 0, 100, 200])
    change(row)
    with open(tmp_path / "bad.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    with pytest.raises(PatchFileError, match=words):
        read_patches(tmp_path / "bad.csv")


def test_the_cli_writes_the_pairs_csv_and_reports_bad_files(tmp_path):
    a = write(tmp_path / "a.csv", [patch_row(f"a{i}", POSES[i], [0, 0, 50, 100]) for i in range(3)])
    b = write(tmp_path / "b.csv", [patch_row(f"b{i}", POSES[i], [10, 10, 60, 90]) for i in range(3)])
    command = [
        sys.executable,
        "-m",
        "humanserve_client",
        "pair",
        str(a),
        str(b),
        "--out",
        str(tmp_path / "pairs.csv"),
        "--unique",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["a_patch"], r["b_patch"], r["rank"]) for r in rows] == [
        ("a0", "b0", "1"),
        ("a1", "b1", "1"),
        ("a2", "b2", "1"),
    ]
    (tmp_path / "broken.csv").write_text("patch,view\nx,y\n")
    result = subprocess.run(
        command[:4] + [str(tmp_path / "broken.csv"), str(b)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "no column 'x1'" in result.stderr


def test_the_cli_refuses_a_top_below_one(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "humanserve_client", "pair", "a.csv", "b.csv", "--top", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--top: must be at least 1, got 0" in result.stderr
