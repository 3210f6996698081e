"""A worker killed while it holds a request: TorchServe answers "Worker died." on both protocols, and the client's
retries turn it into an answer."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from handlers.core.base import DEFAULT_SERVING_NICE
from humanserve_client import GrpcClient, RestClient, ServerError
from tests.fixtures.serving import encode, wait_for_worker

MODEL = "pose_resnet50"  # a real network: a request with many people keeps its worker busy for seconds
PEOPLE = 15
HEAVY = {"boxes": [[10 + 20 * i, 10, 200 + 20 * i, 460] for i in range(PEOPLE)], "flip_test": True}


def client(server, protocol: str, retries: int):
    if protocol == "rest":
        return RestClient(server.inference_url, retries=retries, backoff_s=0.2)
    return GrpcClient(f"127.0.0.1:{server.properties['grpc_inference_port']}", retries=retries, backoff_s=0.2)


def kill_worker_during(server, call) -> tuple[object, int]:
    """Run ``call()`` and kill the model's worker while it works on it; what the call returned or raised, and the killed
    pid."""
    outcome = {}

    def run():
        try:
            outcome["answer"] = call()
        except ServerError as error:
            outcome["error"] = error

    (pid,) = server.worker_pids(MODEL)
    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)  # batched (20 ms) and well into its forward passes
    assert thread.is_alive(), "the request ended before the worker could be killed"
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=120)
    return outcome.get("answer", outcome.get("error")), pid


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_a_killed_worker_fails_its_requests_and_retries_answer_them(server, protocol):
    image = encode(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8), "JPEG")
    wait_for_worker(server, MODEL)
    with client(server, protocol, retries=0) as plain:
        failure, killed = kill_worker_during(server, lambda: plain.predict(MODEL, image, HEAVY))
    assert isinstance(failure, ServerError), f"expected the worker's death, got an answer: {failure}"
    # 507 when TorchServe has read the exit status 137 by the time it answers, else 500: it looks once (a race)
    assert (failure.type, failure.message) == ("InternalServerException", "Worker died."), failure
    assert failure.code in (500, 507), failure

    wait_for_worker(server, MODEL, killed)
    with client(server, protocol, retries=3) as patient:
        answer, killed = kill_worker_during(server, lambda: patient.predict(MODEL, image, HEAVY))
    assert not isinstance(answer, ServerError), f"the retries did not answer: {answer}"
    assert len(answer.json()["people"]) == PEOPLE
    assert server.worker_pids(MODEL) != [killed]  # answered by the worker TorchServe started in its place


def thread_nices(pid: int) -> set[int]:
    """The nice values of a process's threads (field 19 of /proc/PID/task/TID/stat)."""
    stats = [(task / "stat").read_text() for task in Path(f"/proc/{pid}/task").iterdir()]
    return {int(stat.rsplit(")", 1)[1].split()[16]) for stat in stats}


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread priorities from Linux's /proc")
def test_a_starting_worker_runs_before_the_serving_ones(server):
    """A worker starts at the server's priority and lowers every thread's by HUMANSERVE_SERVING_NICE once it has
    answered."""
    wait_for_worker(server, MODEL)
    image = encode(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8), "JPEG")
    server_nice = os.getpriority(os.PRIO_PROCESS, 0)  # TorchServe inherits the test's
    workers = []
    with client(server, "rest", retries=0) as rest:
        for _ in range(2):
            (worker,) = server.worker_pids(MODEL)
            if workers:  # the one started in place of the killed one, before its first request
                assert thread_nices(worker) == {server_nice}
            assert len(rest.predict(MODEL, image, {"boxes": [[0, 0, 160, 120]]}).json()["people"]) == 1
            assert thread_nices(worker) == {server_nice + DEFAULT_SERVING_NICE}
            workers.append(worker)
            os.kill(worker, signal.SIGKILL)
            wait_for_worker(server, MODEL, worker)
