"""The Open Inference Protocol codecs (handlers/core/v2.py, v2_grpc.py), fed and read by tritonclient's own request
and response code (REST and gRPC), and by hand-written JSON as curl sends it."""

import base64
import json

import numpy as np
import pytest
import tritonclient.grpc
import tritonclient.http as triton
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request

from handlers.core.answers import Answer, error_answer
from handlers.core.errors import RequestError
from handlers.core.v2 import (
    JSON_LENGTH_HEADER,
    V2Request,
    in_sequence,
    is_v2_request,
    read_v2_request,
    split_body,
    v2_answer,
    v2_error,
    v2_metadata,
)
from handlers.core.v2_grpc import grpc_answer, model_metadata, read_grpc_request

PHOTOS = [b"\xff\xd8first photo", b"\x89PNG second, longer photo"]


def photos_input(photos: list[bytes], binary: bool) -> triton.InferInput:
    """The photos as tritonclient sends them: their bytes with the binary extension, else base64 text in the JSON
    (tritonclient puts BYTES elements in JSON as UTF-8 text)."""
    tensor = triton.InferInput("image", [len(photos)], "BYTES")
    elements = photos if binary else [base64.b64encode(photo) for photo in photos]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def read(row: dict, headers: dict, most_images: int) -> V2Request:
    """What the handler reads of a request row TorchServe hands it, which must be a v2 request."""
    body, binary = split_body(row, headers)
    assert is_v2_request(body, headers)
    return read_v2_request(body, binary, most_images)


def triton_row(photos: list[bytes], binary: bool, **kwargs) -> tuple[dict, dict]:
    """What TorchServe hands the handler for tritonclient's request: the body's bytes and the request's headers."""
    body, json_size = triton.InferenceServerClient.generate_request_body([photos_input(photos, binary)], **kwargs)
    headers = {JSON_LENGTH_HEADER: str(json_size)} if json_size is not None else {}
    return {"body": bytearray(body)}, headers


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_s_requests_give_their_photos_and_options(binary):
    row, headers = triton_row(PHOTOS, binary, request_id="r1", parameters={"flip_test": True, "max_people": 3})
    request = read(row, headers, most_images=4)
    assert request.images == PHOTOS and request.id == "r1"
    assert request.options == {"flip_test": True, "max_people": 3}  # binary_data_output is the protocol's


def test_curl_s_json_with_base64_and_input_parameters():
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1, 1],
                "data": [[base64.b64encode(PHOTOS[0]).decode()]],
                "parameters": {"render": True, "content_type": "base64"},
            }
        ],
        "parameters": {"format": "png"},
    }
    request = read({"body": body}, {}, most_images=1)  # TorchServe parses a body sent as application/json
    assert request.images == PHOTOS[:1] and request.options == {"format": "png", "render": True}
    assert request.id is None and not request.binary_output


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"inputs": []}, "one BYTES input named 'image'"),
        ([1, 2], "a JSON object with 'inputs'"),
        ({"inputs": [{"name": "a"}, {"name": "b"}]}, "inputs given: 'a', 'b'"),
        ({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, "must be BYTES"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["aGk="]}]}, "holds 1 photos"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": "1", "data": ["aGk="]}]}, "needs a shape"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [0], "data": []}]}, "holds no photo"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [7]}]}, "base64 strings"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}, "not valid base64"),
        (
            {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}, {"name": "flip"}]},
            "unknown input 'flip'",
        ),
        (
            {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}], "parameters": [1]},
            "must be an object of options",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": ["aGk="],
                        "parameters": {"sequence_id": 7},
                    }
                ],
            },
            "'sequence_id' goes in the request's parameters",
        ),
        (
            {
                "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}],
                "parameters": {"sequence_id": 7, "sequence_end": "yes"},
            },
            "'sequence_end' must be true or false",
        ),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3], "data": ["aGk="] * 3}]}, "at most 2"),
    ],
)
def test_malformed_requests_are_refused_saying_what_is_wrong(body, fragment):
    with pytest.raises(RequestError) as refused:
        read_v2_request(body, b"", most_images=2)
    assert fragment in refused.value.message


