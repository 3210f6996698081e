"""REST sequences that any client can drive, and sequences left open that cost nothing, through a real TorchServe.

The frontend agent (runtime/frontend_agent) takes a request's sequence from ``X-Sequence-Id`` or from
``ts_request_sequence_id`` in any case (SequenceHeaderFix: TorchServe 0.12 alone read only the
exact name, and urllib capitalises it), waits for each sequence's frames on a thread of its own,
lets a new sequence take the place of one idle long enough when the model is full, and refuses
clearly when none is (IdleSequenceFix: TorchServe alone held a frame up to a minute behind idle
sequences). Through the pod's proxy: tests/test_pod.py.
"""

import json
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
import tritonclient.grpc
import tritonclient.http
from tritonclient.utils import InferenceServerException

from export.archive import Sequences, write_archive
from export.registry import RECIPES
from humanserve_client import HandlerError
from humanserve_client.client import SEQUENCE_HEADER
from humanserve_client.protocol import inference_pb2
from loadtest.run import run_locust
from runtime.torchserve import AGENT_JAR, TorchServe
from tests.conftest import server_overrides
from tests.fixtures.oracles import oracle_packages
from tests.fixtures.serving import clients
from tests.fixtures.videos import SCENES, paint_video
from tests.test_metrics import scrape, total
from tests.test_tracking_serving import frames_of, ids, plain_grpc_stream, write_video

MODEL = "tracker_oracle"
# Header names a client may send; HTTP names are case-insensitive, and urllib sends the second as
# Ts_request_sequence_id.
SPELLINGS = ["X-Sequence-Id", "ts_request_sequence_id", "TS_REQUEST_SEQUENCE_ID", "Ts_Request_Sequence_Id"]
# The limited tracker: few places, short idle times, so that the tests see them at work.
PLACES = 4
IDLE_CLOSE_MS = 6000
MIN_IDLE_MS = 1000

pytestmark = pytest.mark.skipif(
    not AGENT_JAR.exists(), reason=f"{AGENT_JAR} was not built: make setup needs a JDK (javac, jar) for it"
)


def send_urllib(url: str, image: bytes, headers: dict) -> tuple[int, dict, dict]:
    """Python's standard library, as a new user would write it: it capitalises header names (Ts_request_sequence_id)."""
    request = urllib.request.Request(url, data=image, headers={"Content-Type": "image/png", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read()), dict(refused.headers)


def send_requests(url: str, image: bytes, headers: dict) -> tuple[int, dict, dict]:
    answer = requests.post(url, data=image, headers={"Content-Type": "image/png", **headers}, timeout=60)
    return answer.status_code, answer.json(), dict(answer.headers)


def send_curl(url: str, image: bytes, headers: dict) -> tuple[int, dict, dict]:
    """curl, the body from standard input; the answer's status and headers from its -D dump."""
    command = [
        "curl",
        "-s",
        "-D",
        "-",
        "--data-binary",
        "@-",
        "-H",
        "Content-Type: image/png",
        *[f"-H{name}: {value}" for name, value in headers.items()],
        url,
    ]
    done = subprocess.run(command, input=image, capture_output=True, timeout=60, check=True)
    head, body = done.stdout.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    answer_headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), json.loads(body), answer_headers


SENDERS = {"urllib": send_urllib, "requests": send_requests, "curl": send_curl}


def header(headers: dict, name: str) -> str:
    return next(value for key, value in headers.items() if key.lower() == name.lower())


def interleaved(send, url: str, header_name: str, frames: int = 10) -> dict[str, list[dict]]:
    """Two videos as two sequences, frame by frame in turns (20 requests); each sequence's answers."""
    videos = {f"{scene}-{uuid.uuid4().hex}": frames_of(scene)[1][:frames] for scene in ("apart", "crossing")}
    answers: dict[str, list[dict]] = {name: [] for name in videos}
    for n in range(frames):
        for name, images in videos.items():
            options = {"X-Option-End": "true"} if n == frames - 1 else {}
            status, body, headers = send(url, images[n], {header_name: name, **options})
            assert status == 200, body
            assert header(headers, SEQUENCE_HEADER) == name and header(headers, "ts_request_sequence_id") == name
            answers[name].append(body)
    return answers


