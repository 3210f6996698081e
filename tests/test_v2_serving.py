"""The Open Inference Protocol (KServe v2) over REST and gRPC, against a real TorchServe with the oracle models: called
by tritonclient (NVIDIA's own client, both protocols), by plain JSON as curl sends it and by the protocol's messages as
other gRPC clients send them, answering what ``/predictions`` answers."""

import base64
import json
from urllib.parse import urlsplit

import grpc
import numpy as np
import pytest
import tritonclient.grpc
import tritonclient.http
from skimage import data
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from handlers.core.open_inference_pb2 import InferTensorContents, ModelInferRequest, ModelInferResponse
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
    ("tracker_oracle", PEOPLE, {}),
    ("segmenter_oracle", PEOPLE, {}),
    ("segmenter_oracle", PEOPLE, {"format": "png", "background": "transparent"}),
    ("face_oracle", FACES, {"second_opinion": True}),
    ("smart_filter_oracle", FACES, {}),
    ("style_oracle", ASTRONAUT, {"max_side": 256}),
    ("cyclegan_oracle", ASTRONAUT, {}),
    ("pix2pix_oracle", ASTRONAUT, {}),
]


PROTOCOLS = {"http": tritonclient.http, "grpc": tritonclient.grpc}
# The gRPC status of our HTTP statuses (TorchServe's mapping, GRPCUtils.getGRPCStatusCode).
GRPC_STATUS = {400: "StatusCode.INVALID_ARGUMENT", 415: "StatusCode.FAILED_PRECONDITION", 404: "StatusCode.NOT_FOUND"}


def connect(server, protocol: str):
    """A tritonclient of ``protocol`` for the server: its module and the client."""
    if protocol == "http":
        return tritonclient.http, tritonclient.http.InferenceServerClient(
            urlsplit(server.inference_url).netloc, network_timeout=300
        )
    return tritonclient.grpc, tritonclient.grpc.InferenceServerClient(server.grpc_target)


@pytest.fixture(scope="module", params=list(PROTOCOLS))
def triton_client(request, server):
    _, client = connect(server, request.param)
    yield client
    client.close()


def triton(client):
    """The tritonclient module of ``client``'s protocol."""
    return tritonclient.http if isinstance(client, tritonclient.http.InferenceServerClient) else tritonclient.grpc


def photos_input(client, photos: list[bytes], binary: bool = True):
    """The photos as a tritonclient user sends them: bytes (raw over gRPC, the binary extension over REST), or base64
    text in JSON."""
    tensor = triton(client).InferInput("image", [len(photos)], "BYTES")
    elements = np.array(photos if binary else [base64.b64encode(photo) for photo in photos], dtype=np.object_)
    if triton(client) is tritonclient.http:
        tensor.set_data_from_numpy(elements, binary_data=binary)
    else:
        tensor.set_data_from_numpy(elements)
    return tensor


def response(result) -> dict:
    """A result's response as JSON, from either protocol."""
    return (
        result.get_response(as_json=True)
        if isinstance(result, tritonclient.grpc.InferResult)
        else result.get_response()
    )


def as_predicted(server, http, model: str, photo: bytes, options: dict):
    """``/predictions``' answer: parsed JSON, or the picture's bytes."""
    response = post(server, http, model, photo, "multipart", options)
    assert response.status_code == 200, response.text
    if response.headers["Content-Type"].startswith("application/json"):
        return response.json()
    return response.content


def model_metadata(client, model: str) -> dict:
    if triton(client) is tritonclient.grpc:
        return client.get_model_metadata(model, as_json=True)
    return client.get_model_metadata(model)


def v2_answers(result) -> list:
    """A v2 result's answers, parsed as ``as_predicted`` parses them."""
    names = [output["name"] for output in response(result)["outputs"]]
    if "picture" in names:
        return [bytes(e) for e in result.as_numpy("picture")]
    return [json.loads(e) for e in result.as_numpy("answer")]


