"""Call humanserve's TorchServe over REST or gRPC: the same requests, answers and errors on both.

A request is one image and its options. Both protocols send them the same way, as named
parts (REST multipart fields, gRPC input-map entries: ``data`` is the image, every other
part an option), so the handler sees the same request and answers the same bytes.

Errors: the handler answers a bad request with a JSON body ``{"code", "type", "message"}``;
over REST it also sets the HTTP status, over gRPC TorchServe 0.12 answers it with status
OK (docs/architecture.md, One request's path). Failures of a whole request (unknown model, bad token, server
busy) come as HTTP statuses or gRPC status codes. All of them are raised as ``ServerError``
with the code and message REST would have given (``HandlerError`` for the handler's own).

Sequences (a video for ``pose_tracker``): ``stream`` sends frames in order under one
sequence ID, over REST one request at a time with the ``X-Sequence-Id`` header (a name
proxies pass), over gRPC on one ``StreamPredictions2`` stream, and yields each frame's
answer, or its ``HandlerError``, in order: a bad frame does not end the sequence. A
stream left early (a ``break``, Ctrl-C, an error) still ends its sequence on the server.
"""

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import requests
from google.protobuf import empty_pb2

from .protocol import inference_pb2, management_pb2
from .protocol.stub import ServiceStub

OptionValue = str | bytes | bool | int | float | list | dict
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
# Worth trying again: 503, the model's job queue is full or it has no worker (yet); 507, the worker
# died holding the request (TorchServe starts another, and the request waits for it in the queue).
# Every humanserve model answers a repeated request alike, except a sequence's frames, which are never retried.
RETRIED_CODES = frozenset({503, 507})
# TorchServe's words for a worker's death, whatever the code: 507 for the batch the worker held,
# 500 for a request it had already handed to a worker that died before starting on it.
WORKER_DIED = "Worker died."
UNREACHABLE = 503  # how a refused connection is reported: as busy, and retried
# A request's sequence, under a name proxies pass (TorchServe's own ts_request_sequence_id has an underscore,
# which Caddy and ingress-nginx drop); the frontend agent takes it, and the answer carries it back.
SEQUENCE_HEADER = "X-Sequence-Id"
# TorchServe's own name, sent beside it with the same ID: a TorchServe without the agent reads only this one.
TORCHSERVE_SEQUENCE_HEADER = "ts_request_sequence_id"
T = TypeVar("T")
Parts = dict[str, bytes]


class ServerError(Exception):
    """The server refused or failed a request: ``code`` as the HTTP status REST gives, ``type`` and ``message`` its
    words."""

    def __init__(self, code: int, type: str, message: str):
        super().__init__(f"{code} {type}: {message}")
        self.code, self.type, self.message = code, type, message

    def as_dict(self) -> dict[str, Any]:
        """The error as the server's JSON error body."""
        return {"code": self.code, "type": self.type, "message": self.message}


class HandlerError(ServerError):
    """The model's handler answered this one request with an error (a bad image or option); the server goes on."""


class AuthenticationError(ServerError):
    """TorchServe refused the key sent, or its absence (its 400 ``InvalidKeyException``); the message says which key and
    where it came from."""


def explained(error: ServerError, api: str, key_source: str | None) -> ServerError:
    """``error`` with words for what TorchServe's own messages leave unclear: a refused key, a 503."""
    if error.type == "InvalidKeyException":
        if key_source is None:
            hint = (
                f"the server needs its {api} key and none was sent: pass the token (humanserve --token or --key-file; "
                "TorchServe writes its keys to key_file.json where it runs, run/key_file.json with make serve)"
            )
        else:
            hint = (
                f"the server refused the {api} key from {key_source}: TorchServe makes new keys at every start and they "
                "expire (token_expiration_min), so read them again from the running server's key_file.json"
            )
        return AuthenticationError(error.code, error.type, f"{hint} ({error.message})")
    if error.code == 503 and error.type == "ServiceUnavailableException":
        return type(error)(
            503, error.type, f"the model is busy (its job queue is full) or has no worker yet ({error.message})"
        )
    return error


@dataclass(frozen=True)
class Answer:
    """One answer: its bytes and what they are (``application/json`` or an image type)."""

    body: bytes
    content_type: str

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")

    def json(self) -> Any:
        return json.loads(self.body)


