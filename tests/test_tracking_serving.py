"""pose_tracker through a real TorchServe (oracle detector and pose): sequences over REST and gRPC streams, stable IDs.

The tracker oracle forgets a sequence after 5 s unused and keeps at most 4 per worker
(``oracles.TRACKER_ORACLE_TRACKING``), so these tests see both limits at work.
"""

import json
import os
import signal
import time
import uuid

import cv2
import numpy as np
import pytest

from humanserve_client import HandlerError
from humanserve_client.client import SEQUENCE_HEADER, error_in_body
from humanserve_client.protocol import inference_pb2
from tests.fixtures.oracles import TRACKER_ORACLE_TRACKING, TRACKER_ORACLE_UNHEALTHY_AFTER_S, paint_people
from tests.fixtures.serving import clients, encode, run_cli, wait_for_worker
from tests.fixtures.videos import SCENES, mot_scores, paint_video

MODEL = "tracker_oracle"


@pytest.fixture(scope="module")
def both(server):
    rest, remote = clients(server)
    yield {"rest": rest, "grpc": remote}
    rest.close()
    remote.close()


def frames_of(scene: str) -> tuple[list, list[bytes]]:
    walkers, count = SCENES[scene]
    video = paint_video(320, 240, walkers, count, seed=len(scene))
    return video, [encode(frame.image, "PNG") for frame in video]


def track_video(client, images: list[bytes], sequence_id=None, end=True, **options) -> list:
    """Each frame's answer (JSON) or error, streamed as one sequence."""
    answers = client.stream(
        MODEL, [(image, options) for image in images], sequence_id=sequence_id or f"test-{uuid.uuid4().hex}", end=end
    )
    return [answer if isinstance(answer, HandlerError) else answer.json() for answer in answers]


def ids(answers: list) -> list[list]:
    return [[person["track_id"] for person in answer["people"]] for answer in answers]


@pytest.mark.parametrize("scene", ["apart", "occluded", "crossing"])
def test_ids_are_stable_over_rest_and_grpc_alike(both, scene):
    video, images = frames_of(scene)
    answers = {protocol: track_video(client, images) for protocol, client in both.items()}
    assert ids(answers["rest"]) == ids(answers["grpc"])
    for protocol, tracked in answers.items():
        assert [answer["frame"] for answer in tracked] == list(range(len(images)))
        assert len({answer["sequence_id"] for answer in tracked}) == 1 and not any(
            answer["reset"] for answer in tracked
        )
        scores = mot_scores(video, [answer["people"] for answer in tracked])
        assert scores["id_switches"] == 0 and scores["idf1"] > 0.9, (
            f"{scene} over {protocol}: {scores}, ids {ids(tracked)}"
        )
        # A new person is confirmed at its second matched frame (min_hits 2): from then on every person has an ID.
        assert all(track_id is not None for frame_ids in ids(tracked)[2:] for track_id in frame_ids), ids(tracked)
        assert {track_id for frame_ids in ids(tracked) for track_id in frame_ids} == {None, 0, 1}


def test_a_person_walking_out_and_back_in_is_a_new_id_that_was_never_used(both):
    _, images = frames_of("leaving")
    tracked = ids(track_video(both["rest"], images))
    seen = [set(frame_ids) - {None} for frame_ids in tracked]
    assert seen[4] == {0, 1} and 2 in set().union(*seen[13:])  # back inside at frame 13: a third ID


def test_interleaved_sequences_do_not_disturb_each_other(both):
    rest = both["rest"]
    _, apart = frames_of("apart")
    _, crossing = frames_of("crossing")
    first = [track_video(rest, apart), track_video(rest, crossing)]
    alone = [ids(answers) for answers in first]
    streams = [
        rest.stream(MODEL, [(image, {}) for image in images], sequence_id=f"mix-{n}-{uuid.uuid4().hex}")
        for n, images in enumerate((apart, crossing))
    ]
    together: list[list] = [[], []]
    for n in range(max(len(apart), len(crossing))):  # frame by frame, in turns
        for stream, answers, images in zip(streams, together, (apart, crossing)):
            if n < len(images):
                answers.append(next(stream).json())
    flags = [[(answer["frame"], answer["reset"]) for answer in answers] for answers in first + together]
    assert [ids(answers) for answers in together] == alone, flags