@pytest.mark.parametrize("model, photo, options", FAMILIES, ids=[f"{m}{o}" for m, _, o in FAMILIES])
def test_every_family_answers_tritonclient_as_it_answers_predictions(
    server, http, triton_client, model, photo, options
):
    result = triton_client.infer(model, [photos_input(triton_client, [photo])], request_id="one", parameters=options)
    assert response(result)["id"] == "one" and response(result)["model_name"] == model
    answers, predicted = v2_answers(result), as_predicted(server, http, model, photo, options)
    if model == "tracker_oracle":  # each a one-frame sequence of its own (test_sequences_serving: named ones)
        answers, predicted = [{**answers[0], "sequence_id": None}], {**predicted, "sequence_id": None}
    assert answers == [predicted]
    # What the model metadata lists covers what it answers (and over REST, the options it took).
    metadata = model_metadata(triton_client, model)
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [("image", "BYTES")]
    listed = {output["name"] for output in metadata["outputs"]}
    assert {output["name"] for output in response(result)["outputs"]} <= listed, metadata
    if triton(triton_client) is tritonclient.http:
        assert set(options) <= set(metadata["parameters"]), metadata


def test_several_photos_in_one_request_are_answered_together_in_order(server, http, triton_client):
    photos = [PEOPLE, encode(paint_people(97, 131, [[10, 20, 80, 120]], seed=4).image, "JPEG"), SMALL_JPEG]
    for model in ("pose_oracle", "segmenter_oracle"):
        result = triton_client.infer(model, [photos_input(triton_client, photos)])
        assert v2_answers(result) == [as_predicted(server, http, model, photo, {}) for photo in photos]