def encode_option(value: OptionValue) -> bytes:
    """One option as the bytes of its part: text as is, booleans as true/false, lists and objects as JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, (list, dict)):
        return json.dumps(value).encode()
    return str(value).encode()


def sniff_content_type(body: bytes) -> str:
    """What an answer is, from its first bytes (gRPC carries no content type)."""
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":  # a RIFF container's size comes between the two
        return "image/webp"
    return next(
        (kind for signature, kind in IMAGE_SIGNATURES.items() if body.startswith(signature)), "application/json"
    )


def error_in_body(body: bytes) -> HandlerError | None:
    """The handler's per-request error, if ``body`` is one (how gRPC carries it)."""
    if not body.startswith(b"{"):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if isinstance(parsed, dict) and set(parsed) == {"code", "type", "message"} and isinstance(parsed["code"], int):
        return HandlerError(parsed["code"], str(parsed["type"]), str(parsed["message"]))
    return None


def new_sequence_id() -> str:
    """A sequence ID no other client will pick."""
    return f"hs-{uuid.uuid4().hex}"


def marked_last(frames: Iterable[Parts], end_option: str) -> Iterator[Parts]:
    """``frames`` with option ``end_option`` set to true on the last one (looked ahead by one)."""
    frames = iter(frames)
    current = next(frames, None)
    while current is not None:
        following = next(frames, None)
        yield current if following is not None else {**current, end_option: b"true"}
        current = following