def test_the_same_frame_repeated_gives_the_same_ids(both):
    _, images = frames_of("apart")
    tracked = ids(track_video(both["grpc"], [images[0]] * 8))
    assert tracked[0] == [None, None] and all(frame_ids == tracked[1] for frame_ids in tracked[1:])
    assert sorted(tracked[1]) == [0, 1]


def test_a_corrupt_frame_gets_a_400_and_the_sequence_goes_on(both):
    _, images = frames_of("apart")
    for protocol, client in both.items():
        sent = images[:3] + [b"\x89PNG\r\n\x1a\n truncated", b"not an image"] + images[3:6]
        tracked = track_video(client, sent)
        errors = [answer for answer in tracked if isinstance(answer, HandlerError)]
        assert [error.code for error in errors] == [400, 400], protocol
        frames = [answer["frame"] for answer in tracked if not isinstance(answer, HandlerError)]
        assert frames == list(range(6)), protocol
        good = [answer for answer in tracked if not isinstance(answer, HandlerError)]
        assert ids(good)[3:] == [ids(good)[2]] * 3, protocol


def plain_grpc_stream(client, requests: list) -> list:
    """What a plain gRPC client does: send every message, close its side at once (the iterator ends), read the
    answers."""
    return list(client.inference.StreamPredictions2(iter(requests), metadata=client.metadata["inference"], timeout=120))


def test_a_grpc_client_closing_its_side_first_gets_every_answer_and_the_worker_stays(server, both):
    """TorchServe 0.12 alone ended the answer stream at the client's half-close, and failing to send the next answer
    killed the worker."""
    from runtime.torchserve import AGENT_JAR

    if not AGENT_JAR.exists():
        pytest.skip(f"{AGENT_JAR} was not built: make setup needs a JDK (javac, jar) for it")
    _, images = frames_of("apart")
    (worker,) = server.worker_pids(MODEL)
    name = f"closed-first-{uuid.uuid4().hex}"
    sent = images[:3] + [b"not an image"] + images[3:5]
    answers = plain_grpc_stream(
        both["grpc"],
        [inference_pb2.PredictionsRequest(model_name=MODEL, input={"data": image}, sequence_id=name) for image in sent],
    )
    errors = [error_in_body(answer.prediction) for answer in answers]
    assert [
        error.code if error else json.loads(answer.prediction)["frame"] for error, answer in zip(errors, answers)
    ] == [0, 1, 2, 400, 3, 4]
    # TorchServe refuses a message without a sequence ID itself, in the answer's status
    (refused,) = plain_grpc_stream(
        both["grpc"], [inference_pb2.PredictionsRequest(model_name=MODEL, input={"data": images[0]})]
    )
    assert refused.status.code != 0 and "sequenceId" in refused.status.message
    cancelled = both["grpc"].inference.StreamPredictions2(
        iter(
            [
                inference_pb2.PredictionsRequest(
                    model_name=MODEL, input={"data": image}, sequence_id=f"{name}-cancelled"
                )
                for image in images[:4]
            ]
        ),
        metadata=both["grpc"].metadata["inference"],
        timeout=120,
    )
    assert json.loads(next(cancelled).prediction)["frame"] == 0
    cancelled.cancel()
    again = plain_grpc_stream(
        both["grpc"],
        [
            inference_pb2.PredictionsRequest(model_name=MODEL, input={"data": image}, sequence_id=f"{name}-after")
            for image in images[:2]
        ],
    )
    assert [json.loads(answer.prediction)["frame"] for answer in again] == [0, 1]
    assert server.worker_pids(MODEL) == [worker]
    assert "completes a stream's answers once all are sent" in (server.run_dir / "logs" / "console.log").read_text()


def test_end_frees_the_sequence_at_once(both):
    rest = both["rest"]
    _, images = frames_of("apart")
    name = f"ended-{uuid.uuid4().hex}"
    track_video(rest, images[:4], sequence_id=name, end=True)
    again = track_video(rest, images[4:6], sequence_id=name, end=False)
    assert [(answer["frame"], answer["reset"]) for answer in again] == [(0, False), (1, False)]
    assert ids(again)[0] == [None, None]


