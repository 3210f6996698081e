"""The Open Inference Protocol (KServe v2) over REST, against a real TorchServe with the oracle models: called by
tritonclient (NVIDIA's own client) and by plain JSON as curl sends it, answering what ``/predictions`` answers."""

import base64
import json
from urllib.parse import urlsplit

import numpy as np
import pytest
import tritonclient.http as triton
from skimage import data
from tritonclient.utils import InferenceServerException

from tests.fixtures.oracles import paint_faces, paint_people
from tests.fixtures.serving import SMALL_JPEG, encode, post, send_together
from tests.test_people_serving import Photo

ASTRONAUT = encode(data.astronaut(), "JPEG")
FACES = encode(paint_faces(320, 240, [[100, 60, 180, 160]], seed=0), "PNG")
PEOPLE = encode(paint_people(200, 150, [[20, 10, 120, 140]], seed=3).image, "PNG")
# One model of each family (as archived for the tests: oracles), an option or two, and what answers: JSON or a picture.
FAMILIES = [
    ("pose_oracle", PEOPLE, {"flip_test": True}),
    ("detector_oracle", PEOPLE, {}),
    ("keypoint_oracle", PEOPLE, {"max_people": 2}),
    ("pipeline_oracle", PEOPLE, {}),
    ("segmenter_oracle", PEOPLE, {}),
    ("segmenter_oracle", PEOPLE, {"format": "png", "background": "transparent"}),
    ("face_oracle", FACES, {"second_opinion": True}),
    ("smart_filter_oracle", FACES, {}),
    ("style_oracle", ASTRONAUT, {"max_side": 256}),
    ("cyclegan_oracle", ASTRONAUT, {}),
    ("pix2pix_oracle", ASTRONAUT, {}),
]


@pytest.fixture(scope="module")
def triton_client(server):
    client = triton.InferenceServerClient(urlsplit(server.inference_url).netloc, network_timeout=300)
    yield client
    client.close()


def photos_input(photos: list[bytes], binary: bool = True) -> triton.InferInput:
    """The photos as a tritonclient user sends them: bytes with the binary extension, base64 text in JSON."""
    tensor = triton.InferInput("image", [len(photos)], "BYTES")
    elements = photos if binary else [base64.b64encode(photo) for photo in photos]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def as_predicted(server, http, model: str, photo: bytes, options: dict):
    """``/predictions``' answer: parsed JSON, or the picture's bytes."""
    response = post(server, http, model, photo, "multipart", options)
    assert response.status_code == 200, response.text
    if response.headers["Content-Type"].startswith("application/json"):
        return response.json()
    return response.content


def v2_answers(result: triton.InferResult) -> list:
    """A v2 result's answers, parsed as ``as_predicted`` parses them."""
    names = [output["name"] for output in result.get_response()["outputs"]]
    if "picture" in names:
        return [bytes(e) for e in result.as_numpy("picture")]
    return [json.loads(e) for e in result.as_numpy("answer")]


@pytest.mark.parametrize("model, photo, options", FAMILIES, ids=[f"{m}{o}" for m, _, o in FAMILIES])
def test_every_family_answers_tritonclient_as_it_answers_predictions(
    server, http, triton_client, model, photo, options
):
    result = triton_client.infer(model, [photos_input([photo])], request_id="one", parameters=options)
    assert result.get_response()["id"] == "one" and result.get_response()["model_name"] == model
    assert v2_answers(result) == [as_predicted(server, http, model, photo, options)]


def test_several_photos_in_one_request_are_answered_together_in_order(server, http, triton_client):
    photos = [PEOPLE, encode(paint_people(97, 131, [[10, 20, 80, 120]], seed=4).image, "JPEG"), SMALL_JPEG]
    for model in ("pose_oracle", "segmenter_oracle"):
        result = triton_client.infer(model, [photos_input(photos)])
        assert v2_answers(result) == [as_predicted(server, http, model, photo, {}) for photo in photos]


