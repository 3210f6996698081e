"""The one closed-loop load generator of the benchmarks and the soak (Locust stays for user-facing load tests).

``clients`` threads each take turns back to back: a turn sends one request (REST over a keep-alive ``http.client``
connection, or gRPC through ``humanserve_client.GrpcClient``) or one whole sequence of frames, and records each answer:
when it ended, how long it took, its status, what was wrong with it (None when right), the batch it was served in and
the label of the clients that sent it (the model, in the soak). Windows of the run are read while it goes
on (``ClosedLoop.window``), so a caller can sample the server's CPU and memory around exactly the answers it counts.

Threads, chosen by measurement (docs/benchmarks.md, "The load generator", ``make bench-generator``): asyncio costs
less client CPU per request (0.08 against 0.19 ms on the empty handler), but both are a small share of what TorchServe
alone costs per request, and threads let gRPC go through the synchronous ``GrpcClient`` that users call, so a
benchmark measures the client path users take.
"""

import http.client
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import grpc
import numpy as np

from handlers.core.open_inference_pb2 import ModelInferRequest
from handlers.core.v2 import length_prefixed
from handlers.core.v2_grpc import INFER, METHOD_HEADER
from humanserve_client import Answer, GrpcClient, HandlerError, ServerError
from humanserve_client.client import SEQUENCE_HEADER, new_sequence_id

Check = Callable[[Answer], str | None]  # what is wrong with a 200's answer, or None


@dataclass(frozen=True)
class Request:
    """What one REST or gRPC request carries: the body (an image, or JSON), its content type, options as text, and
    any more headers it needs."""

    body: bytes
    content_type: str = "image/jpeg"
    options: Mapping[str, str] = field(default_factory=dict)
    check: Check | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def v2_request(photo: bytes, options: Mapping[str, str]) -> Request:
    """An Open Inference Protocol infer request as NVIDIA's tritonclient sends it by default: the photo as a BYTES
    input with the binary data extension, the options as parameters, binary outputs asked for (its own code builds
    the body; post it to ``/v2/models/{model}/infer``)."""
    import tritonclient.http as triton  # test-only (requirements-reference.txt), as the benchmarks are

    image = triton.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([photo], dtype=np.object_))
    body, json_size = triton.InferenceServerClient.generate_request_body([image], parameters=dict(options))
    return Request(body, "application/octet-stream", headers={"Inference-Header-Content-Length": str(json_size)})


def v2_grpc_request(model: str, photo: bytes, options: Mapping[str, str]) -> Request:
    """An Open Inference Protocol ``ModelInferRequest``'s bytes as tritonclient.grpc sends it: the photo as a BYTES
    input in ``raw_input_contents``, the options as string parameters (call ``v2_grpc_turns`` with it)."""
    message = ModelInferRequest(model_name=model, raw_input_contents=[length_prefixed([photo])])
    message.inputs.add(name="image", datatype="BYTES", shape=[1])
    for name, value in options.items():
        message.parameters[name].string_param = value
    # The header is what the frontend agent adds to the call it hands the worker (for the in-process breakdown).
    return Request(message.SerializeToString(), "application/x-protobuf", headers={METHOD_HEADER: INFER})


@dataclass(frozen=True)
class Outcome:
    """One answer: its end (``time.time()``), its seconds, what was wrong (None: right), its status (200 for a wrong
    answer too), the batch it was served in, and its clients' label."""

    end: float
    seconds: float
    failure: str | None = None
    status: int = 200
    batch_size: int | None = None
    label: str = ""

    @property
    def outcome(self) -> str:
        """``ok``, the status of a refusal, or ``wrong`` (a 200 whose answer failed its check)."""
        return "ok" if self.failure is None else "wrong" if self.status == 200 else str(self.status)