def test_a_sequence_unused_past_its_ttl_is_told_its_state_was_lost(both):
    rest = both["rest"]
    _, images = frames_of("apart")
    name = f"idle-{uuid.uuid4().hex}"
    track_video(rest, images[:3], sequence_id=name, end=False)
    time.sleep(TRACKER_ORACLE_TRACKING["ttl_s"] + 1)
    later = track_video(rest, images[3:5], sequence_id=name, end=False)
    assert [(answer["frame"], answer["reset"]) for answer in later] == [(0, True), (1, False)]
    assert ids(later)[0] == [None, None]  # IDs start again


def test_beyond_the_worker_s_sequence_bound_the_least_recently_used_is_dropped(both):
    rest = both["rest"]
    _, images = frames_of("apart")
    names = [f"lru-{n}-{uuid.uuid4().hex}" for n in range(TRACKER_ORACLE_TRACKING["max_sequences"] + 1)]
    for name in names:  # the first is the least recently used when the last arrives
        track_video(rest, images[:2], sequence_id=name, end=False)
    newest, oldest = (track_video(rest, images[2:3], sequence_id=name, end=False)[0] for name in (names[-1], names[0]))
    assert (newest["frame"], newest["reset"]) == (2, False)
    assert (oldest["frame"], oldest["reset"]) == (0, True)


def test_rest_without_a_sequence_gets_one_from_torchserve_and_can_go_on(server, http):
    _, images = frames_of("apart")
    url = f"{server.inference_url}/predictions/{MODEL}"
    first = http.post(url, data=images[0], timeout=60)
    assert first.status_code == 200, first.text
    sequence_id = first.headers[SEQUENCE_HEADER]
    assert first.json()["sequence_id"] == sequence_id and first.json()["frame"] == 0
    second = http.post(url, data=images[1], headers={SEQUENCE_HEADER: sequence_id}, timeout=60)
    assert (second.json()["sequence_id"], second.json()["frame"]) == (sequence_id, 1)
    assert ids([second.json()]) == [[0, 1]]


def test_frames_with_boxes_skip_the_detector(both):
    # No outlines painted: the detector oracle finds nobody, the given boxes are the people.
    regions = [[20, 20, 120, 200], [180, 30, 290, 210]]
    image = encode(paint_people(320, 240, regions, seed=5).image, "PNG")
    searched = track_video(both["rest"], [image] * 2)
    assert [answer["people"] for answer in searched] == [[], []]
    given = track_video(both["grpc"], [image] * 3, boxes=regions)
    assert [[person["box"] for person in answer["people"]] for answer in given] == [regions] * 3
    assert ids(given) == [[None, None], [0, 1], [0, 1]]
    assert all(person["score"] == 1.0 for answer in given for person in answer["people"])


def test_the_answer_keeps_only_the_people_its_options_ask_for(both):
    walkers, count = SCENES["apart"]
    video = paint_video(320, 240, walkers, count)
    image = encode(video[0].image, "PNG")
    # Person 1's outline scores 0.80: under a 0.9 threshold it is left out of the answer, yet still tracked.
    tracked = track_video(both["rest"], [image] * 3, score_threshold=0.9)
    assert [len(answer["people"]) for answer in tracked] == [1, 1, 1]
    assert ids(tracked)[1:] == [[0], [0]]


def test_a_bad_option_inside_a_sequence_is_named_and_the_worker_stays(server, both):
    _, images = frames_of("apart")
    pids = server.worker_pids(MODEL)
    for client in both.values():
        answer = next(client.stream(MODEL, [(images[0], {"end": "maybe"})], end=False))
        assert isinstance(answer, HandlerError) and answer.code == 400 and "'end'" in answer.message
    assert server.worker_pids(MODEL) == pids


def write_video(path, frames) -> None:
    """Frames (RGB) as a lossless FFV1 video, so the oracles see exactly the painted colours."""
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (frames[0].image.shape[1], frames[0].image.shape[0])
    )
    for frame in frames:
        writer.write(np.ascontiguousarray(frame.image[:, :, ::-1]))
    writer.release()


