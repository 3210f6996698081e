"""gRPC and the Python client against a real TorchServe: both protocols answer every model the same way."""

import json
import random
from pathlib import Path

import grpc
import pytest
from skimage import data

from export.registry import RECIPES
from humanserve_client import HandlerError, RestClient, ServerError
from humanserve_client.client import encode_option, error_in_body, grpc_error
from loadtest.photos import Photo, encoded
from loadtest.scenarios import scenario_for
from runtime.torchserve import TorchServe
from tests.conftest import ORACLES, REAL_MODELS, export_random, server_overrides
from tests.fixtures.serving import clients, encode, run_cli

# The session's server holds one real model per handler; the rest of the zoo shares those
# handlers with other weights and depths, and gets a server of its own here.
REST_OF_ZOO = [name for name in RECIPES if name not in REAL_MODELS]
MODELS = ORACLES + REAL_MODELS + REST_OF_ZOO
# TorchServe 0.12 answers a sequence-batching model only inside a sequence (a unary gRPC call waits forever).
SEQUENCE_MODELS = {"tracker_oracle"} | {name for name, recipe in RECIPES.items() if recipe.serving.sequences}


def ask(client, model: str, image: bytes, options: dict):
    """One answer, or raise its error; a sequence model's as a one-frame sequence of its own."""
    if model not in SEQUENCE_MODELS:
        return client.predict(model, image, options)
    answer = next(client.stream(model, [(image, options)]))
    if isinstance(answer, ServerError):
        raise answer
    return answer


def comparable(model: str, body: bytes) -> object:
    """An answer's bytes, less what differs between two sequences (their IDs)."""
    if model not in SEQUENCE_MODELS:
        return body
    answer = json.loads(body)
    return {key: value for key, value in answer.items() if key != "sequence_id"}


@pytest.fixture(scope="module")
def both(server):
    rest, remote = clients(server)
    yield rest, remote
    rest.close()
    remote.close()


@pytest.fixture(scope="module")
def rest_of_zoo(tmp_path_factory):
    store = tmp_path_factory.mktemp("rest_of_zoo_store")
    export_random(REST_OF_ZOO, store)
    with TorchServe(
        tmp_path_factory.mktemp("rest_of_zoo"), REST_OF_ZOO, store, overrides=server_overrides(store)
    ).running(timeout=600) as instance:
        rest, remote = clients(instance)
        yield rest, remote
        rest.close()
        remote.close()


@pytest.fixture
def protocols(request, model):
    """A REST and a gRPC client of the server that holds ``model``."""
    return request.getfixturevalue("rest_of_zoo" if model in REST_OF_ZOO else "both")


@pytest.fixture(scope="module")
def photo():
    return encoded(data.astronaut(), 480, 640)


@pytest.mark.parametrize("model", MODELS)
def test_grpc_answers_byte_for_byte_as_rest(protocols, photo, model):
    rest, remote = protocols
    scenario = scenario_for(model)
    # The load test's options for this model, drawn once: the same request on both protocols.
    options = scenario.options(Photo("astronaut", photo, 480, 640), random.Random(7))
    over_rest = ask(rest, model, photo, options)
    over_grpc = ask(remote, model, photo, options)
    assert comparable(model, over_grpc.body) == comparable(model, over_rest.body)
    assert over_grpc.content_type == over_rest.content_type
    assert scenario.check(Photo("astronaut", photo, 480, 640), options, over_grpc) is None


@pytest.mark.parametrize("model", MODELS)
def test_an_error_is_the_same_error_on_both_protocols(protocols, photo, model):
    rest, remote = protocols
    for image, options in ((b"GIF89a is not served", {}), (photo, {"no_such_option": "1"})):
        raised = []
        for client in (rest, remote):
            with pytest.raises(ServerError) as caught:
                ask(client, model, image, options)
            raised.append(caught.value.as_dict())
        assert raised[0] == raised[1]
        assert raised[0]["code"] in (400, 415)


