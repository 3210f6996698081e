"""Person detector, Keypoint R-CNN and the detect-then-pose pipeline served by a real TorchServe, with oracles."""

import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from handlers.vision.keypoints import COCO_KEYPOINTS
from tests.fixtures.oracles import OTHER_FRAME, PERSON_FRAMES, PERSON_SCORES, paint_frames, paint_people
from tests.fixtures.serving import BAD_REQUESTS, check_bad_requests_beside_good_ones, encode, post, send_together

FRAME_MARGIN = 10  # frames sit this far outside the region holding a person's joints


@dataclass
class Photo:
    """A painted photo: person frames (with their joints inside) and an optional non-person frame."""

    name: str
    width: int
    height: int
    regions: list[list[float]]  # joints go here; person p's frame is the region grown by FRAME_MARGIN, shade p
    other: list[float] | None = None  # a frame the detector labels as something else
    form: str = "raw"

    def paint(self, seed: int, joints: tuple[str, ...] = COCO_KEYPOINTS):
        painted = paint_people(self.width, self.height, self.regions, seed, joints)
        frames = [(box, PERSON_FRAMES[p]) for p, box in enumerate(self.person_boxes)]
        if self.other:
            frames.append((self.other, OTHER_FRAME))
        paint_frames(painted.image, frames)
        return painted

    @property
    def person_boxes(self) -> list[list[float]]:
        m = FRAME_MARGIN
        return [[x1 - m, y1 - m, x2 + m, y2 + m] for x1, y1, x2, y2 in self.regions]


PHOTOS = [
    Photo(
        "640x480, two people and a non-person",
        640,
        480,
        [[40, 60, 200, 400], [400, 40, 560, 380]],
        other=[250, 300, 350, 420],
    ),
    Photo("portrait 480x800, one person", 480, 800, [[120, 150, 330, 700]], form="multipart"),
    Photo(
        "2400x1600, three people",
        2400,
        1600,
        [[100, 200, 600, 1300], [1000, 300, 1350, 1000], [1800, 150, 2250, 1450]],
        form="json",
    ),
    Photo("300x300, nobody", 300, 300, [], other=[20, 20, 120, 120]),
]


def expected_people(photo: Photo) -> list[tuple[list[float], float]]:
    """(box, score) of every painted person, best first."""
    return sorted(zip(photo.person_boxes, PERSON_SCORES), key=lambda pair: -pair[1])


def check_boxes(answer: dict, photo: Photo) -> None:
    assert answer["image"] == {"width": photo.width, "height": photo.height}
    expected = expected_people(photo)
    assert len(answer["people"]) == len(expected), f"{photo.name}: {answer['people']}"
    for person, (box, score) in zip(answer["people"], expected):
        assert np.abs(np.array(person["box"]) - box).max() <= 2, f"{photo.name}: {person['box']} vs {box}"
        assert person["score"] == pytest.approx(score, abs=1e-4)


def test_detector_finds_painted_people_in_batches_of_mixed_sizes(server, http):
    jobs = [(photo, seed) for seed, photo in enumerate(PHOTOS) for _ in range(2)]
    painted = {(photo.name, seed): photo.paint(seed) for photo, seed in jobs}
    responses = send_together(
        jobs,
        lambda job: post(
            server, http, "detector_oracle", encode(painted[(job[0].name, job[1])].image, "PNG"), job[0].form
        ),
    )
    for (photo, _), response in zip(jobs, responses):
        assert response.status_code == 200, response.text
        check_boxes(response.json(), photo)
    assert max(int(r.headers["X-Batch-Size"]) for r in responses) > 1