@pytest.mark.parametrize("protocol", [[], ["--rest"]], ids=["grpc", "rest"])
def test_the_cli_tracks_a_video_into_json_lines_and_a_drawn_video(server, tmp_path, protocol):
    walkers, count = SCENES["apart"]
    video = paint_video(320, 240, walkers, count, seed=3)
    write_video(tmp_path / "walk.avi", video)
    rendered = tmp_path / "out" / "walk.mp4"
    done = run_cli(
        server,
        "track",
        str(tmp_path / "walk.avi"),
        "--model",
        MODEL,
        "--every",
        "2",
        "--image-format",
        "png",
        "--render",
        str(rendered),
        *protocol,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [record["frame_index"] for record in records] == list(range(0, count, 2))
    assert [record["frame"] for record in records] == list(range(len(records)))
    assert [record["time_s"] for record in records] == [index / 10 for index in range(0, count, 2)]
    assert ids(records)[1:] == [[0, 1]] * (len(records) - 1)
    assert mot_scores(video[::2], [record["people"] for record in records])["id_switches"] == 0
    assert f"{len(records)} of {len(records)} frames answered" in done.stderr
    capture = cv2.VideoCapture(str(rendered))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(records)
    ok, drawn = capture.read()
    assert ok and drawn.shape == (240, 320, 3)


def test_the_cli_reports_a_file_that_is_no_video(server, tmp_path):
    (tmp_path / "notes.txt").write_text("not a video")
    done = run_cli(server, "track", str(tmp_path / "notes.txt"), "--model", MODEL)
    assert done.returncode == 2 and "UnreadableVideo" in done.stderr


def test_a_dead_tracker_worker_is_restarted_and_its_sequences_are_told_their_state_was_lost(
    tmp_path_factory, model_store
):
    """TorchServe 0.12 alone never restarts a sequence model's worker; with the frontend agent (runtime/frontend_agent) it does."""
    from runtime.torchserve import AGENT_JAR, TorchServe
    from tests.conftest import server_overrides

    if not AGENT_JAR.exists():
        pytest.skip(f"{AGENT_JAR} was not built: make setup needs a JDK (javac, jar) for it")
    instance = TorchServe(
        tmp_path_factory.mktemp("tracker_alone"), [MODEL], model_store, overrides=server_overrides(model_store)
    )
    _, images = frames_of("apart")
    with instance.running(timeout=300):
        rest, remote = clients(instance)
        before = track_video(rest, images[:3], sequence_id="before-the-kill", end=False)
        assert [answer["frame"] for answer in before] == [0, 1, 2]
        (killed,) = instance.worker_pids(MODEL)
        os.kill(killed, signal.SIGKILL)
        wait_for_worker(instance, MODEL, killed)
        after = track_video(rest, images[3:5], sequence_id="before-the-kill")
        assert [(answer["frame"], answer["reset"]) for answer in after] == [(0, True), (1, False)]
        fresh = track_video(remote, images[:2])
        assert [(answer["frame"], answer["reset"]) for answer in fresh] == [(0, False), (1, False)]
        assert instance.healthy()
        assert "no longer restarts a running dispatcher" in (instance.run_dir / "logs" / "console.log").read_text()
        rest.close()
        remote.close()


def test_without_the_agent_a_dead_tracker_worker_turns_ping_unhealthy(
    tmp_path_factory, model_store, monkeypatch, capsys
):
    """Built without a JDK, TorchServe 0.12 never restarts the worker: maxRetryTimeoutInSec bounds how long /ping hides
    it."""
    from runtime import torchserve
    from tests.conftest import server_overrides

    monkeypatch.setattr(torchserve, "AGENT_JAR", torchserve.AGENT_JAR.with_name("absent-agent.jar"))
    instance = torchserve.TorchServe(
        tmp_path_factory.mktemp("tracker_without_agent"), [MODEL], model_store, overrides=server_overrides(model_store)
    )
    with instance.running(timeout=300):
        assert "absent-agent.jar is missing" in capsys.readouterr().err
        assert instance.healthy()
        (killed,) = instance.worker_pids(MODEL)
        os.kill(killed, signal.SIGKILL)
        limit = time.monotonic() + TRACKER_ORACLE_UNHEALTHY_AFTER_S + 30
        while instance.healthy() and time.monotonic() < limit:
            time.sleep(1)
        assert not instance.healthy(), f"/ping still Healthy {TRACKER_ORACLE_UNHEALTHY_AFTER_S + 30} s after the kill"
        assert "no longer restarts a running dispatcher" not in (instance.run_dir / "logs" / "console.log").read_text()