Turn = Callable[[], Iterable[Outcome]]  # one request, or one sequence of them, and the answers' outcomes


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100, linear between samples); NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m`` or ``1h`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


@dataclass(frozen=True)
class Window:
    """The answers that ended within ``seconds`` of a run."""

    outcomes: list[Outcome]
    seconds: float

    @property
    def answered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failure is None]

    @property
    def failures(self) -> list[str]:
        return [o.failure for o in self.outcomes if o.failure is not None]

    @property
    def per_s(self) -> float:
        """Right answers per second."""
        return len(self.answered) / self.seconds if self.seconds else 0.0

    def ms(self, q: float) -> float:
        """The ``q``-th percentile of the right answers' latency, in ms."""
        return percentile([o.seconds for o in self.answered], q) * 1000

    def mean_batch(self) -> float | None:
        sizes = [o.batch_size for o in self.outcomes if o.batch_size]
        return sum(sizes) / len(sizes) if sizes else None


class ClosedLoop:
    """``turns[i]`` run back to back on thread i from ``__enter__`` until ``__exit__`` (or ``turns_each`` turns)."""

    def __init__(self, turns: Sequence[Turn], turns_each: int | None = None):
        self.outcomes: list[Outcome] = []
        self.errors: list[BaseException] = []
        self._turns_each = turns_each
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(turn,), daemon=True) for turn in turns]

    def __enter__(self) -> "ClosedLoop":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def join(self) -> None:
        """Until every client has taken its ``turns_each`` turns (or failed)."""
        for thread in self._threads:
            thread.join()

    def _client(self, turn: Turn) -> None:
        taken = 0
        try:
            while not self._stop.is_set() and (self._turns_each is None or taken < self._turns_each):
                for outcome in turn():
                    with self._lock:
                        self.outcomes.append(outcome)
                taken += 1
        except BaseException as error:  # a client that cannot go on (server gone) is reported by check()
            self.errors.append(error)
        finally:
            getattr(turn, "close", lambda: None)()  # the client's connection or channel

    def since(self, start: float, end: float | None = None) -> Window:
        """The answers that ended between ``start`` and ``end`` (``time.time()``; default: now)."""
        end = time.time() if end is None else end
        with self._lock:
            outcomes = [o for o in self.outcomes if start <= o.end <= end]
        return Window(outcomes, end - start)

    def window(self, seconds: float) -> Window:
        """Wait ``seconds`` and return the answers that ended meanwhile."""
        start = time.time()
        self._stop.wait(seconds)
        return self.since(start)

    def check(self) -> None:
        """Raise the first error that stopped a client."""
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} load clients stopped: {self.errors[0]!r}") from self.errors[0]


def run(turns: Sequence[Turn], warm_up_s: float, seconds: float) -> Window:
    """``turns`` in a closed loop: ``warm_up_s`` not counted, then a window of ``seconds``."""
    with ClosedLoop(turns) as loop:
        loop.window(warm_up_s)
        measured = loop.window(seconds)
    loop.check()
    return measured


def rest_turns(
    url: str, token: str | None, requests: Sequence[Request], clients: int, label: str = "", sequence_length: int = 0
) -> list[Turn]:
    """``clients`` REST clients, each on its own keep-alive connection, sending ``requests`` in turn (client i from
    the i-th on). ``sequence_length`` > 0: a turn is one sequence of that many frames, the requests in order from the
    first (a video), in our client's ``X-Sequence-Id``, one in flight, the last ending it (``end=true``)."""
    parsed = urlparse(url)
    auth = {"Authorization": f"Bearer {token}"} if token else {}

    def client(index: int) -> Turn:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
        sent = iter(range(index, 1 << 62))

        def send(request: Request, extra: Mapping[str, str]) -> Outcome:
            headers = {
                "Content-Type": request.content_type,
                **{f"X-Option-{name.replace('_', '-')}": value for name, value in request.options.items()},
                **request.headers,
                **auth,
                **extra,
            }
            start = time.perf_counter()
            connection.request("POST", parsed.path, body=request.body, headers=headers)
            response = connection.getresponse()
            answer = Answer(response.read(), (response.getheader("Content-Type") or "").split(";")[0])
            seconds = time.perf_counter() - start
            if response.status != 200:
                failure = f"{response.status}: {answer.body[:200]!r}"
            else:
                failure = request.check(answer) if request.check else None
            batch = response.getheader("X-Batch-Size")
            return Outcome(time.time(), seconds, failure, response.status, int(batch) if batch else None, label)

        def turn() -> Iterator[Outcome]:
            if not sequence_length:
                yield send(requests[next(sent) % len(requests)], {})
                return
            sequence = {SEQUENCE_HEADER: new_sequence_id()}
            for frame in range(sequence_length):
                end = {"X-Option-End": "true"} if frame == sequence_length - 1 else {}
                yield send(requests[frame % len(requests)], {**sequence, **end})

        turn.close = connection.close
        return turn

    return [client(index) for index in range(clients)]


def v2_grpc_turns(target: str, token: str | None, requests: Sequence[Request], clients: int) -> list[Turn]:
    """``clients`` gRPC clients (a channel each) calling the Open Inference Protocol's ``ModelInfer`` with ``requests``
    (``v2_grpc_request``'s) in turn, the message's bytes sent as they are."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def client(index: int) -> Turn:
        channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)])
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        sent = iter(range(index, 1 << 62))

        def turn() -> Iterator[Outcome]:
            request, start = requests[next(sent) % len(requests)], time.perf_counter()
            try:
                infer(request.body, metadata=metadata, timeout=600)
                failure, status = None, 200
            except grpc.RpcError as error:
                failure, status = f"{error.code()}: {error.details()}", 500
            yield Outcome(time.time(), time.perf_counter() - start, failure, status)

        turn.close = channel.close
        return turn

    return [client(index) for index in range(clients)]


def grpc_turns(
    target: str,
    token: str | None,
    model: str,
    requests: Sequence[Request],
    clients: int,
    label: str = "",
    sequence_length: int = 0,
) -> list[Turn]:
    """``clients`` gRPC clients (a channel each) calling ``model`` with ``requests`` in turn (client i from the i-th
    on). ``sequence_length`` > 0: a turn is one stream of that many frames, the requests in order from the first (a
    video), one frame in flight; each frame's latency runs from the previous answer (or the stream's start)."""

    def client(index: int) -> Turn:
        remote = GrpcClient(target, token=token, retries=0, timeout_s=600, stream_window=1)
        sent = iter(range(index, 1 << 62))

        def outcome(request: Request, answer: Answer | ServerError | HandlerError, start: float) -> Outcome:
            if isinstance(answer, Answer):
                failure, status = (request.check(answer) if request.check else None), 200
            else:
                failure, status = f"{answer.code}: {answer}", answer.code
            return Outcome(time.time(), time.perf_counter() - start, failure, status, label=label)

        def turn() -> Iterator[Outcome]:
            if not sequence_length:
                request, start = requests[next(sent) % len(requests)], time.perf_counter()
                try:
                    answer = remote.predict(model, request.body, request.options)
                except ServerError as error:
                    answer = error
                yield outcome(request, answer, start)
                return
            frames = [requests[n % len(requests)] for n in range(sequence_length)]
            answered, start = 0, time.perf_counter()
            try:
                for request, answer in zip(frames, remote.stream(model, ((r.body, r.options) for r in frames))):
                    yield outcome(request, answer, start)
                    answered, start = answered + 1, time.perf_counter()
            except ServerError as error:  # the whole stream failed (a worker killed under it): its frames are lost
                for request in frames[answered:]:
                    yield outcome(request, error, start)

        turn.close = remote.close
        return turn

    return [client(index) for index in range(clients)]