@pytest.fixture(scope="module")
def alone(server) -> dict[str, list]:
    """Each video's track IDs as our own client gets them, one sequence at a time."""
    rest, _ = clients(server)
    tracked = {
        scene: ids(
            [answer.json() for answer in rest.stream(MODEL, [(image, {}) for image in frames_of(scene)[1][:10]])]
        )
        for scene in ("apart", "crossing")
    }
    rest.close()
    return tracked


def check_tracked(answers: dict[str, list[dict]], alone: dict[str, list]) -> None:
    for name, tracked in answers.items():
        assert [answer["frame"] for answer in tracked] == list(range(len(tracked))), name
        assert {answer["sequence_id"] for answer in tracked} == {name} and not any(
            answer["reset"] for answer in tracked
        )
        assert ids(tracked) == alone[name.split("-")[0]], name


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("sender", sorted(SENDERS))
def test_interleaved_sequences_keep_their_ids_whatever_the_client_and_the_header_s_spelling(
    server, alone, sender, spelling
):
    check_tracked(interleaved(SENDERS[sender], f"{server.inference_url}/predictions/{MODEL}", spelling), alone)


def test_our_client_names_its_rest_sequences_by_the_header_proxies_pass(server, alone):
    rest, _ = clients(server)
    videos = {f"{scene}-{uuid.uuid4().hex}": frames_of(scene)[1][:10] for scene in ("apart", "crossing")}
    streams = {
        name: rest.stream(MODEL, [(image, {}) for image in images], sequence_id=name) for name, images in videos.items()
    }
    answers: dict[str, list[dict]] = {name: [] for name in videos}
    for _ in range(10):
        for name, stream in streams.items():
            answers[name].append(next(stream).json())
    rest.close()
    check_tracked(answers, alone)
    assert SEQUENCE_HEADER == "X-Sequence-Id"


def test_a_request_naming_two_different_sequences_is_refused(server):
    image = frames_of("apart")[1][0]
    status, body, _ = send_requests(
        f"{server.inference_url}/predictions/{MODEL}", image, {"X-Sequence-Id": "one", "ts_request_sequence_id": "two"}
    )
    assert status == 400 and "two sequences" in body["message"], body
    status, body, _ = send_requests(
        f"{server.inference_url}/predictions/{MODEL}",
        image,
        {"X-Sequence-Id": "same", "ts_request_sequence_id": "same", "X-Option-End": "true"},
    )
    assert status == 200 and body["sequence_id"] == "same"


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """The oracle tracker with pose_tracker's batching, 4 places, closing idle sequences after 6 s, giving way after 1
    s."""
    store = tmp_path_factory.mktemp("limited_store")
    (package,) = [p for p in oracle_packages() if p.name == MODEL]
    sequences = Sequences(max_idle_ms=IDLE_CLOSE_MS, timeout_ms=0, max_sequences=PLACES, queue_size=8)
    write_archive(replace(package, serving=replace(RECIPES["pose_tracker"].serving, sequences=sequences)), store)
    overrides = {**server_overrides(store), "humanserve_sequence_min_idle_ms": str(MIN_IDLE_MS)}
    instance = TorchServe(tmp_path_factory.mktemp("limited"), [MODEL], store, overrides=overrides)
    with instance.running(timeout=300):
        yield instance


def open_sequences(server: TorchServe) -> float:
    return total(scrape(server.metrics_url), "ts_sequences_open", model_name=MODEL)


def closed(server: TorchServe, reason: str) -> float:
    return total(scrape(server.metrics_url), "ts_sequences_closed_total", model_name=MODEL, reason=reason)


