"""``humanserve patches``: the sampling rule, the patch geometry, and synthetic videos through a real TorchServe
(Keypoint R-CNN oracle)."""

import csv
import subprocess
import sys

import cv2
import numpy as np
import pytest

from export.archive import REPO
from humanserve_client.pairing import read_patches
from humanserve_client.patches import FILL, PatchSettings, cut_patch, look_back_frames, square_around
from tests.fixtures.oracles import PERSON_FRAMES
from tests.fixtures.serving import run_cli
from tests.fixtures.videos import Walker, paint_video
from tests.test_tracking_serving import write_video

MODEL = "keypoint_oracle"
FPS = 10  # write_video's frame rate


def test_look_back_frames_spread_over_the_second_before_and_stop_at_the_previous_sample():
    assert look_back_frames(48, 24, PatchSettings(every=24, look_back=4)) == [29, 34, 38, 43]
    assert look_back_frames(48, 10, PatchSettings(every=24, look_back=4)) == [40, 42, 44, 46]
    assert look_back_frames(10, 30, PatchSettings(every=10, look_back=4)) == [
        4
    ]  # only those after the previous sample (0)
    assert look_back_frames(0, 24, PatchSettings()) == []


@pytest.mark.parametrize("size", [64, 100, 256])
def test_a_patch_is_the_padded_square_scaled_never_stretched(size):
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[100:110, 200:210] = (255, 255, 255)  # a 10 px test square inside the box
    box = [150.0, 60.0, 250.0, 260.0]
    patch = cut_patch(frame, box, padding=0.1, size=size)
    assert patch.shape == (size, size, 3)
    x1, y1, side = square_around(box, 0.1)
    assert side == pytest.approx(240) and (x1, y1) == pytest.approx((80, 40))
    scale = size / side
    ys, xs = np.nonzero(patch[..., 0] > 127)
    # The test square's centre (205, 105) lands at (centre - corner) * scale, its side scaled alike.
    assert np.mean(xs) + 0.5 == pytest.approx((205 - x1) * scale, abs=0.5)
    assert np.mean(ys) + 0.5 == pytest.approx((105 - y1) * scale, abs=0.5)
    assert np.ptp(xs) + 1 == pytest.approx(10 * scale, abs=1.5) and np.ptp(ys) + 1 == pytest.approx(10 * scale, abs=1.5)


def test_where_the_square_leaves_the_frame_it_is_filled():
    frame = np.full((100, 100, 3), 200, np.uint8)
    patch = cut_patch(frame, [0.0, 0.0, 50.0, 100.0], padding=0.0, size=100)  # the square spans x -25..75
    assert (patch[:, :20] == FILL).all() and (patch[:, 30:] == 200).all()


@pytest.fixture
def video(tmp_path):
    """60 frames at 10 fps: nobody until frame 30, then a person standing still (and a second, fainter one)."""
    walkers = [
        Walker((60, 40, 140, 200), (0, 0), colour=0, layout=1, hidden=tuple(range(30))),
        Walker((200, 60, 260, 180), (0, 0), colour=2, layout=2, hidden=tuple(range(30))),
    ]
    frames = paint_video(320, 240, walkers, 60, seed=5)
    write_video(tmp_path / "walk.avi", frames)
    return tmp_path / "walk.avi", frames


def rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_patches_follow_the_sampling_rule_land_on_the_person_and_resume(server, video, tmp_path):
    path, frames = video
    out = tmp_path / "out"
    done = run_cli(
        server, "patches", str(path), "--out", str(out), "--model", MODEL, "--size", "128", "--score-threshold", "0.9"
    )
    assert done.returncode == 0, done.stderr
    patches = rows(out / "patches.csv")
    # Samples 0 and 24 show nobody (no look-back); 48 shows the person, so 40, 42, 44, 46 are sent too.
    assert sorted(int(r["frame"]) for r in rows(out / "frames.csv")) == [0, 24, 40, 42, 44, 46, 48]
    assert sorted(int(r["frame"]) for r in patches) == [40, 42, 44, 46, 48]
    assert {r["person"] for r in patches} == {"0"}  # the best person only; the fainter one scores 0.60
    truth = frames[48].boxes[0]
    for row in patches:
        box = [float(row[c]) for c in ("x1", "y1", "x2", "y2")]
        assert np.abs(np.array(box) - truth).max() <= 2 and float(row["time_s"]) == int(row["frame"]) / FPS
        image = cv2.imread(str(out / "patches" / row["patch"]))
        assert image.shape == (128, 128, 3)
        # The person's outline (3 px of its frame colour) runs down the box's left edge: find it in the patch.
        x1, y1, side = square_around(truth, 0.1)
        scale = 128 / side
        u, v = round((truth[0] + 1.5 - x1) * scale - 0.5), round(((truth[1] + truth[3]) / 2 - y1) * scale - 0.5)
        assert np.abs(image[v, u, ::-1].astype(int) - PERSON_FRAMES[0]).max() <= 40, image[v, u]
    # The CSV round-trips: the pairing reader takes it, with 17 keypoints per patch.
    assert len(read_patches(out / "patches.csv").names) == 5
    again = run_cli(
        server, "patches", str(path), "--out", str(out), "--model", MODEL, "--size", "128", "--score-threshold", "0.9"
    )
    assert again.returncode == 0 and '"frames": 0' in again.stdout and len(rows(out / "patches.csv")) == 5
    # End to end: the set paired with itself (each patch's best match is itself), and its contact sheet.
    assert (
        run_cli_offline(
            "pair", str(out / "patches.csv"), str(out / "patches.csv"), "--out", str(tmp_path / "pairs.csv")
        ).returncode
        == 0
    )
    assert all(r["a_patch"] == r["b_patch"] and float(r["similarity"]) > 0.999 for r in rows(tmp_path / "pairs.csv"))
    sheet = run_cli_offline(
        "contact-sheet",
        str(tmp_path / "pairs.csv"),
        "--a",
        str(out),
        "--b",
        str(out),
        "--out",
        str(tmp_path / "sheet.jpg"),
    )
    assert sheet.returncode == 0, sheet.stderr
    assert cv2.imread(str(tmp_path / "sheet.jpg")).shape[0] > 5 * 192


def run_cli_offline(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "humanserve_client", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_every_person_with_all_people_and_a_bad_video_does_not_stop_the_others(server, video, tmp_path):
    path, _ = video
    (tmp_path / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    done = run_cli(
        server,
        "patches",
        str(tmp_path / "notes.txt"),
        str(path),
        "--out",
        str(out),
        "--model",
        MODEL,
        "--all-people",
        "--score-threshold",
        "0.5",
        "--every",
        "30",
        "--look-back",
        "0",
    )
    assert done.returncode == 1 and "UnreadableVideo" in done.stderr
    patches = rows(out / "patches.csv")
    assert sorted((int(r["frame"]), r["person"]) for r in patches) == [(30, "0"), (30, "1")]
