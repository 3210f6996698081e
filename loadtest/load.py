"""The one closed-loop load generator of the benchmarks and the soak (Locust stays for user-facing load tests).

``clients`` threads each take turns back to back: a turn sends one request (REST over a keep-alive ``http.client``
connection, or gRPC through ``humanserve_client.GrpcClient``) or one whole sequence of frames (a gRPC stream), and
records each answer: when it ended, how long it took, what was wrong with it (None when right) and the batch it was
served in. Windows of the run are read while it goes on (``ClosedLoop.window``), so a caller can sample the server's
CPU and memory around exactly the answers it counts.

Threads for now, though asyncio measured cheaper (docs/benchmarks.md, "The load generator": 0.19 against 0.08 client
CPU ms per request on the empty handler, ``python -m loadtest.bench_generator``), a third of what TorchServe alone
costs per request: gRPC goes through the synchronous ``GrpcClient``, and moving to asyncio is the open follow-up.
"""

import http.client
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from humanserve_client import GrpcClient, HandlerError, ServerError

Check = Callable[[bytes], str | None]  # what is wrong with a 200's body, or None


@dataclass(frozen=True)
class Request:
    """What one REST or gRPC request carries: the body (an image, or JSON), its content type, options as text."""

    body: bytes
    content_type: str = "image/jpeg"
    options: Mapping[str, str] = field(default_factory=dict)
    check: Check | None = None


@dataclass(frozen=True)
class Outcome:
    """One answer: its end (``time.time()``), its seconds, what was wrong (None: right), the batch it was served in."""

    end: float
    seconds: float
    failure: str | None = None
    batch_size: int | None = None


Turn = Callable[[], Iterable[Outcome]]  # one request, or one sequence of them, and the answers' outcomes


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100, linear between samples); NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


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


def rest_turns(url: str, token: str | None, requests: Sequence[Request], clients: int) -> list[Turn]:
    """``clients`` REST clients, each on its own keep-alive connection, sending ``requests`` in turn (client i from
    the i-th on)."""
    parsed = urlparse(url)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    prepared = [
        (
            request,
            {
                "Content-Type": request.content_type,
                **{f"X-Option-{name.replace('_', '-')}": value for name, value in request.options.items()},
                **auth,
            },
        )
        for request in requests
    ]

    def client(index: int) -> Turn:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
        sent = iter(range(index, 1 << 62))

        def turn() -> Iterator[Outcome]:
            request, headers = prepared[next(sent) % len(prepared)]
            start = time.perf_counter()
            connection.request("POST", parsed.path, body=request.body, headers=headers)
            response = connection.getresponse()
            body = response.read()
            seconds = time.perf_counter() - start
            if response.status != 200:
                failure = f"{response.status}: {body[:200]!r}"
            else:
                failure = request.check(body) if request.check else None
            batch = response.getheader("X-Batch-Size")
            yield Outcome(time.time(), seconds, failure, int(batch) if batch else None)

        turn.close = connection.close
        return turn

    return [client(index) for index in range(clients)]


def grpc_turns(target: str, token: str | None, model: str, requests: Sequence[Request], clients: int) -> list[Turn]:
    """``clients`` gRPC clients (a channel each) calling ``model`` with ``requests`` in turn."""

    def client(index: int) -> Turn:
        remote = GrpcClient(target, token=token, retries=0, timeout_s=600)
        sent = iter(range(index, 1 << 62))

        def turn() -> Iterator[Outcome]:
            request = requests[next(sent) % len(requests)]
            start = time.perf_counter()
            try:
                answer = remote.predict(model, request.body, request.options)
                failure = request.check(answer.body) if request.check else None
            except ServerError as error:
                failure = f"{error.code}: {error}"
            yield Outcome(time.time(), time.perf_counter() - start, failure)

        turn.close = remote.close
        return turn

    return [client(index) for index in range(clients)]


def grpc_sequence_turns(target: str, model: str, frames: Sequence[bytes], length: int, clients: int) -> list[Turn]:
    """``clients`` gRPC clients each streaming sequences of ``length`` frames (``frames`` in turn), one frame in
    flight: an outcome per frame, its latency from the previous answer (or the stream's start)."""

    def client() -> Turn:
        remote = GrpcClient(target, stream_window=1, retries=0)

        def turn() -> Iterator[Outcome]:
            start = time.perf_counter()
            for answer in remote.stream(model, ((frames[n % len(frames)], {}) for n in range(length))):
                now = time.perf_counter()
                yield Outcome(time.time(), now - start, str(answer) if isinstance(answer, HandlerError) else None)
                start = now

        turn.close = remote.close
        return turn

    return [client() for _ in range(clients)]