@pytest.mark.parametrize(
    "cut, length, fragment",
    [
        (-3, None, "ends inside a photo"),
        (0, "12x", "must be a whole number"),
        (0, "100000", "but the body has"),
    ],
)
def test_broken_binary_data_is_refused(cut, length, fragment):
    row, headers = triton_row(PHOTOS, binary=True)
    body = bytes(row["body"])
    if cut:
        # the JSON still claims the whole tensor: shorten it inside a photo by fixing the size it states
        text = body[: int(headers[JSON_LENGTH_HEADER])]
        blob = body[len(text) : cut]
        size = len(body) - len(text)
        text = text.replace(f'"binary_data_size":{size}'.encode(), f'"binary_data_size":{size + cut}'.encode())
        body, headers = text + blob, {JSON_LENGTH_HEADER: str(len(text))}
    if length is not None:
        headers = {JSON_LENGTH_HEADER: length}
    with pytest.raises(RequestError) as refused:
        read({"body": bytearray(body)}, headers, most_images=4)
    assert fragment in refused.value.message


def test_binary_data_no_input_claims_is_refused():
    row, headers = triton_row(PHOTOS, binary=True)
    with pytest.raises(RequestError, match="no input claims"):
        read({"body": row["body"] + b"\x00\x01"}, headers, most_images=4)


JSON_ANSWERS = [Answer(b'{"people":1}', "application/json"), Answer(b'{"people":0}', "application/json")]


@pytest.mark.parametrize("binary", [True, False])
def test_answers_read_back_by_tritonclient(binary):
    request = V2Request("r2", PHOTOS, {}, binary_output=binary)
    answer = v2_answer(request, "pose", "1.0", JSON_ANSWERS)
    length = answer.headers.get(JSON_LENGTH_HEADER)
    result = triton.InferenceServerClient.parse_response_body(answer.body, header_length=length and int(length))
    assert result.get_response()["id"] == "r2" and result.get_response()["model_name"] == "pose"
    answers = result.as_numpy("answer")
    assert [json.loads(a) for a in answers] == [{"people": 1}, {"people": 0}]
    assert [o["name"] for o in result.get_response()["outputs"]] == ["answer"]  # nothing typed in these answers


def test_pictures_are_base64_in_json_and_bytes_in_binary():
    pictures = [Answer(b"\x89PNG...", "image/png"), Answer(b"\x89PNG....", "image/png")]
    as_json = json.loads(v2_answer(V2Request(None, PHOTOS, {}, False), "m", "1", pictures).body)
    (output,) = as_json["outputs"]  # a picture has no typed tensors
    assert output["name"] == "picture" and output["parameters"]["content_type"] == "image/png"
    assert [base64.b64decode(d) for d in output["data"]] == [p.body for p in pictures]
    binary = v2_answer(V2Request(None, PHOTOS, {}, True), "m", "1", pictures)
    result = triton.InferenceServerClient.parse_response_body(
        binary.body, header_length=int(binary.headers[JSON_LENGTH_HEADER])
    )
    assert list(result.as_numpy("picture")) == [p.body for p in pictures]


def test_a_failed_photo_fails_its_request_with_its_status_and_message():
    bad = Answer(b'{"code": 415, "type": "UnsupportedImageType", "message": "a GIF"}', "application/json", 415)
    answer = v2_answer(V2Request(None, PHOTOS, {}, False), "m", "1", [JSON_ANSWERS[0], bad])
    assert answer.status == 415
    assert json.loads(answer.body) == {"error": "photo 1 of 2: a GIF", "type": "UnsupportedImageType", "code": 415}
    single = v2_error(bad, 0, 1)
    assert json.loads(single.body)["error"] == "a GIF"


def test_our_own_json_form_and_broken_json_are_no_v2_requests():
    ours = {"body": bytearray(b'{"image": "aGk=", "flip_test": true}')}
    body, binary = split_body(ours, {})
    assert body == {"image": "aGk=", "flip_test": True} and not is_v2_request(body, {})
    broken = {"body": bytearray(b'{"inputs": [')}
    assert split_body(broken, {}) == (broken["body"], b"")  # read_request names what is wrong
    assert not is_v2_request(broken["body"], {})