def until_none_open(server: TorchServe, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while open_sequences(server) > 0:
        assert time.monotonic() < deadline, (
            f"{open_sequences(server):.0f} sequences still open {timeout} s on\n{server.log_tail()}"
        )
        time.sleep(0.2)


def frame_latencies(url: str, images: list[bytes], name: str) -> list[float]:
    """Each frame's wait, one sequence sent frame by frame over urllib, ended by its last frame."""
    waits = []
    for n, image in enumerate(images):
        start = time.perf_counter()
        status, body, _ = send_urllib(
            url, image, {"ts_request_sequence_id": name, **({"X-Option-End": "true"} if n == len(images) - 1 else {})}
        )
        waits.append(time.perf_counter() - start)
        assert status == 200 and body["frame"] == n, body
    return waits


def test_abandoned_sequences_slow_no_one_and_close_by_themselves(limited):
    url = f"{limited.inference_url}/predictions/{MODEL}"
    images = frames_of("apart")[1][:10]
    until_none_open(limited, IDLE_CLOSE_MS / 1000 + 5)
    quiet = statistics.median(frame_latencies(url, images, f"quiet-{uuid.uuid4().hex}"))
    idle_before, evicted_before = closed(limited, "idle"), closed(limited, "evicted")
    # Twice as many sequences as the model has places, each left after its first frame (a crashed client).
    codes = [
        send_urllib(url, images[0], {"X-Sequence-Id": f"abandoned-{n}-{uuid.uuid4().hex}"})[0]
        for n in range(2 * PLACES)
    ]
    assert codes[:PLACES] == [200] * PLACES and set(codes) <= {200, 503}, codes
    time.sleep(MIN_IDLE_MS / 1000 + 0.5)
    crowded = frame_latencies(url, images, f"live-{uuid.uuid4().hex}")
    # Within twice the quiet latency, asserted loosely here (a shared CI machine); docs/benchmarks.md has the figures.
    assert statistics.median(crowded) < 2 * quiet + 0.2 and max(crowded) < 5, (quiet, crowded)
    assert closed(limited, "evicted") > evicted_before
    assert 'gave its place to "live-' in (limited.run_dir / "logs" / "console.log").read_text()
    # Back to normal by itself: the rest idle out.
    until_none_open(limited, IDLE_CLOSE_MS / 1000 + 5)
    assert closed(limited, "idle") > idle_before
    assert statistics.median(frame_latencies(url, images, f"after-{uuid.uuid4().hex}")) < 2 * quiet + 0.2


def test_a_full_model_refuses_a_new_sequence_at_once_saying_why(limited):
    url = f"{limited.inference_url}/predictions/{MODEL}"
    image = frames_of("apart")[1][0]
    until_none_open(limited, IDLE_CLOSE_MS / 1000 + 5)
    names = [f"busy-{n}-{uuid.uuid4().hex}" for n in range(PLACES)]
    for name in names:
        assert send_requests(url, image, {"X-Sequence-Id": name})[0] == 200
    start = time.perf_counter()
    status, body, _ = send_requests(url, image, {"X-Sequence-Id": f"one-too-many-{uuid.uuid4().hex}"})
    assert time.perf_counter() - start < 2
    assert status == 503 and body["type"] == "ServiceUnavailableException", body
    assert f"has {PLACES} open sequences (its maxNumSequence)" in body["message"] and "option end" in body["message"], (
        body
    )
    _, remote = clients(limited)
    (refused,) = plain_grpc_stream(
        remote,
        [
            inference_pb2.PredictionsRequest(
                model_name=MODEL, input={"data": image}, sequence_id=f"grpc-{uuid.uuid4().hex}"
            )
        ],
    )
    remote.close()
    assert refused.status.code == 14 and "maxNumSequence" in refused.status.message  # UNAVAILABLE, not INTERNAL
    for name in names:
        assert send_requests(url, image, {"X-Sequence-Id": name, "X-Option-End": "true"})[0] == 200
    assert open_sequences(limited) == 0


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_a_stream_left_early_ends_its_sequence(limited, protocol):
    until_none_open(limited, IDLE_CLOSE_MS / 1000 + 5)
    ended = closed(limited, "ended")
    client = dict(zip(("rest", "grpc"), clients(limited)))[protocol]
    for n, answer in enumerate(client.stream(MODEL, [(image, {}) for image in frames_of("apart")[1]])):
        assert not isinstance(answer, HandlerError)
        if n == 2:
            break
    assert open_sequences(limited) == 0 and closed(limited, "ended") == ended + 1
    client.close()


def test_the_cli_interrupted_with_ctrl_c_ends_its_sequence(limited, tmp_path):
    until_none_open(limited, IDLE_CLOSE_MS / 1000 + 5)
    ended = closed(limited, "ended")
    walkers, _ = SCENES["apart"]
    write_video(tmp_path / "long.avi", paint_video(320, 240, walkers, 300, seed=3))
    ports = limited.properties
    command = [
        sys.executable,
        "-m",
        "humanserve_client",
        "track",
        str(tmp_path / "long.avi"),
        "--model",
        MODEL,
        "--rest",
        "--url",
        limited.inference_url,
        "--grpc-target",
        f"127.0.0.1:{ports['grpc_inference_port']}",
    ]
    # Ctrl-C as a terminal sends it, also where the suite itself runs in the background: a shell starts background
    # jobs with SIGINT ignored, which Python would inherit and keep (no KeyboardInterrupt, the video tracked to its end).
    tracking = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for _ in range(3):
        assert json.loads(tracking.stdout.readline())["frame"] >= 0
    tracking.send_signal(signal.SIGINT)
    _, errors = tracking.communicate(timeout=60)
    assert tracking.returncode == 130 and "interrupted after" in errors, errors
    assert open_sequences(limited) == 0 and closed(limited, "ended") == ended + 1


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_a_locust_run_leaves_no_sequence_open(limited, tmp_path, protocol):
    until_none_open(limited, IDLE_CLOSE_MS / 1000 + 5)
    result = run_locust(limited, MODEL, protocol, users=3, duration="6s", report_dir=tmp_path)
    assert result.requests > 10, (tmp_path / "locust.log").read_text()[-2000:]
    assert open_sequences(limited) == 0, (tmp_path / "locust.log").read_text()[-2000:]


def test_the_first_request_of_make_start_leaves_no_sequence_open(limited, capsys):
    from runtime.torchserve import show_first_request

    until_none_open(limited, IDLE_CLOSE_MS / 1000 + 5)
    show_first_request(limited)
    assert "X-Option-End: true" in capsys.readouterr().out
    assert open_sequences(limited) == 0 and closed(limited, "ended") > 0


def v2_frame(client, image: bytes, **sequence):
    """One frame to the tracker as tritonclient sends it (sequence_id, sequence_start, sequence_end its own arguments):
    the frame's answer."""
    module = tritonclient.http if isinstance(client, tritonclient.http.InferenceServerClient) else tritonclient.grpc
    photo = module.InferInput("image", [1], "BYTES")
    photo.set_data_from_numpy(np.array([image], dtype=np.object_))
    return json.loads(client.infer(MODEL, [photo], **sequence).as_numpy("answer")[0])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_v2_sequences_named_by_tritonclient_keep_their_ids(server, alone, protocol):
    if protocol == "http":
        client = tritonclient.http.InferenceServerClient(urlsplit(server.inference_url).netloc, network_timeout=300)
    else:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_target)
    try:
        # Two videos in turns, one named by a number and one by a string, as the protocol allows.
        videos = {f"{scene}-{uuid.uuid4().hex}": frames_of(scene)[1][:10] for scene in ("apart", "crossing")}
        names = dict(zip(videos, [int(uuid.uuid4().int % 10**12), f"v2-{uuid.uuid4().hex}"]))
        answers: dict[str, list[dict]] = {name: [] for name in videos}
        for n in range(10):
            for name, images in videos.items():
                frame = v2_frame(client, images[n], sequence_id=names[name], sequence_start=n == 0, sequence_end=n == 9)
                assert frame["sequence_id"] == str(names[name]), frame
                answers[name].append({**frame, "sequence_id": name})
        check_tracked(answers, alone)
    finally:
        client.close()


