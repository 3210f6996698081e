"""Locust users for humanserve: RestUser and GrpcUser send real photos to one model and check every answer.

    locust -f loadtest/locustfile.py RestUser --host http://127.0.0.1:8080 --model pose_resnet50
    locust -f loadtest/locustfile.py GrpcUser --grpc-target 127.0.0.1:7070 --model pose_resnet50

`make loadtest` runs them headless (loadtest/run.py). Users send back to back (no wait):
USERS is the number of requests in flight. ``--model a,b`` spreads each user class's users
over several models in turn (make soak); ``--request-log FILE`` writes a CSV line per request
(end time, model, protocol, milliseconds, outcome: ok, the status code, or ``wrong``). The key for token
authorization comes from
--token or HUMANSERVE_TOKEN. For a sequence model (pose_tracker) each task is one whole
sequence: the scenario's frames, one in flight at a time, the last one ending it; so
USERS is also the number of concurrent sequences. Each frame is one request in the report;
a sequence cut short by the end of the run is closed with one more frame, named "MODEL (closing)".
"""

import itertools
import json
import random
import time
from pathlib import Path
from typing import TextIO

import grpc.experimental.gevent
from locust import FastHttpUser, User, events, task

from humanserve_client import Answer, GrpcClient, ServerError
from humanserve_client.client import SEQUENCE_HEADER, new_sequence_id
from loadtest.photos import photo_pool
from loadtest.scenarios import scenario_for

grpc.experimental.gevent.init_gevent()  # gRPC's own threads would block Locust's greenlets
PHOTOS = photo_pool()
BATCH_SIZES: list[int] = []  # X-Batch-Size of every REST answer: how full the server's batches were
REQUEST_LOG: list[TextIO] = []  # the open --request-log file, if any


@events.init_command_line_parser.add_listener
def _arguments(parser):
    parser.add_argument(
        "--model",
        env_var="HUMANSERVE_MODEL",
        default="pose_resnet50",
        help="model to load; several: a,b,c (users spread over them)",
    )
    parser.add_argument("--token", env_var="HUMANSERVE_TOKEN", default="", help="inference API key")
    parser.add_argument(
        "--grpc-target", env_var="HUMANSERVE_GRPC_TARGET", default="127.0.0.1:7070", help="gRPC inference API"
    )
    parser.add_argument("--batch-report", default="", help="write the batch sizes seen (REST) to this JSON file")
    parser.add_argument("--plain", action="store_true", help="send no options: one image, one model input per request")
    parser.add_argument("--request-log", default="", help="append a CSV line per request to this file")


@events.test_start.add_listener
def _open_request_log(environment, **kwargs):
    path = environment.parsed_options.request_log
    if path and not REQUEST_LOG:
        REQUEST_LOG.append(open(path, "a", buffering=1))


@events.request.add_listener
def _log_request(request_type, name, response_time, exception, response=None, **kwargs):
    if REQUEST_LOG:
        REQUEST_LOG[0].write(
            f"{time.time():.3f},{name},{request_type},{response_time:.1f},{outcome(exception, response)}\n"
        )


def outcome(exception: BaseException | None, response) -> str:
    """What became of a request: ok, the HTTP status (gRPC failures as the status REST gives), or wrong (a 200 with a
    wrong answer)."""
    if exception is None:
        return "ok"
    if isinstance(exception, ServerError):
        return str(exception.code)
    status = getattr(response, "status_code", 200)
    return "wrong" if status == 200 else str(status)


@events.quitting.add_listener
def _write_batch_report(environment, **kwargs):
    path = environment.parsed_options.batch_report
    if path and BATCH_SIZES:
        report = {
            "answers": len(BATCH_SIZES),
            "mean_batch_size": sum(BATCH_SIZES) / len(BATCH_SIZES),
            "max_batch_size": max(BATCH_SIZES),
        }
        Path(path).write_text(json.dumps(report))