def test_typed_tensors_hold_what_the_json_answers_say(server, http, triton_client):
    photos = [PEOPLE, encode(paint_people(97, 131, [[10, 20, 80, 120]], seed=4).image, "PNG")]
    result = triton_client.infer("pose_oracle", [photos_input(triton_client, photos)])
    people = [person for answer in v2_answers(result) for person in answer["people"]]
    assert result.as_numpy("people").tolist() == [1, 1]
    assert np.allclose(result.as_numpy("keypoints"), [p["keypoints"] for p in people])
    assert np.allclose(result.as_numpy("boxes"), [p["box"] for p in people])
    framed = Photo("keypoints", 500, 700, [[100, 80, 400, 640]]).paint(seed=9)  # as the keypoint oracle finds people
    viewed = triton_client.infer("keypoint_oracle", [photos_input(triton_client, [encode(framed.image, "PNG")])])
    (answer,) = v2_answers(viewed)
    assert answer["people"] and [v.decode() for v in viewed.as_numpy("views")] == [
        p["view"] for p in answer["people"]
    ], answer
    faces = triton_client.infer("face_oracle", [photos_input(triton_client, [FACES])])
    (answer,) = v2_answers(faces)
    assert np.allclose(faces.as_numpy("landmarks"), [face["landmarks"] for face in answer["faces"]])
    wanted = [triton(triton_client).InferRequestedOutput(name) for name in ("masks", "mask_sizes")]
    masks = triton_client.infer("segmenter_oracle", [photos_input(triton_client, [PEOPLE])], outputs=wanted)
    expected = as_predicted(server, http, "segmenter_oracle", PEOPLE, {})["mask"]
    assert [m.decode() for m in masks.as_numpy("masks")] == [expected["counts"]]
    assert masks.as_numpy("mask_sizes").tolist() == [expected["size"]]
    assert [o["name"] for o in response(masks)["outputs"]] == ["masks", "mask_sizes"]


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


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_bad_requests_get_v2_errors_and_their_batch_mates_are_answered(server, http, protocol):
    model = "pose_oracle"
    pids = server.worker_pids(model)
    expected = as_predicted(server, http, model, PEOPLE, {})

    def send(job):
        # a client each: tritonclient's HTTP client (gevent inside) is not to be shared between threads
        _, client = connect(server, protocol)
        try:
            if job is None:
                return v2_answers(client.infer(model, [photos_input(client, [PEOPLE])]))
            _, photos, options, _, _ = job
            client.infer(model, [photos_input(client, photos)], parameters=options)
        except InferenceServerException as error:
            return error
        finally:
            client.close()
        return None

    results = send_together([None] * 4 + BAD_V2, send)
    assert results[:4] == [[expected]] * 4
    for (name, _, _, status, fragment), error in zip(BAD_V2, results[4:]):
        assert isinstance(error, InferenceServerException), name
        wanted = str(status) if protocol == "http" else GRPC_STATUS[status]
        assert error.status() == wanted and fragment in error.message(), (name, error)
    missing_image = {"inputs": [{"name": "photo", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    response = http.post(f"{server.inference_url}/v2/models/{model}/infer", json=missing_image, timeout=300)
    assert response.status_code == 400 and "must be BYTES" in response.json()["error"]
    assert server.worker_pids(model) == pids  # no worker died


def test_health_readiness_and_metadata_follow_the_protocol(server, http, triton_client):
    grpc_client = triton(triton_client) is tritonclient.grpc
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("pose_oracle")
    if grpc_client:
        with pytest.raises(InferenceServerException) as unknown:
            triton_client.is_model_ready("no_such_model")
        assert unknown.value.status() == "StatusCode.NOT_FOUND"
    else:
        assert not triton_client.is_model_ready("no_such_model")
    with pytest.raises(InferenceServerException) as unknown:
        model_metadata(triton_client, "no_such_model")
    assert unknown.value.status() in ("StatusCode.NOT_FOUND", "404") and "no_such_model" in unknown.value.message()
    metadata = triton_client.get_server_metadata(as_json=True) if grpc_client else triton_client.get_server_metadata()
    assert metadata["name"] == "torchserve" and "binary_tensor_data" in metadata["extensions"], metadata
    pictures = model_metadata(triton_client, "style_oracle")
    assert [o["name"] for o in pictures["outputs"]] == ["picture"] and pictures["name"] == "style_oracle"
    # Versions named in the path, and curl's view of the routes.
    versioned = http.get(f"{server.inference_url}/v2/models/pose_oracle/versions/1.0", timeout=60)
    assert versioned.status_code == 200 and versioned.json()["versions"] == ["1.0"], versioned.text
    assert http.get(f"{server.inference_url}/v2/models/pose_oracle/versions/1.0/ready", timeout=60).json()["ready"]
    assert http.get(f"{server.inference_url}/v2/health/ready", timeout=60).status_code == 200
    assert http.post(f"{server.inference_url}/v2/models/pose_oracle", timeout=60).status_code == 404


def test_rest_metadata_says_what_a_model_does_its_weights_and_each_options_form(server, http):
    """What the playground builds its model list and forms from."""
    metadata = http.get(f"{server.inference_url}/v2/models/pose_oracle", timeout=60).json()
    assert metadata["description"].startswith("SimpleBaseline top-down pose"), metadata
    assert metadata["weights"]["model"]["source"] == "oracle"
    options = metadata["parameters"]
    assert options["flip_test"] == {"default": False, "help": options["flip_test"]["help"], "type": "boolean"}
    assert options["max_people"]["type"] == "integer" and options["max_people"]["minimum"] >= 1
    assert options["format"]["type"] == "string" and "json" in options["format"]["enum"]
    assert options["boxes"]["type"] == "array"
    segmenter = http.get(f"{server.inference_url}/v2/models/segmenter_oracle", timeout=60).json()
    assert segmenter["description"].startswith("Person segmentation")
    assert segmenter["parameters"]["threshold"] | {"help": ""} == {
        "default": 0.5,
        "help": "",
        "type": "number",
        "minimum": 0.01,
        "maximum": 0.99,
    }
    assert segmenter["parameters"]["background"]["type"] == "string"  # text: a word, a colour or a picture


def test_the_repository_index_lists_every_model_the_management_api_lists(server, http, triton_client):
    """Triton's repository index (tritonclient's call, and the playground's list): every version, READY as
    ``/ready`` says; ``{"ready": true}`` keeps only those."""
    registered = http.get(f"{server.management_url}/models?limit=1000", timeout=60).json()["models"]
    if triton(triton_client) is tritonclient.grpc:
        index = triton_client.get_model_repository_index(as_json=True)["models"]
    else:
        index = triton_client.get_model_repository_index()
    assert [model["name"] for model in index] == sorted(model["modelName"] for model in registered)
    assert {(model["name"], model["version"], model["state"]) for model in index} >= {("pose_oracle", "1.0", "READY")}
    assert all("reason" in model for model in index if model["state"] != "READY")
    ready = http.post(f"{server.inference_url}/v2/repository/index", json={"ready": True}, timeout=60)
    assert ready.status_code == 200 and ready.json() == [model for model in index if model["state"] == "READY"]
    assert http.get(f"{server.inference_url}/v2/repository/index", timeout=60).status_code == 404  # POST, as Triton


def test_a_model_without_workers_is_listed_unavailable_and_left_out_of_the_ready_list(server, http):
    model, index = "pix2pix_oracle", f"{server.inference_url}/v2/repository/index"
    scale = f"{server.management_url}/models/{model}"
    workers = http.get(scale, timeout=60).json()[0]
    assert http.put(scale, params={"min_worker": 0, "max_worker": 0, "synchronous": "true"}, timeout=120).ok
    try:
        listed = {entry["name"]: entry for entry in http.post(index, timeout=60).json()}
        assert listed[model] == {"name": model, "version": "1.0", "state": "UNAVAILABLE", "reason": "no worker up"}
        assert listed["pose_oracle"]["state"] == "READY" and "reason" not in listed["pose_oracle"]
        ready = [entry["name"] for entry in http.post(index, json={"ready": True}, timeout=60).json()]
        assert model not in ready and "pose_oracle" in ready
        with grpc.insecure_channel(server.grpc_target) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/RepositoryIndex")
            every = service_pb2.RepositoryIndexResponse.FromString(call(b"", timeout=60))
            only_ready = service_pb2.RepositoryIndexResponse.FromString(
                call(service_pb2.RepositoryIndexRequest(ready=True).SerializeToString(), timeout=60)
            )
        unavailable = next(entry for entry in every.models if entry.name == model)
        assert (unavailable.state, unavailable.reason) == ("UNAVAILABLE", "no worker up")
        assert [entry.name for entry in only_ready.models] == ready
        for body in ("ready", '{"ready": "yes"}', "[true]"):
            refused = http.post(index, data=body, timeout=60)
            assert refused.status_code == 400 and "ready" in refused.json()["error"], body
    finally:
        restored = {"min_worker": workers["minWorkers"], "max_worker": workers["maxWorkers"], "synchronous": "true"}
        assert http.put(scale, params=restored, timeout=300).ok


def model_infer(server, request: bytes, metadata=()) -> ModelInferResponse:
    """A ModelInfer call with the request message's bytes, as any gRPC client sends it."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        return ModelInferResponse.FromString(call(request, metadata=metadata, timeout=300))


def test_grpc_photos_in_contents_and_typed_parameters_as_other_clients_send_them(server, http):
    request = ModelInferRequest(model_name="face_oracle", id="contents")
    request.parameters["max_faces"].int64_param = 1
    request.parameters["second_opinion"].bool_param = True
    image = request.inputs.add(name="image", datatype="BYTES", shape=[2])
    image.contents.CopyFrom(InferTensorContents(bytes_contents=[FACES, FACES]))
    answer = model_infer(server, request.SerializeToString())
    assert answer.id == "contents" and answer.outputs[0].name == "answer" and list(answer.outputs[0].shape) == [2]
    expected = as_predicted(server, http, "face_oracle", FACES, {"max_faces": 1, "second_opinion": True})
    raw = answer.raw_output_contents[0]
    assert json.loads(raw[4 : 4 + int.from_bytes(raw[:4], "little")]) == expected


# Calls no tritonclient makes, each with one thing wrong: the gRPC status and a part of its description.
BAD_GRPC = [
    ("not a message", b"\xff\xff\xff", "StatusCode.INVALID_ARGUMENT", "not a ModelInferRequest"),
    ("no model named", ModelInferRequest(id="x").SerializeToString(), "StatusCode.INVALID_ARGUMENT", "names no model"),
    ("an unknown model", ModelInferRequest(model_name="no_such_model").SerializeToString(), "StatusCode.NOT_FOUND", ""),
    (
        "raw contents for no input",
        ModelInferRequest(model_name="pose_oracle", raw_input_contents=[PEOPLE]).SerializeToString(),
        "StatusCode.INVALID_ARGUMENT",
        "1 raw_input_contents for 0 inputs",
    ),
    (
        "numbers for a photo",
        ModelInferRequest(
            model_name="pose_oracle",
            inputs=[
                ModelInferRequest.InferInputTensor(
                    name="image", datatype="FP32", shape=[1], contents=InferTensorContents(fp32_contents=[1.0])
                )
            ],
        ).SerializeToString(),
        "StatusCode.INVALID_ARGUMENT",
        "must be BYTES",
    ),
]


@pytest.mark.parametrize("name, request_bytes, code, fragment", BAD_GRPC, ids=[b[0] for b in BAD_GRPC])
def test_malformed_grpc_calls_get_their_status_and_the_worker_stays(server, name, request_bytes, code, fragment):
    pids = server.worker_pids("pose_oracle")
    with pytest.raises(grpc.RpcError) as refused:
        model_infer(server, request_bytes)
    assert str(refused.value.code()) == code and fragment in refused.value.details(), refused.value
    assert server.worker_pids("pose_oracle") == pids
