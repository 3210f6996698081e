"""Locust users for humanserve: RestUser and GrpcUser send real photos to one model and check every answer.

    locust -f loadtest/locustfile.py RestUser --host http://127.0.0.1:8080 --model pose_resnet50
    locust -f loadtest/locustfile.py GrpcUser --grpc-target 127.0.0.1:7070 --model pose_resnet50

`make loadtest` runs them headless (loadtest/run.py). Users send back to back (no wait):
USERS is the number of requests in flight. The key for token authorization comes from
--token or HUMANSERVE_TOKEN. For a sequence model (pose_tracker) each task is one whole
sequence: the scenario's frames, one in flight at a time, the last one ending it; so
USERS is also the number of concurrent sequences. Each frame is one request in the report.
"""

import json
import random
import time
from pathlib import Path

import grpc.experimental.gevent
from locust import FastHttpUser, User, events, task

from humanserve_client import Answer, GrpcClient, ServerError
from humanserve_client.client import SEQUENCE_HEADER, new_sequence_id
from loadtest.photos import photo_pool
from loadtest.scenarios import scenario_for

grpc.experimental.gevent.init_gevent()  # gRPC's own threads would block Locust's greenlets
PHOTOS = photo_pool()
BATCH_SIZES: list[int] = []  # X-Batch-Size of every REST answer: how full the server's batches were


@events.init_command_line_parser.add_listener
def _arguments(parser):
    parser.add_argument("--model", env_var="HUMANSERVE_MODEL", default="pose_resnet50", help="model to load")
    parser.add_argument("--token", env_var="HUMANSERVE_TOKEN", default="", help="inference API key")
    parser.add_argument("--grpc-target", env_var="HUMANSERVE_GRPC_TARGET", default="127.0.0.1:7070", help="gRPC inference API")
    parser.add_argument("--batch-report", default="", help="write the batch sizes seen (REST) to this JSON file")
    parser.add_argument("--plain", action="store_true", help="send no options: one image, one model input per request")


@events.quitting.add_listener
def _write_batch_report(environment, **kwargs):
    path = environment.parsed_options.batch_report
    if path and BATCH_SIZES:
        report = {"answers": len(BATCH_SIZES), "mean_batch_size": sum(BATCH_SIZES) / len(BATCH_SIZES), "max_batch_size": max(BATCH_SIZES)}
        Path(path).write_text(json.dumps(report))


class ModelUser:
    """What both users share: the model's scenario and a random photo per request."""

    def setup_model(self) -> None:
        options = self.environment.parsed_options
        self.model, self.token = options.model, options.token
        self.scenario = scenario_for(self.model)
        self.rng = random.Random()

    def draw(self):
        photo = self.rng.choice(PHOTOS)
        return photo, {} if self.environment.parsed_options.plain else self.scenario.options(photo, self.rng)


class RestUser(FastHttpUser, ModelUser):
    """POST /predictions/MODEL with the JPEG as the body and options as X-Option-* headers."""

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
        for frame in range(self.scenario.sequence_length):
            self.send(photo, {**options, "end": "true"} if frame == self.scenario.sequence_length - 1 else options, sequence)

    def send(self, photo, options, headers):
        headers = {"Content-Type": "image/jpeg", **headers, **{f"X-Option-{name.replace('_', '-')}": value for name, value in options.items()}}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        with self.client.post(f"/predictions/{self.model}", data=photo.jpeg, headers=headers, name=self.model, catch_response=True) as response:
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

    def on_start(self):
        self.setup_model()
        # One frame of a sequence in flight at a time, as over REST: each answer's wait is its latency.
        self.client = GrpcClient(self.environment.parsed_options.grpc_target, token=self.token or None, timeout_s=300, retries=0, stream_window=1)

    def on_stop(self):
        self.client.close()

    @task
    def predict(self):
        photo, options = self.draw()
        start = time.perf_counter()
        if not self.scenario.sequence_length:
            try:
                outcome = self.client.predict(self.model, photo.jpeg, options)
            except ServerError as failure:
                outcome = failure
            self.report(photo, options, outcome, start)
            return
        try:
            for outcome in self.client.stream(self.model, ((photo.jpeg, options) for _ in range(self.scenario.sequence_length))):
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