class ModelUser:
    """What both users share: the model's scenario and a random photo per request.

    Each user class counts its own users (``turns``), so each class's users take the models named in turn.
    """

    def setup_model(self) -> None:
        options = self.environment.parsed_options
        models = options.model.split(",")
        self.model, self.token = models[next(type(self).turns) % len(models)], options.token
        self.scenario = scenario_for(self.model)
        self.rng = random.Random()

    def draw(self):
        photo = self.rng.choice(PHOTOS)
        return photo, {} if self.environment.parsed_options.plain else self.scenario.options(photo, self.rng)


class RestUser(FastHttpUser, ModelUser):
    """POST /predictions/MODEL with the JPEG as the body and options as X-Option-* headers."""

    turns = itertools.count()

    concurrency = 1
    network_timeout = connection_timeout = 300.0

    def on_start(self):
        self.setup_model()

    @task
    def predict(self):
        photo, options = self.draw()
        if not self.scenario.sequence_length:
            self.send(photo, options, {})
            return
        sequence = {SEQUENCE_HEADER: new_sequence_id()}
        ended = False
        try:
            for frame in range(self.scenario.sequence_length):
                last = frame == self.scenario.sequence_length - 1
                self.send(photo, {**options, "end": "true"} if last else options, sequence)
                ended = last
        finally:
            if not ended:  # the run stopped mid-sequence: close it rather than leave it open until it idles out
                self.send(photo, {**options, "end": "true"}, sequence, label=f"{self.model} (closing)")

    def send(self, photo, options, headers, label=None):
        headers = {
            "Content-Type": "image/jpeg",
            **headers,
            **{f"X-Option-{name.replace('_', '-')}": value for name, value in options.items()},
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        with self.client.post(
            f"/predictions/{self.model}",
            data=photo.data,
            headers=headers,
            name=label or self.model,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                return
            answer = Answer(response.content, (response.headers.get("Content-Type") or "").split(";")[0])
            problem = self.scenario.check(photo, options, answer)
            if problem:
                response.failure(f"wrong answer for {photo.name}: {problem}")
            batch = response.headers.get("X-Batch-Size")
            if batch:
                BATCH_SIZES.append(int(batch))


class GrpcUser(User, ModelUser):
    """InferenceAPIsService.Predictions with the JPEG as input 'data' and options as input-map entries."""

    turns = itertools.count()

    def on_start(self):
        self.setup_model()
        # One frame of a sequence in flight at a time, as over REST: each answer's wait is its latency.
        self.client = GrpcClient(
            self.environment.parsed_options.grpc_target,
            token=self.token or None,
            timeout_s=300,
            retries=0,
            stream_window=1,
        )

    def on_stop(self):
        self.client.close()

    @task
    def predict(self):
        photo, options = self.draw()
        start = time.perf_counter()
        if not self.scenario.sequence_length:
            try:
                outcome = self.client.predict(self.model, photo.data, options)
            except ServerError as failure:
                outcome = failure
            self.report(photo, options, outcome, start)
            return
        try:
            for outcome in self.client.stream(
                self.model, ((photo.data, options) for _ in range(self.scenario.sequence_length))
            ):
                self.report(photo, options, outcome, start)
                start = time.perf_counter()
        except ServerError as failure:  # the whole stream failed
            self.report(photo, options, failure, start)

    def report(self, photo, options, outcome, start):
        """Fire Locust's request event for one answer (checked) or error, timed from ``start``."""
        answer, error = (None, outcome) if isinstance(outcome, ServerError) else (outcome, None)
        if answer is not None:
            problem = self.scenario.check(photo, options, answer)
            if problem:
                error = AssertionError(f"wrong answer for {photo.name}: {problem}")
        self.environment.events.request.fire(
            request_type="grpc",
            name=self.model,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(answer.body) if answer else 0,
            exception=error,
            context={},
        )
