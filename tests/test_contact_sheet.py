"""``humanserve contact-sheet``: the best pairs side by side, skeletons drawn where the joints are in each patch."""

import csv
import json
import subprocess
import sys

import cv2
import numpy as np

from export.archive import REPO
from humanserve_client.contact_sheet import JOINT, LABEL_HEIGHT
from humanserve_client.pairing import PATCH_COLUMNS, pair_files
from humanserve_client.patches import cut_patch, square_around

SIZE, CELL = 128, 192


def make_set(folder, shifts: list[tuple[int, int]], seed: int) -> list[np.ndarray]:
    """Patches of one pose at several places in grey frames, as ``humanserve patches`` writes them; their keypoints
    (frame px)."""
    (folder / "patches").mkdir(parents=True)
    pose = np.random.default_rng(seed).uniform(0.2, 0.8, size=(17, 2)) * [80, 160]
    all_keypoints = []
    with open(folder / "patches.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PATCH_COLUMNS)
        for n, (dx, dy) in enumerate(shifts):
            box = [40.0 + dx, 30.0 + dy, 120.0 + dx, 190.0 + dy]
            keypoints = np.concatenate([pose + box[:2], np.ones((17, 1))], axis=1)
            frame = np.full((300, 400, 3), 128, np.uint8)
            cv2.imwrite(str(folder / "patches" / f"p{n}.jpg"), cut_patch(frame, box, 0.1, SIZE))
            writer.writerow(
                ("v.mp4", n, n, 0, f"p{n}.jpg", *box, 0.9, "full-body-front", json.dumps(keypoints.tolist()))
            )
            all_keypoints.append(keypoints)
    return all_keypoints


def test_the_sheet_draws_each_pair_with_joints_where_they_are(tmp_path):
    keypoints = make_set(tmp_path / "a", [(0, 0), (100, 50)], seed=1)
    make_set(tmp_path / "b", [(30, 10), (200, 90)], seed=1)
    pair_files(tmp_path / "a" / "patches.csv", tmp_path / "b" / "patches.csv", tmp_path / "pairs.csv")
    out = tmp_path / "sheet.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "humanserve_client",
            "contact-sheet",
            str(tmp_path / "pairs.csv"),
            "--a",
            str(tmp_path / "a"),
            "--b",
            str(tmp_path / "b"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    sheet = cv2.imread(str(out))
    assert sheet.shape == (2 * (LABEL_HEIGHT + CELL), 2 * CELL, 3)
    # Set A's first patch is the top-left tile: each joint's dot sits at its place in the patch, scaled to the tile.
    x1, y1, side = square_around([40.0, 30.0, 120.0, 190.0], 0.1)
    tile = sheet[LABEL_HEIGHT : LABEL_HEIGHT + CELL, :CELL]
    for x, y, _ in keypoints[0]:
        u, v = int((x - x1) * CELL / side), int((y - y1) * CELL / side)
        assert np.abs(tile[v, u].astype(int) - JOINT).max() <= 60, (u, v, tile[v, u])