def test_detector_options_filter_and_format(server, http):
    photo = PHOTOS[2]
    data = encode(photo.paint(seed=3).image, "PNG")
    scores = [
        p["score"]
        for p in post(server, http, "detector_oracle", data, "json", {"score_threshold": 0.7}).json()["people"]
    ]
    assert scores == pytest.approx([0.99, 0.80])
    assert len(post(server, http, "detector_oracle", data, "json", {"max_people": 1}).json()["people"]) == 1
    assert len(post(server, http, "detector_oracle", data, "json", {"score_threshold": 0.0}).json()["people"]) == 3
    coco = post(server, http, "detector_oracle", data, "json", {"format": "coco", "image_id": 5}).json()
    assert [(r["image_id"], r["category_id"]) for r in coco] == [(5, 1)] * 3 and "keypoints" not in coco[0]
    x, y, w, h = coco[0]["bbox"]
    assert np.abs(np.array([x, y, x + w, y + h]) - expected_people(photo)[0][0]).max() <= 2
    picture = post(server, http, "detector_oracle", data, "raw", {"render": True})
    assert picture.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(picture.content)).size == (photo.width, photo.height)


VIEW_CASES = [
    ("full-body-front", COCO_KEYPOINTS),
    (
        "head-and-shoulders-front",
        ("nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder", "left_hip", "right_hip"),
    ),
    ("full-body-back", tuple(n for n in COCO_KEYPOINTS if n not in ("nose", "left_eye", "right_eye"))),
    ("head-and-shoulders-back", ("left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow")),
    (
        "head-and-shoulders-front",
        ("nose", "left_eye", "left_ear", "left_shoulder", "left_hip", "left_knee", "left_ankle"),
    ),
]


@pytest.mark.parametrize(("view", "joints"), VIEW_CASES, ids=[f"{v}-{len(j)}" for v, j in VIEW_CASES])
def test_keypoint_rcnn_keypoints_and_view(server, http, view, joints):
    photo = Photo("keypoints", 500, 700, [[100, 80, 400, 640]])
    painted = photo.paint(seed=9, joints=joints)
    response = post(server, http, "keypoint_oracle", encode(painted.image, "PNG"), "json")
    assert response.status_code == 200, response.text
    answer = response.json()
    check_boxes(answer, photo)
    person = answer["people"][0]
    assert person["view"] == view
    keypoints = np.array(person["keypoints"])
    seen = [COCO_KEYPOINTS.index(n) for n in joints]
    assert np.abs(keypoints[seen, :2] - painted.joints[0][seen]).max() <= 1.5
    assert (keypoints[seen, 2] == 10).all() and (np.delete(keypoints[:, 2], seen) == -10).all()


def test_keypoint_rcnn_view_thresholds_are_options(server, http):
    photo = Photo("keypoints", 500, 700, [[100, 80, 400, 640]])
    data = encode(photo.paint(seed=9).image, "PNG")
    strict = post(server, http, "keypoint_oracle", data, "raw", {"view_face_threshold": 50, "view_body_threshold": 50})
    assert strict.json()["people"][0]["view"] == "head-and-shoulders-back"


def test_pipeline_finds_every_person_with_keypoints_on_their_joints(server, http):
    jobs = [(PHOTOS[0], 1), (PHOTOS[2], 2), (PHOTOS[0], 3)]
    painted = {seed: photo.paint(seed) for photo, seed in jobs}
    responses = send_together(
        jobs,
        lambda job: post(
            server, http, "pipeline_oracle", encode(painted[job[1]].image, "PNG"), "json", {"flip_test": job[1] == 3}
        ),
    )
    for (photo, seed), response in zip(jobs, responses):
        assert response.status_code == 200, response.text
        answer = response.json()
        check_boxes(answer, photo)
        assert answer["keypoint_names"] == list(COCO_KEYPOINTS)
        by_score = sorted(range(len(photo.regions)), key=lambda p: -PERSON_SCORES[p])
        for person, p in zip(answer["people"], by_score):
            box = photo.person_boxes[p]
            error = np.linalg.norm(np.array(person["keypoints"])[:, :2] - painted[seed].joints[p], axis=1)
            assert error.max() <= max(1.5, 0.01 * (box[3] - box[1])), f"{photo.name}, person {p}: {error.max():.2f} px"
    assert max(int(r.headers["X-Batch-Size"]) for r in responses) > 1


