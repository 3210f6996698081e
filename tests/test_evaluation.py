"""``humanserve evaluate``: COCO keypoint AP as pycocotools computes it, PCK by hand, malformed files, and a served
oracle."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from handlers.vision import keypoints
from humanserve_client import coco
from humanserve_client.evaluation import (
    AnnotationError,
    match_by_oks,
    read_ground_truth,
    read_results,
    score,
)
from tests.fixtures.oracles import paint_people
from tests.fixtures.serving import encode, run_cli

# (width, height) per image, and the people of each as [x, y, w, h] boxes
IMAGES = {1: (640, 480), 2: (320, 400), 3: (500, 500)}
PEOPLE = {
    1: [[40, 30, 200, 400], [300, 60, 150, 300]],
    2: [[10, 20, 280, 360]],
    3: [[100, 50, 120, 200], [260, 240, 200, 250]],
}


def ground_truth(seed: int = 0, head_boxes: bool = False) -> dict:
    """A COCO keypoints file: joints inside each box, some unlabelled (v = 0), some occluded (v = 1)."""
    rng = np.random.default_rng(seed)
    annotations = []
    for image_id, boxes in PEOPLE.items():
        for x, y, w, h in boxes:
            joints = np.stack(
                [rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), rng.choice([0, 1, 2, 2, 2], 17)], 1
            )
            joints[joints[:, 2] == 0, :2] = 0
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "bbox": [x, y, w, h],
                "area": 0.6 * w * h,
                "iscrowd": 0,
                "keypoints": joints.round(2).flatten().tolist(),
                "num_keypoints": int((joints[:, 2] > 0).sum()),
            }
            if head_boxes:
                annotation["head_bbox"] = [x + w / 3, y, w / 3, h / 6]
            annotations.append(annotation)
    return {
        "images": [{"id": i, "file_name": f"{i:012d}.png", "width": w, "height": h} for i, (w, h) in IMAGES.items()],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }


def as_results(dataset: dict, shifts: dict[int, np.ndarray] = {}) -> list[dict]:
    """One result per annotation: its joints (moved by ``shifts[annotation id]`` [17, 2]), score 1 - id / 100."""
    results = []
    for annotation in dataset["annotations"]:
        joints = np.reshape(annotation["keypoints"], (17, 3)).copy()
        joints[:, :2] += shifts.get(annotation["id"], 0)
        joints[:, 2] = 0.9
        results.append(
            {
                "image_id": annotation["image_id"],
                "category_id": 1,
                "keypoints": joints.flatten().tolist(),
                "score": 1 - annotation["id"] / 100,
            }
        )
    return results


def write(path: Path, value) -> Path:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def pycocotools_ap(dataset: dict, results: list[dict]) -> list[float]:
    """pycocotools on its own: the reference figures."""
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = json.loads(json.dumps(dataset))
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "keypoints")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return list(evaluation.stats[:6])


def test_the_client_carries_the_servers_keypoint_layout_itself():
    assert Path(coco.__file__).resolve() == Path(keypoints.__file__).resolve()


def test_the_ground_truth_itself_scores_ap_and_pck_one(tmp_path):
    dataset = ground_truth()
    truth = read_ground_truth(write(tmp_path / "truth.json", dataset))
    for made_for in (None, [a["id"] for a in dataset["annotations"]]):
        report = score(truth, as_results(dataset), made_for)
        assert [report[k] for k in ("AP", "AP50", "AP75", "APl", "AR")] == [1.0] * 5
        assert report["PCK"] == 1.0 and set(report["PCK_per_joint"].values()) <= {1.0, None}
        assert "PCKh" not in report


def test_perturbed_results_score_what_pycocotools_and_the_hand_count_say(tmp_path):
    dataset = ground_truth(seed=1)
    rng = np.random.default_rng(2)
    # Each person's joints move by a different distance: some well inside alpha x the box side, some far outside.
    shifts = {a["id"]: rng.normal(0, 1, (17, 2)) * rng.choice([2.0, 15.0, 60.0]) for a in dataset["annotations"]}
    results = as_results(dataset, shifts)
    report = score(read_ground_truth(write(tmp_path / "truth.json", dataset)), results, alpha=0.2)
    expected = pycocotools_ap(dataset, results)
    assert [report[k] for k in ("AP", "AP50", "AP75", "APl", "AR")] == pytest.approx(
        [expected[i] for i in (0, 1, 2, 4, 5)]
    )
    assert report["APm"] is None and expected[3] == -1  # no medium-sized person: nothing to score
    assert 0 < report["AP"] < 1

    correct = labelled = 0
    per_joint = np.zeros((2, 17))
    for annotation in dataset["annotations"]:
        visible = np.reshape(annotation["keypoints"], (17, 3))[:, 2] > 0
        within = np.linalg.norm(shifts[annotation["id"]], axis=1) <= 0.2 * max(annotation["bbox"][2:])
        correct += (within & visible).sum()
        labelled += visible.sum()
        per_joint += [within & visible, visible]
    assert report["PCK"] == pytest.approx(correct / labelled)
    assert 0 < report["PCK"] < 1
    assert list(report["PCK_per_joint"].values()) == pytest.approx(list(per_joint[0] / per_joint[1]))


def test_pckh_uses_the_head_boxes(tmp_path):
    dataset = ground_truth(seed=3, head_boxes=True)
    truth = read_ground_truth(write(tmp_path / "truth.json", dataset))
    shift = {}
    for annotation in dataset["annotations"]:
        head = 0.6 * np.hypot(*annotation["head_bbox"][2:])
        # Joint j moves by (j + 0.5) / 16 x the head size: within 0.5 x head size for j <= 7.
        shift[annotation["id"]] = np.stack([(np.arange(17) + 0.5) / 16 * head, np.zeros(17)], 1)
    report = score(truth, as_results(dataset, shift))
    visible = np.array([np.reshape(a["keypoints"], (17, 3))[:, 2] > 0 for a in dataset["annotations"]])
    assert report["PCKh"] == pytest.approx(visible[:, :8].sum() / visible.sum())
    assert [report["PCKh_per_joint"][name] for name in list(report["PCKh_per_joint"])[8:]] == [0.0] * 9


def test_missing_and_extra_predictions(tmp_path):
    dataset = ground_truth(seed=4)
    truth = read_ground_truth(write(tmp_path / "truth.json", dataset))
    results = as_results(dataset)
    dropped = results.pop(0)  # nobody found for annotation 1: its joints are all wrong
    stray = {
        **dropped,
        "image_id": 3,
        "keypoints": (np.array(dropped["keypoints"]) + 1000).tolist(),
    }  # far from everyone
    report = score(truth, list(reversed(results)) + [stray])
    visible = np.array([np.reshape(a["keypoints"], (17, 3))[:, 2] > 0 for a in dataset["annotations"]])
    assert report["PCK"] == pytest.approx(visible[1:].sum() / visible.sum())
    assert report["AP"] < 1 and report["predictions"] == len(results) + 1


def test_matching_by_oks_is_one_to_one_and_best_first():
    truth = np.zeros((2, 17, 3))
    truth[0, :, :2], truth[1, :, :2], truth[..., 2] = 100, 300, 2
    predicted = np.stack([np.full((17, 2), 302.0), np.full((17, 2), 101.0), np.full((17, 2), 299.0)])
    assert sorted(match_by_oks(predicted, truth, np.array([5000.0, 5000.0]))) == [(1, 0), (2, 1)]


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: "not json {", "not JSON"),
        (lambda d: [], "JSON object"),
        (lambda d: {k: v for k, v in d.items() if k != "images"}, "no 'images' list"),
        (lambda d: d["annotations"][1].update(image_id=99), "annotations[1] needs an integer 'id' and the 'image_id'"),
        (
            lambda d: d["annotations"][2].update(keypoints=[1, 2, 2] * 16),
            "annotations[2]: 'keypoints' must be 17 x [x, y, v]",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, "3", 4]),
            "annotations[0]: 'bbox' must be [x, y, width, height]",
        ),
        (lambda d: d["images"][0].pop("file_name") and None, "images[0] needs an integer 'id' and a 'file_name'"),
        (lambda d: d["categories"].append({"id": 1, "keypoints": ["head", "neck"]}), "names 2 keypoints"),
    ],
)
def test_malformed_annotation_files_are_refused_by_name(tmp_path, change, words):
    dataset = ground_truth()
    changed = change(dataset)
    path = tmp_path / "truth.json"
    path.write_text(changed if isinstance(changed, str) else json.dumps(dataset if changed is None else changed))
    with pytest.raises(AnnotationError, match=words.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        read_ground_truth(path)
    done = subprocess.run(
        [sys.executable, "-m", "humanserve_client", "evaluate", str(path), "--results", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and json.loads(done.stderr)["error"]["type"] == "InvalidAnnotations"


def test_results_files_are_checked_and_scored_without_a_server(tmp_path):
    dataset = ground_truth(seed=5)
    truth_path = write(tmp_path / "truth.json", dataset)
    truth = read_ground_truth(truth_path)
    refused = subprocess.run(
        [sys.executable, "-m", "humanserve_client", "evaluate", "x.json", "--alpha", "0"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "must be above 0" in refused.stderr
    with pytest.raises(AnnotationError, match=r"results\[0\] needs the 'image_id'"):
        read_results(write(tmp_path / "bad.json", [{"image_id": 77, "keypoints": [0] * 51, "score": 1}]), truth)
    results = write(tmp_path / "results.json", as_results(dataset))
    report_path = tmp_path / "report.json"
    table = write(tmp_path / "accuracy.md", "| header |\n")
    command = [
        sys.executable,
        "-m",
        "humanserve_client",
        "evaluate",
        str(truth_path),
        "--results",
        str(results),
        "--report",
        str(report_path),
        "--table",
        str(table),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    row = table.read_text().splitlines()[-1].split(" | ")
    assert row[1:5] == ["results.json", "truth.json (3 images)", "from the results file", "none"]
    assert row[5:12] == ["100.0", "100.0", "100.0", "n/a", "100.0", "100.0", "100.0 (@0.2) |"]
    report = json.loads(report_path.read_text())
    assert json.loads(done.stdout) == report
    assert {"AP", "AP50", "AP75", "APm", "APl", "AR", "PCK", "PCK_per_joint"} <= report.keys()
    assert report["AP"] == 1.0 and report["PCK"] == 1.0 and "PCK@0.2 1.000" in done.stderr


def painted_dataset(folder: Path) -> dict:
    """Painted photos with their people annotated in COCO's convention (pixel indices: our coordinates less half a
    pixel)."""
    images, annotations = [], []
    cases = {
        1: (640, 480, [[20, 30, 260, 470], [340, 40, 620, 460]]),
        2: (480, 360, [[100, 20, 300, 350]]),
        3: (300, 420, [[0, 0, 300, 420]]),
    }
    for image_id, (width, height, regions) in cases.items():
        painted = paint_people(width, height, regions, seed=image_id)
        (folder / f"{image_id}.png").write_bytes(encode(painted.image, "PNG"))
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height})
        for (x1, y1, x2, y2), joints in zip(painted.boxes, painted.joints):
            keypoints = np.concatenate([joints - 0.5, np.full((17, 1), 2)], 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1) * 0.5,
                    "keypoints": keypoints.round(2).flatten().tolist(),
                }
            )
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


@pytest.mark.parametrize("protocol", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_the_served_pose_oracle_scores_ap_one(server, tmp_path, protocol):
    images = tmp_path / "images"
    images.mkdir()
    dataset = painted_dataset(images)
    truth = write(tmp_path / "truth.json", dataset)
    (images / "4.png").write_bytes(b"not an image")
    dataset["images"].append({"id": 4, "file_name": "4.png"})
    dataset["annotations"].append({**dataset["annotations"][-1], "id": 99, "image_id": 4})  # someone to send a box for
    with_broken = write(tmp_path / "with_broken.json", dataset)
    results, report = tmp_path / "results.json", tmp_path / "report.json"

    done = run_cli(
        server,
        "evaluate",
        str(truth),
        str(images),
        "--model",
        "pose_oracle",
        "--results",
        str(results),
        "--report",
        str(report),
        *protocol,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(report.read_text())
    assert figures["AP"] == 1.0 and figures["PCK"] == 1.0 and figures["predictions"] == 4, figures
    saved = json.loads(results.read_text())
    assert sorted(r["image_id"] for r in saved) == [1, 1, 2, 3]
    # The saved results score the same without the server.
    again = subprocess.run(
        [sys.executable, "-m", "humanserve_client", "evaluate", str(truth), "--results", str(results)],
        capture_output=True,
        text=True,
    )
    assert json.loads(again.stdout)["AP"] == 1.0

    # The whole photo as the person (no boxes sent): image 3's person fills it; the other images' people are missed.
    whole = run_cli(server, "evaluate", str(truth), str(images), "--model", "pose_oracle", "--boxes", "none", *protocol)
    figures = json.loads(whole.stdout)
    assert figures["predictions"] == 3 and 0 < figures["PCK"] < 1

    broken = run_cli(server, "evaluate", str(with_broken), str(images), "--model", "pose_oracle", *protocol)
    assert broken.returncode == 1 and json.loads(broken.stdout)["failed_images"] == 1
    assert '"image_id": 4' in broken.stderr and "InvalidImage" in broken.stderr