def test_whole_request_failures_are_the_same_error_on_both_protocols(both, photo):
    rest, remote = both
    errors = []
    for client in (rest, remote):
        with pytest.raises(ServerError) as caught:
            client.predict("no_such_model", photo)
        errors.append(caught.value.as_dict())
    assert (
        errors[0]
        == errors[1]
        == {"code": 404, "type": "ModelNotFoundException", "message": "Model not found: no_such_model"}
    )


def test_a_background_image_travels_as_bytes_over_grpc(both, photo):
    rest, remote = both
    beach = encode(data.coffee(), "PNG")
    options = {"background": beach, "format": "png"}
    assert (
        remote.predict("segmenter_oracle", photo, options).body == rest.predict("segmenter_oracle", photo, options).body
    )


@pytest.mark.parametrize("image_format", ["png", "webp", "jpeg"])
def test_grpc_answers_are_recognised_by_their_bytes_as_rest_labels_them(both, photo, image_format):
    rest, remote = both
    options = {"background": "#1e90ff", "format": image_format}
    over_rest, over_grpc = (client.predict("segmenter_oracle", photo, options) for client in (rest, remote))
    assert over_rest.content_type == over_grpc.content_type == f"image/{image_format}"


def test_management_and_health_on_both_protocols(both):
    rest, remote = both
    assert rest.health() == remote.health() == {"status": "Healthy"}
    assert sorted(m["modelName"] for m in remote.models()) == sorted(m["modelName"] for m in rest.models())
    assert set(ORACLES + REAL_MODELS) <= {m["modelName"] for m in rest.models()}
    described = remote.describe("pose_oracle")[0]
    assert described == rest.describe("pose_oracle")[0] | {"workers": described["workers"]}
    assert described["customizedMetadata"]  # the handler's own description came through


def test_client_helpers_recognise_errors_and_encode_options():
    assert error_in_body(b'{"code": 400, "type": "InvalidImage", "message": "no"}').code == 400
    assert error_in_body(b'{"code": 400, "type": "x", "message": "y", "people": []}') is None  # an answer, not an error
    assert error_in_body(b"\x89PNG...") is None
    assert [encode_option(v) for v in (True, 3, "blur", [[1, 2, 3, 4]], b"\x00")] == [
        b"true",
        b"3",
        b"blur",
        b"[[1, 2, 3, 4]]",
        b"\x00",
    ]


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize(
    ("code", "message", "exception", "status"),
    [
        (grpc.StatusCode.INTERNAL, "Model not found: m", "org.pytorch.serve.archive.model.ModelNotFoundException", 404),
        # A worker that died holding the request: REST says 507, gRPC RESOURCE_EXHAUSTED, as for a request too large.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Worker died.", "org.pytorch.serve.http.InternalServerException", 507),
    ],
)
def test_grpc_failures_that_name_torchserves_exception_become_the_errors_rest_gives(code, message, exception, status):
    # TorchServe puts the exception's class on the last line of the details.
    error = grpc_error(FakeRpcError(code, f"{message}\n{exception}"))
    assert (error.code, error.type, error.message) == (status, exception.rsplit(".", 1)[-1], message)


@pytest.mark.parametrize(
    ("code", "details", "status", "kind"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "Token Authorization failed.", 400, "InvalidKeyException"),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect", 503, "UNAVAILABLE"),
        (grpc.StatusCode.INTERNAL, "boom", 500, "INTERNAL"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max", 413, "RESOURCE_EXHAUSTED"),
    ],
)
def test_other_grpc_failures_become_the_errors_rest_gives(code, details, status, kind):
    error = grpc_error(FakeRpcError(code, details))
    assert (error.code, error.type, error.message) == (status, kind, details)