def test_v2_frames_leave_no_sequence_open_and_a_named_one_ends_with_sequence_end(limited):
    ended = closed(limited, "ended")
    images = frames_of("apart")[1][:3]
    http = tritonclient.http.InferenceServerClient(urlsplit(limited.inference_url).netloc, network_timeout=300)
    grpc_client = tritonclient.grpc.InferenceServerClient(limited.grpc_target)
    try:
        for client in (http, grpc_client):  # no sequence named: each photo is a one-frame sequence, ended at once
            assert [v2_frame(client, image)["frame"] for image in images] == [0, 0, 0]
        named = [v2_frame(grpc_client, image, sequence_id=77, sequence_end=n == 2) for n, image in enumerate(images)]
        assert [answer["frame"] for answer in named] == [0, 1, 2] and named[0]["sequence_id"] == "77"
        # Metadata comes from the handler, in a one-call sequence of its own on a sequence model, ended too.
        assert http.get_model_metadata(MODEL)["outputs"][0]["name"] == "answer"
        assert grpc_client.get_model_metadata(MODEL, as_json=True)["outputs"][0]["name"] == "answer"
        until_none_open(limited, timeout=IDLE_CLOSE_MS / 1000 / 2)  # well before any would idle out
        assert closed(limited, "ended") == ended + 9
        with pytest.raises(InferenceServerException, match="one per request"):
            photos = tritonclient.grpc.InferInput("image", [2], "BYTES")
            photos.set_data_from_numpy(np.array(images[:2], dtype=np.object_))
            grpc_client.infer(MODEL, [photos], sequence_id=78)
    finally:
        http.close()
        grpc_client.close()