class Client:
    """What both protocols offer; ``retries`` extra tries with exponential backoff and jitter, on 503 and 507 only.

    ``token``, ``management_token``: the keys of the inference and management APIs, sent as ``Bearer`` when given.
    ``key_source``: where the keys came from (a key file, a flag), named when the server refuses one.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        management_token: str | None = None,
        timeout_s: float = 120,
        retries: int = 3,
        backoff_s: float = 0.2,
        key_source: str | None = None,
    ):
        self.keys = {"inference": token, "management": management_token}
        self.timeout_s, self.retries, self.backoff_s, self.key_source = timeout_s, retries, backoff_s, key_source

    def predict(self, model: str, image: bytes, options: Mapping[str, OptionValue] = {}, version: str = "") -> Answer:
        """Run ``model`` on one image; raise ``ServerError`` if the server refuses or fails it."""
        parts = {"data": image, **{name: encode_option(value) for name, value in options.items()}}
        return self._with_retries(lambda: self._predict(model, version, parts))

    def stream(
        self,
        model: str,
        frames: Iterable[tuple[bytes, Mapping[str, OptionValue]]],
        sequence_id: str | None = None,
        end: bool = True,
        version: str = "",
    ) -> Iterator[Answer | HandlerError]:
        """Send ``(image, options)`` frames as one sequence, in order; yield each frame's answer or error, in order.

        ``sequence_id``: a new one when None (``Answer.json()["sequence_id"]`` tells it).
        ``end``: mark the last frame with the ``end`` option, so the server frees the
        sequence's state at once; if the caller stops before the last answer (``break``,
        Ctrl-C, an error), the last frame sent goes once more with ``end`` to close it.
        Failures of the whole stream raise ``ServerError``.
        """
        parts = (
            {"data": image, **{name: encode_option(value) for name, value in options.items()}}
            for image, options in frames
        )
        sequence_id = sequence_id or new_sequence_id()
        if not end:
            return self._stream(model, version, sequence_id, parts)
        return self._ended_stream(model, version, sequence_id, marked_last(parts, "end"))

    def _ended_stream(
        self, model: str, version: str, sequence_id: str, frames: Iterator[Parts]
    ) -> Iterator[Answer | HandlerError]:
        """``_stream`` of frames whose last is marked ``end``; left early, it ends the sequence with the last frame
        sent."""
        last: list[Parts] = []  # the last frame handed to the protocol (marked end when it is the video's last)
        sent = answered = 0

        def remembered() -> Iterator[Parts]:
            nonlocal sent
            for parts in frames:
                last[:] = [parts]
                sent += 1
                yield parts

        try:
            for answer in self._stream(model, version, sequence_id, remembered()):
                answered += 1
                yield answer
        finally:
            if last and not (answered == sent and last[0].get("end") == b"true"):
                try:
                    for _ in self._stream(model, version, sequence_id, iter([{**last[0], "end": b"true"}])):
                        pass
                except ServerError:
                    pass  # the server is gone or refuses: it closes the sequence once idle

    def models(self) -> list[dict[str, Any]]:
        """The registered models: name and archive of each."""
        return self._with_retries(self._models)

    def describe(self, model: str, version: str = "") -> list[dict[str, Any]]:
        """TorchServe's description of a model: workers, batching, and the handler's own metadata."""
        return self._with_retries(lambda: self._describe(model, version))

    def health(self) -> dict[str, Any]:
        """TorchServe's health answer, ``{"status": "Healthy"}`` when it serves."""
        return self._with_retries(self._health)

    def close(self) -> None:
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _with_retries(self, call: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except ServerError as error:
                if (error.code not in RETRIED_CODES and error.message != WORKER_DIED) or attempt == self.retries:
                    raise
            time.sleep(self.backoff_s * 2**attempt * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def _explained(self, error: ServerError, api: str) -> ServerError:
        return explained(error, api, (self.key_source or "the token given") if self.keys[api] else None)

    def _predict(self, model: str, version: str, parts: Parts) -> Answer:
        raise NotImplementedError

    def _stream(
        self, model: str, version: str, sequence_id: str, frames: Iterator[Parts]
    ) -> Iterator[Answer | HandlerError]:
        raise NotImplementedError

    def _models(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _describe(self, model: str, version: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _health(self) -> dict[str, Any]:
        raise NotImplementedError


class RestClient(Client):
    """TorchServe's REST APIs: inference (``url``, port 8080) and management (``management_url``, 8081)."""

    def __init__(
        self, url: str = "http://127.0.0.1:8080", management_url: str = "http://127.0.0.1:8081", **common: Any
    ):
        super().__init__(**common)
        self.url, self.management_url = url.rstrip("/"), management_url.rstrip("/")
        self.session = requests.Session()
        self.session.mount("http", requests.adapters.HTTPAdapter(pool_maxsize=64))

    def close(self) -> None:
        self.session.close()

    def _call(
        self, method: str, url: str, api: str, headers: Mapping[str, str] = {}, **kwargs: Any
    ) -> requests.Response:
        headers = {**headers, "Authorization": f"Bearer {self.keys[api]}"} if self.keys[api] else headers
        try:
            response = self.session.request(method, url, headers=headers, timeout=self.timeout_s, **kwargs)
        except requests.ConnectionError as error:
            raise ServerError(UNREACHABLE, "ConnectionError", f"cannot reach {url}: {error}") from None
        except requests.Timeout:
            raise ServerError(504, "Timeout", f"no answer from {url} within {self.timeout_s:g}s") from None
        if response.status_code >= 400:
            error = error_in_body(response.content) or ServerError(
                response.status_code, response.reason, response.text.strip()
            )
            raise self._explained(error, api)
        return response

    def _predict(self, model: str, version: str, parts: Parts, headers: Mapping[str, str] = {}) -> Answer:
        path = f"{self.url}/predictions/{model}" + (f"/{version}" if version else "")
        # Every part as a file part: TorchServe hands the handler its bytes, as gRPC does.
        response = self._call(
            "POST", path, "inference", headers, files={name: (name, value) for name, value in parts.items()}
        )
        return Answer(response.content, response.headers.get("Content-Type", "application/json").split(";")[0])

    def _stream(
        self, model: str, version: str, sequence_id: str, frames: Iterator[Parts]
    ) -> Iterator[Answer | HandlerError]:
        # One frame at a time: requests sent together could reach TorchServe out of order.
        for parts in frames:
            try:
                yield self._predict(
                    model, version, parts, {SEQUENCE_HEADER: sequence_id, TORCHSERVE_SEQUENCE_HEADER: sequence_id}
                )
            except HandlerError as error:
                yield error

    def _models(self) -> list[dict[str, Any]]:
        return self._call("GET", f"{self.management_url}/models?limit=1000", "management").json()["models"]

    def _describe(self, model: str, version: str) -> list[dict[str, Any]]:
        path = f"{self.management_url}/models/{model}" + (f"/{version}" if version else "")
        return self._call("GET", f"{path}?customized=true", "management").json()

    def _health(self) -> dict[str, Any]:
        return self._call("GET", f"{self.url}/ping", "inference").json()


# gRPC status codes as the HTTP status TorchServe's REST API gives for the same failure.
_GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.PERMISSION_DENIED: 400,  # TorchServe's token check; REST says 400 InvalidKeyException
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# TorchServe names its exception class on the last line of the details, and some codes
# (an unknown model comes as INTERNAL) only the class tells apart.
_EXCEPTION_TO_HTTP = {
    "ModelNotFoundException": 404,
    "ModelVersionNotFoundException": 404,
    "ServiceUnavailableException": 503,
}


def grpc_error(error: grpc.RpcError) -> ServerError:
    """A failed gRPC call as the ``ServerError`` REST would have raised."""
    code = error.code()
    lines = (error.details() or code.name).strip().splitlines()
    exception = lines[-1].rsplit(".", 1)[-1] if len(lines) > 1 and "Exception" in lines[-1] else None
    if code == grpc.StatusCode.PERMISSION_DENIED:
        exception = "InvalidKeyException"
    status = _EXCEPTION_TO_HTTP.get(exception) or _GRPC_TO_HTTP.get(code, 500)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and exception == "InternalServerException":
        status = (
            507  # "Worker died.": TorchServe turns REST's 507 into RESOURCE_EXHAUSTED, as it does a request too large
        )
    message = "\n".join(lines[:-1] if exception and len(lines) > 1 else lines)
    return ServerError(status, exception or code.name, message)


class GrpcClient(Client):
    """TorchServe's gRPC APIs: inference (``target``, port 7070) and management (``management_target``, 7071)."""

    def __init__(
        self,
        target: str = "127.0.0.1:7070",
        management_target: str = "127.0.0.1:7071",
        *,
        stream_window: int = 4,
        **common: Any,
    ):
        super().__init__(**common)
        # Frames of one stream in flight at once: under the model's maxSequenceJobQueueSize (8 for pose_tracker).
        self.stream_window = stream_window
        # Answers can be large pictures: lift gRPC's 4 MiB default to TorchServe's own limits.
        limits = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        self.channels = [
            grpc.insecure_channel(target, options=limits),
            grpc.insecure_channel(management_target, options=limits),
        ]
        self.inference = ServiceStub(
            self.channels[0], inference_pb2.DESCRIPTOR.services_by_name["InferenceAPIsService"]
        )
        self.management = ServiceStub(
            self.channels[1], management_pb2.DESCRIPTOR.services_by_name["ManagementAPIsService"]
        )
        self.metadata = {api: [("authorization", f"Bearer {key}")] if key else None for api, key in self.keys.items()}

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    def _call(self, method: Callable, request: Any, api: str) -> Any:
        try:
            return method(request, metadata=self.metadata[api], timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise self._explained(grpc_error(error), api) from None

    def _predict(self, model: str, version: str, parts: Parts) -> Answer:
        request = inference_pb2.PredictionsRequest(model_name=model, model_version=version, input=parts)
        body = self._call(self.inference.Predictions, request, "inference").prediction
        failure = error_in_body(body)
        if failure is not None:
            raise failure
        return Answer(body, sniff_content_type(body))

    def _stream(
        self, model: str, version: str, sequence_id: str, frames: Iterator[Parts]
    ) -> Iterator[Answer | HandlerError]:
        window = threading.Semaphore(self.stream_window)  # frames sent and not yet answered
        stopped = threading.Event()

        def requests_in_window() -> Iterator[Any]:  # gRPC pulls these on its own thread
            for parts in frames:
                window.acquire()
                if stopped.is_set():
                    return
                yield inference_pb2.PredictionsRequest(
                    model_name=model, model_version=version, input=parts, sequence_id=sequence_id
                )
            # TorchServe 0.12 without our frontend agent closes the answer stream as soon as the
            # request stream closes, dropping answers still on their way: close ours only once
            # every frame is answered, so that any TorchServe answers them all.
            for _ in range(self.stream_window):
                window.acquire()

        responses = self.inference.StreamPredictions2(requests_in_window(), metadata=self.metadata["inference"])
        try:
            for response in responses:
                window.release()
                yield error_in_body(response.prediction) or Answer(
                    response.prediction, sniff_content_type(response.prediction)
                )
        except grpc.RpcError as error:
            raise self._explained(grpc_error(error), "inference") from None
        finally:
            stopped.set()  # the caller stopped early, or the stream failed: let the sender go, end the call
            for _ in range(self.stream_window):
                window.release()
            responses.cancel()

    def _models(self) -> list[dict[str, Any]]:
        request = management_pb2.ListModelsRequest(limit=1000)
        return json.loads(self._call(self.management.ListModels, request, "management").msg)["models"]

    def _describe(self, model: str, version: str) -> list[dict[str, Any]]:
        request = management_pb2.DescribeModelRequest(model_name=model, model_version=version, customized=True)
        return json.loads(self._call(self.management.DescribeModel, request, "management").msg)

    def _health(self) -> dict[str, Any]:
        return json.loads(self._call(self.inference.Ping, empty_pb2.Empty(), "inference").health)