def test_typed_tensors_hold_what_the_json_answers_say(server, http, triton_client):
    photos = [PEOPLE, encode(paint_people(97, 131, [[10, 20, 80, 120]], seed=4).image, "PNG")]
    result = triton_client.infer("pose_oracle", [photos_input(photos)])
    people = [person for answer in v2_answers(result) for person in answer["people"]]
    assert result.as_numpy("people").tolist() == [1, 1]
    assert np.allclose(result.as_numpy("keypoints"), [p["keypoints"] for p in people])
    assert np.allclose(result.as_numpy("boxes"), [p["box"] for p in people])
    framed = Photo("keypoints", 500, 700, [[100, 80, 400, 640]]).paint(seed=9)  # as the keypoint oracle finds people
    viewed = triton_client.infer("keypoint_oracle", [photos_input([encode(framed.image, "PNG")])])
    (answer,) = v2_answers(viewed)
    assert answer["people"] and [v.decode() for v in viewed.as_numpy("views")] == [
        p["view"] for p in answer["people"]
    ], answer
    faces = triton_client.infer("face_oracle", [photos_input([FACES])])
    (answer,) = v2_answers(faces)
    assert np.allclose(faces.as_numpy("landmarks"), [face["landmarks"] for face in answer["faces"]])
    wanted = [triton.InferRequestedOutput("masks"), triton.InferRequestedOutput("mask_sizes")]
    masks = triton_client.infer("segmenter_oracle", [photos_input([PEOPLE])], outputs=wanted)
    expected = as_predicted(server, http, "segmenter_oracle", PEOPLE, {})["mask"]
    assert [m.decode() for m in masks.as_numpy("masks")] == [expected["counts"]]
    assert masks.as_numpy("mask_sizes").tolist() == [expected["size"]]
    assert [o["name"] for o in masks.get_response()["outputs"]] == ["masks", "mask_sizes"]


def test_json_in_and_out_as_curl_sends_it(server, http):
    body = {
        "id": "curl",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(FACES).decode("ascii")]}
        ],
        "parameters": {"max_faces": 1},
    }
    response = http.post(f"{server.inference_url}/v2/models/face_oracle/infer", json=body, timeout=300)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json", response.text
    answer = response.json()
    output = answer["outputs"][0]
    assert answer["id"] == "curl" and output["name"] == "answer" and output["shape"] == [1]
    assert json.loads(output["data"][0]) == as_predicted(server, http, "face_oracle", FACES, {"max_faces": 1})
    pictures = {**body, "parameters": {"max_side": 128}}
    response = http.post(f"{server.inference_url}/v2/models/style_oracle/infer", json=pictures, timeout=300)
    (output,) = response.json()["outputs"]
    assert output["name"] == "picture" and output["parameters"]["content_encoding"] == "base64"
    assert base64.b64decode(output["data"][0]) == as_predicted(server, http, "style_oracle", FACES, {"max_side": 128})


# Requests tritonclient sends with one thing wrong: the v2 error it gets (status, and a part of the message).
BAD_V2 = [
    ("a GIF", [encode(np.zeros((8, 8, 3), np.uint8), "GIF")], {}, 415, "GIF"),
    ("a truncated JPEG", [SMALL_JPEG[:700]], {}, 400, "cannot be decoded"),
    ("a good photo and a broken one", [PEOPLE, b"not an image"], {}, 400, "photo 1 of 2: "),
    ("too many photos", [PEOPLE] * 9, {}, 400, "at most 8"),
    ("an unknown option", [PEOPLE], {"colour": "red"}, 400, "unknown option 'colour'"),
    ("an option out of range", [PEOPLE], {"score_threshold": 2}, 400, "'score_threshold' must be a number"),
]


def test_bad_requests_get_v2_errors_and_their_batch_mates_are_answered(server, http, triton_client):
    model = "pose_oracle"
    pids = server.worker_pids(model)
    expected = as_predicted(server, http, model, PEOPLE, {})

    def send(job):
        # a client each: tritonclient's HTTP client (gevent inside) is not to be shared between threads
        client = triton.InferenceServerClient(urlsplit(server.inference_url).netloc, network_timeout=300)
        try:
            if job is None:
                return v2_answers(client.infer(model, [photos_input([PEOPLE])]))
            _, photos, options, _, _ = job
            client.infer(model, [photos_input(photos)], parameters=options)
        except InferenceServerException as error:
            return error
        finally:
            client.close()
        return None

    results = send_together([None] * 4 + BAD_V2, send)
    assert results[:4] == [[expected]] * 4
    for (name, _, _, status, fragment), error in zip(BAD_V2, results[4:]):
        assert isinstance(error, InferenceServerException), name
        assert error.status() == str(status) and fragment in error.message(), (name, error)
    missing_image = {"inputs": [{"name": "photo", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    response = http.post(f"{server.inference_url}/v2/models/{model}/infer", json=missing_image, timeout=300)
    assert response.status_code == 400 and "must be BYTES" in response.json()["error"]
    assert server.worker_pids(model) == pids  # no worker died