PEOPLE_ANSWERS = [
    {
        "people": [
            {"box": [1, 2, 3, 4], "score": 0.5, "keypoints": [[1.5, 2.5, 0.9]] * 17},
            {"box": [5, 6, 7, 8], "score": 0.25, "keypoints": [[3.5, 4.5, 0.1]] * 17},
        ],
        "keypoint_names": ["nose"] * 17,
    },
    {"people": [], "keypoint_names": ["nose"] * 17},
    {"people": [{"box": [0, 0, 9, 9], "score": 1.0, "keypoints": [[0.0, 0.0, 0.0]] * 17}], "keypoint_names": []},
]


@pytest.mark.parametrize("binary", [True, False])
def test_people_come_as_typed_tensors_too(binary):
    answers = [Answer(json.dumps(a).encode(), "application/json") for a in PEOPLE_ANSWERS]
    answer = v2_answer(V2Request(None, PHOTOS + PHOTOS[:1], {}, binary), "pose", "1", answers)
    length = answer.headers.get(JSON_LENGTH_HEADER)
    result = triton.InferenceServerClient.parse_response_body(answer.body, header_length=length and int(length))
    people = [person for a in PEOPLE_ANSWERS for person in a["people"]]
    assert result.as_numpy("people").tolist() == [2, 0, 1]
    assert np.array_equal(result.as_numpy("boxes").reshape(-1, 4), np.array([p["box"] for p in people], np.float32))
    assert np.array_equal(result.as_numpy("scores").ravel(), np.array([p["score"] for p in people], np.float32))
    keypoints = result.as_numpy("keypoints").reshape(-1, 17, 3)
    assert np.array_equal(keypoints, np.array([p["keypoints"] for p in people], np.float32))
    shapes = {o["name"]: o["shape"] for o in result.get_response()["outputs"]}
    assert shapes == {"answer": [3], "people": [3], "boxes": [3, 4], "scores": [3], "keypoints": [3, 17, 3]}


def test_masks_come_as_rle_and_named_outputs_alone():
    masks = [{"mask": {"size": [4, 6], "counts": "3a01"}}, {"mask": {"size": [8, 2], "counts": "0f"}}]
    answers = [Answer(json.dumps(m).encode(), "application/json") for m in masks]
    request = V2Request(None, PHOTOS, {}, False, outputs=("mask_sizes", "masks"))
    outputs = json.loads(v2_answer(request, "seg", "1", answers).body)["outputs"]
    assert [o["name"] for o in outputs] == ["mask_sizes", "masks"]
    assert outputs[0]["data"] == [4, 6, 8, 2] and outputs[0]["shape"] == [2, 2]
    assert outputs[1]["data"] == ["3a01", "0f"]
    unknown = v2_answer(V2Request(None, PHOTOS, {}, False, outputs=("keypoints",)), "seg", "1", answers)
    assert unknown.status == 400 and "no output 'keypoints'" in json.loads(unknown.body)["error"]


def test_a_sequence_model_s_frames_end_their_sequence_as_the_request_says():
    def request(**parameters) -> V2Request:
        body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGk="]}]}
        return read_v2_request({**body, "parameters": parameters}, b"", most_images=2)

    assert in_sequence(request(sequence_id=7), "7").options == {"end": False}
    assert in_sequence(request(sequence_id="v", sequence_end=True), "v").options == {"end": True}
    assert in_sequence(request(sequence_id=7, end=True), "7").options == {"end": True}  # our own option still works
    assert in_sequence(request(flip_test=True), "ts-seq-1").options == {"flip_test": True, "end": True}  # one frame
    assert in_sequence(request(flip_test=True), None).options == {"flip_test": True}
    with pytest.raises(RequestError, match="answers photos one by one"):
        in_sequence(request(sequence_start=True), None)
    two = read_v2_request(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["aGk="] * 2}]}, b"", most_images=2
    )
    with pytest.raises(RequestError, match="one per request"):
        in_sequence(two, "ts-seq-2")