def test_pipeline_with_boxes_skips_the_detector_and_batches_with_requests_that_use_it(server, http):
    regions = [[30.0, 20.0, 150.0, 230.0], [200.0, 40.0, 310.0, 220.0]]
    bare = paint_people(320, 240, regions, seed=9)  # joints, no outlines: the detector oracle finds nobody
    framed = PHOTOS[0].paint(4)
    jobs = [
        ("given", encode(bare.image, "PNG"), {"boxes": regions}),
        ("searched", encode(bare.image, "PNG"), {}),
        ("detected", encode(framed.image, "PNG"), {}),
    ]
    responses = send_together(jobs, lambda job: post(server, http, "pipeline_oracle", job[1], "json", job[2]))
    answers = {name: response.json() for (name, _, _), response in zip(jobs, responses)}
    assert [person["box"] for person in answers["given"]["people"]] == regions
    assert [person["score"] for person in answers["given"]["people"]] == [1.0, 1.0]
    for person, joints in zip(answers["given"]["people"], bare.joints):
        assert np.linalg.norm(np.array(person["keypoints"])[:, :2] - joints, axis=1).max() <= 1.5
    assert answers["searched"]["people"] == []
    check_boxes(answers["detected"], PHOTOS[0])


@pytest.mark.parametrize("model", ["detector_oracle", "keypoint_oracle", "pipeline_oracle"])
def test_large_jpegs_decoded_at_half_size_answer_in_image_pixels(server, http, model):
    """A 3200x2400 JPEG: detectors resize it to 1067x800, so it is decoded at 1/2; answers stay in its own pixels."""
    # Two people far enough apart that neither one's padded pose crop reaches the other's joints.
    photo = Photo("3200x2400 JPEG", 3200, 2400, [[200, 300, 900, 2000], [2200, 400, 2900, 2100]])
    painted = paint_people(photo.width, photo.height, photo.regions, seed=9)
    paint_frames(painted.image, [(box, PERSON_FRAMES[p]) for p, box in enumerate(photo.person_boxes)], thickness=12)
    buffer = io.BytesIO()
    Image.fromarray(painted.image).save(buffer, "JPEG", quality=95, subsampling=0)
    response = post(server, http, model, buffer.getvalue(), "raw", image_format="JPEG")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["image"] == {"width": photo.width, "height": photo.height}
    expected = expected_people(photo)
    assert len(answer["people"]) == len(expected)
    for person, (box, _) in zip(answer["people"], expected):
        # Frames are found to a decoded pixel: 2 image pixels, and JPEG's blur of their edge.
        assert np.abs(np.array(person["box"]) - box).max() <= 4, f"{model}: {person['box']} vs {box}"
        if "keypoints" in person:
            p = photo.person_boxes.index(box)
            error = np.linalg.norm(np.array(person["keypoints"])[:, :2] - painted.joints[p], axis=1)
            assert error.max() <= max(1.5, 0.01 * (box[3] - box[1])), f"{model}, person {p}: {error.max():.2f} px"


@pytest.mark.parametrize("model", ["detector_oracle", "keypoint_oracle", "pipeline_oracle"])
def test_bad_requests_get_their_own_4xx_for_every_model(server, http, model):
    photo = PHOTOS[0]
    data = encode(photo.paint(seed=4).image, "PNG")
    check_bad_requests_beside_good_ones(
        server,
        http,
        model,
        BAD_REQUESTS,
        send_good=lambda: post(server, http, model, data, "raw"),
        check_good=lambda response: check_boxes(response.json(), photo),
    )


@pytest.mark.parametrize("model", ["person_detector_mobilenet", "keypoint_rcnn"])
def test_real_detectors_answer_offline_with_untrained_weights_reported(server, http, model):
    from skimage import data

    response = post(
        server, http, model, encode(data.astronaut(), "PNG"), "json", {"max_people": 3, "score_threshold": 0.0}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == model and answer["image"] == {"width": 512, "height": 512}
    assert len(answer["people"]) <= 3
    for person in answer["people"]:
        assert len(person["box"]) == 4 and 0 <= person["score"] <= 1
        if model == "keypoint_rcnn":
            assert len(person["keypoints"]) == 17 and person["view"] in (
                "full-body-front",
                "full-body-back",
                "head-and-shoulders-front",
                "head-and-shoulders-back",
            )
    weights = server.describe(model)["customizedMetadata"]["weights"]["model"]
    assert weights["source"] == "random" and weights["pretrained"] is False