def test_only_busy_and_dead_workers_are_retried_with_bounded_jittered_backoff(monkeypatch):
    calls, sleeps = [], []
    monkeypatch.setattr("humanserve_client.client.time.sleep", sleeps.append)

    class Flaky(RestClient):
        def _health(self):
            calls.append(1)
            raise ServerError([503, 507, 400][min(len(calls) - 1, 2)], "Failure", "try later")

    with pytest.raises(ServerError) as caught:
        Flaky(retries=5, backoff_s=0.1).health()
    assert caught.value.code == 400 and len(calls) == 3  # the 503 and the 507 retried, the 400 raised at once
    assert 0.05 <= sleeps[0] <= 0.15 and 0.1 <= sleeps[1] <= 0.3  # doubling, with jitter

    calls.clear()
    sleeps.clear()

    class Dead(RestClient):
        def _health(self):
            calls.append(1)
            raise ServerError(507, "InternalServerException", "Worker died.")

    with pytest.raises(ServerError, match="Worker died"):
        Dead(retries=3, backoff_s=0.1).health()
    assert len(calls) == 4 and len(sleeps) == 3  # bounded: 3 retries, then the error

    calls.clear()

    class DiedBeforeStarting(RestClient):  # TorchServe's 500 for a request handed to a worker that died first
        def _health(self):
            calls.append(1)
            if len(calls) == 1:
                raise ServerError(500, "InternalServerException", "Worker died.")
            return {"status": "Healthy"}

    assert DiedBeforeStarting(retries=3, backoff_s=0).health() == {"status": "Healthy"} and len(calls) == 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Mixed images (JPEG and PNG, several sizes) and one file that is not an image."""
    path = tmp_path_factory.mktemp("photos")
    (path / "astronaut.jpg").write_bytes(encoded(data.astronaut(), 320, 240))
    (path / "camera.png").write_bytes(encode(data.camera(), "PNG"))
    (path / "portrait.jpg").write_bytes(encoded(data.astronaut(), 300, 500))
    (path / "notes.txt").write_text("not an image")
    return path


@pytest.mark.parametrize("protocol", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_cli_reports_a_bad_file_and_answers_the_rest(server, folder, tmp_path, protocol):
    done = run_cli(server, "predict", "pose_oracle", str(folder), "--concurrency", "3", *protocol)
    assert done.returncode == 1, done.stderr  # one failed
    lines = {Path(line["file"]).name: line for line in map(json.loads, done.stdout.splitlines())}
    assert sorted(lines) == ["astronaut.jpg", "camera.png", "notes.txt", "portrait.jpg"]
    assert lines["notes.txt"]["error"]["code"] == 400
    assert lines["portrait.jpg"]["answer"]["image"] == {"width": 300, "height": 500}
    assert len(lines["camera.png"]["answer"]["people"][0]["keypoints"]) == 17
    assert "3 of 4 answered, 1 failed" in done.stderr

    pictures = run_cli(
        server,
        "predict",
        "style_oracle",
        str(folder / "astronaut.jpg"),
        "-o",
        "max_side=160",
        "--out",
        str(tmp_path),
        *protocol,
    )
    assert pictures.returncode == 0, pictures.stderr
    saved = Path(json.loads(pictures.stdout)["saved"])
    assert saved.parent == tmp_path and saved.read_bytes()[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("protocol", [[], ["--grpc"]], ids=["rest", "grpc"])
def test_cli_models_and_health(server, protocol):
    health = run_cli(server, "health", *protocol)
    assert health.returncode == 0 and json.loads(health.stdout) == {"status": "Healthy"}
    described = run_cli(server, "models", "pose_oracle", *protocol)
    assert json.loads(described.stdout)[0]["modelName"] == "pose_oracle"
    unknown = run_cli(server, "models", "no_such_model", *protocol)
    assert unknown.returncode == 1 and json.loads(unknown.stderr)["error"]["code"] == 404


def test_torchserves_503_says_busy_or_no_worker_and_keeps_its_kind():
    from humanserve_client.client import explained

    said = 'Model "pose" has no worker to serve inference request. Please use scale workers API to add workers.'
    error = explained(HandlerError(503, "ServiceUnavailableException", said), "inference", None)
    assert isinstance(error, HandlerError) and error.code == 503
    assert (
        error.message.startswith("the model is busy (its job queue is full) or has no worker yet")
        and said in error.message
    )
    assert explained(ServerError(404, "ModelNotFoundException", "no"), "inference", None).message == "no"