def grpc_request(photos: list[bytes], **kwargs) -> bytes:
    """tritonclient.grpc's ModelInferRequest for the photos (raw_input_contents, as it sends them), as bytes."""
    image = tritonclient.grpc.InferInput("image", [len(photos)], "BYTES")
    image.set_data_from_numpy(np.array(photos, dtype=np.object_))
    arguments = {"model_version": "", "request_id": "", "outputs": None, "sequence_id": 0, "sequence_start": False}
    arguments |= {"sequence_end": False, "priority": 0, "timeout": None, "parameters": None} | kwargs
    return _get_inference_request("pose", [image], **arguments).SerializeToString()


def test_tritonclient_s_grpc_requests_read_as_their_rest_form():
    outputs = [tritonclient.grpc.InferRequestedOutput("keypoints")]
    body = grpc_request(PHOTOS, request_id="g1", outputs=outputs, parameters={"flip_test": True, "max_people": 3})
    request = read_v2_request(*read_grpc_request(body), most_images=4)
    assert request.images == PHOTOS and request.id == "g1" and request.outputs == ("keypoints",)
    assert request.options == {"flip_test": True, "max_people": 3}
    framed = read_v2_request(*read_grpc_request(grpc_request(PHOTOS[:1], sequence_id=7, sequence_end=True)), 4)
    assert framed.sequence and framed.sequence_end and framed.options == {}  # the sequence is the frontend's to route
    with pytest.raises(RequestError, match="at most 1 together"):
        read_v2_request(*read_grpc_request(body), most_images=1)
    with pytest.raises(RequestError, match="not a ModelInferRequest"):
        read_grpc_request(body[:-3])


def test_grpc_answers_read_back_by_tritonclient():
    answers = [Answer(json.dumps(a).encode(), "application/json") for a in PEOPLE_ANSWERS]
    request = V2Request("g2", PHOTOS + PHOTOS[:1], {}, False)
    response = service_pb2.ModelInferResponse.FromString(grpc_answer(request, "pose", "1", answers).body)
    result = tritonclient.grpc.InferResult(response)
    assert result.get_response().id == "g2" and result.get_response().model_version == "1"
    assert [json.loads(a) for a in result.as_numpy("answer")] == PEOPLE_ANSWERS
    people = [person for a in PEOPLE_ANSWERS for person in a["people"]]
    assert np.array_equal(result.as_numpy("keypoints"), np.array([p["keypoints"] for p in people], np.float32))
    assert result.as_numpy("people").tolist() == [2, 0, 1] and result.as_numpy("boxes").shape == (3, 4)
    assert result.get_output("answer").parameters["content_type"].string_param == "application/json"
    pictures = [Answer(b"\x89PNG one", "image/png"), Answer(b"\x89PNG two", "image/png")]
    response = service_pb2.ModelInferResponse.FromString(grpc_answer(request, "style", "1", pictures).body)
    assert [bytes(p) for p in tritonclient.grpc.InferResult(response).as_numpy("picture")] == [a.body for a in pictures]


def test_a_failed_photo_fails_its_grpc_call_with_its_status_and_message_alone():
    bad = error_answer(RequestError("the image cannot be decoded", "UndecodableImage"))
    answer = grpc_answer(V2Request(None, PHOTOS, {}, False), "m", "1", [JSON_ANSWERS[0], bad])
    assert answer.status == 400 and answer.body == b"photo 1 of 2: the image cannot be decoded"


def test_model_metadata_lists_the_image_input_and_the_family_s_outputs():
    response = service_pb2.ModelMetadataResponse.FromString(model_metadata("pose", "1.0", ("answer", "keypoints")).body)
    assert response.name == "pose" and list(response.versions) == ["1.0"]
    assert [(t.name, t.datatype, list(t.shape)) for t in response.inputs] == [("image", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
        ("answer", "BYTES", [-1]),
        ("keypoints", "FP32", [-1, -1, 3]),
    ]
    options = {"flip_test": {"default": False, "help": "h", "type": "boolean"}}
    weights = {"model": {"source": "random", "pretrained": False}}
    rest = json.loads(v2_metadata("pose", "1.0", ("answer",), options, "Top-down pose.", weights).body)
    assert rest["outputs"] == [{"name": "answer", "datatype": "BYTES", "shape": [-1]}]
    assert rest["parameters"] == options
    assert rest["description"] == "Top-down pose." and rest["weights"] == weights
