"""Load tests: the answer checks of each scenario, the closed-loop load of the benchmarks and the soak, and a short
Locust run over REST and gRPC against a real server."""

import json
import random
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from scipy import stats
from ts.protocol.otf_message_handler import retrieve_msg

from humanserve_client import Answer
from loadtest.bench_reads import BufferedSocket, predict_frame, read_one_copy
from loadtest.load import ClosedLoop, Request, grpc_turns, parse_duration, rest_turns, run
from loadtest.photos import SIZES, photo_pool
from loadtest.run import run_locust
from loadtest.scenarios import requests_for, scenario_for
from loadtest.soak import memory_trend, robust_rss_slope, rss_slope, soak_overrides
from runtime.torchserve import REPO
from tests.fixtures.serving import encode


@pytest.fixture(scope="module")
def photos():
    return photo_pool()


def test_the_pool_holds_real_photos_of_every_size(photos):
    assert {(p.width, p.height) for p in photos} == set(SIZES)
    assert all(p.data[:3] == b"\xff\xd8\xff" for p in photos)


def people_answer(photo, people, with_keypoints=True):
    person = {"box": [1, 2, 3, 4], "score": 0.9, **({"keypoints": [[1, 2, 0.5]] * 17} if with_keypoints else {})}
    body = {"image": {"width": photo.width, "height": photo.height}, "people": [person] * people}
    return Answer(json.dumps(body).encode(), "application/json")


def test_checks_pass_right_answers_and_catch_wrong_ones(photos):
    photo = photos[0]
    pose = scenario_for("pose_resnet50")
    options = {"boxes": "[[0, 0, 10, 20], [5, 5, 30, 40]]"}
    assert pose.check(photo, options, people_answer(photo, 2)) is None
    assert "1 people for 2 boxes" in pose.check(photo, options, people_answer(photo, 1))
    shifted = people_answer(type(photo)(photo.name, photo.data, photo.width + 1, photo.height), 2)
    assert "image size" in pose.check(photo, options, shifted)
    detector = scenario_for("person_detector")
    assert (
        detector.check(photo, {"score_threshold": "0.95"}, people_answer(photo, 1, False))
        == "score 0.9 below score_threshold=0.95"
    )
    style = scenario_for("style_candy")
    right = Answer(encode(random_pixels(photo.height, photo.width), "JPEG"), "image/jpeg")
    assert style.check(photo, {"max_side": "4096"}, right) is None
    assert "expected" in style.check(photo, {"max_side": "100"}, right)
    segmenter = scenario_for("person_segmenter")
    mask = {"mask": {"size": [photo.height, photo.width], "counts": "abc"}}
    assert segmenter.check(photo, {}, Answer(json.dumps(mask).encode(), "application/json")) is None
    assert "COCO RLE" in segmenter.check(photo, {}, Answer(b'{"mask": {}}', "application/json"))


def random_pixels(height, width):
    import numpy as np

    return np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_every_zoo_model_has_a_scenario():
    from export.registry import RECIPES

    for model in RECIPES:
        photo = photo_pool(((64, 48),))[0]
        scenario_for(model).options(photo, random.Random(0))


def turns_of(server, protocol, model, requests, clients, **sequence):
    token = server.token("inference")
    if protocol == "rest":
        return rest_turns(f"{server.inference_url}/predictions/{model}", token, requests, clients, model, **sequence)
    return grpc_turns(server.grpc_target, token, model, requests, clients, model, **sequence)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_the_closed_loop_counts_right_answers_and_catches_wrong_and_refused_ones(server, photos, protocol):
    right = requests_for("pose_oracle", photos[:2], draws=2)
    assert len(right) == 4 and all(request.options["boxes"] for request in right)
    window = run(turns_of(server, protocol, "pose_oracle", right, 2), warm_up_s=1, seconds=3)
    assert len(window.answered) > 4 and window.failures == [] and window.per_s > 0 and window.ms(50) > 0
    assert {o.label for o in window.outcomes} == {"pose_oracle"}
    if protocol == "rest":  # TorchServe's gRPC answers carry no headers
        assert window.mean_batch() >= 1

    photo = photos[0]
    wrong = Request(photo.data, options={"boxes": "[[0, 0, 10, 20]]"}, check=lambda answer: "no, never")
    refused = Request(b"not an image")
    with ClosedLoop(turns_of(server, protocol, "pose_oracle", [wrong, refused], 2), turns_each=2) as loop:
        loop.join()
    loop.check()
    assert sorted(o.outcome for o in loop.outcomes) == ["400", "400", "wrong", "wrong"]
    assert all(o.failure for o in loop.outcomes)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_the_closed_loop_sends_whole_sequences_one_frame_at_a_time(server, photos, protocol):
    frames = requests_for("tracker_oracle", photos[:3], draws=1)
    turns = turns_of(server, protocol, "tracker_oracle", frames, 2, sequence_length=5)
    with ClosedLoop(turns, turns_each=2) as loop:
        loop.join()
    loop.check()
    # Two clients, two sequences each, five frames each; a sequence left open would be refused at the limit later.
    assert len(loop.outcomes) == 20 and all(o.outcome == "ok" for o in loop.outcomes), loop.outcomes[:3]


def test_durations_read_as_seconds():
    assert [parse_duration(text) for text in ("90", "90s", "30m", "1h")] == [90, 90, 1800, 3600]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_a_short_locust_run_ends_without_failures_and_with_a_report(server, tmp_path, protocol):
    result = run_locust(server, "pose_oracle", protocol, users=4, duration="10s", report_dir=tmp_path)
    assert result.requests > 5 and result.failures == 0, (tmp_path / "locust.log").read_text()[-2000:]
    assert result.p50_ms > 0 and result.throughput > 0
    report = (tmp_path / "report.html").read_text()
    assert "pose_oracle" in report and ("grpc" in report) == (protocol == "grpc")
    if protocol == "rest":
        assert result.mean_batch_size >= 1  # the server's X-Batch-Size came back


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_locust_drives_concurrent_sequences_of_the_tracker(server, tmp_path, protocol):
    result = run_locust(server, "tracker_oracle", protocol, users=3, duration="12s", report_dir=tmp_path)
    assert result.requests > 30 and result.failures == 0, (tmp_path / "locust.log").read_text()[-2000:]


def test_a_bench_row_lands_at_the_end_of_its_table_and_nowhere_else(tmp_path):
    from loadtest.results import append_table_row

    benchmarks = tmp_path / "benchmarks.md"
    section, header = "## Served", "| x |\n|---|"
    benchmarks.write_text("# Benchmarks\n\n## Decode\n\n| a |\n|---|\n| 1 |\n")
    append_table_row(benchmarks, section, header, "| first |")  # no table yet: the section and its header are made
    benchmarks.write_text(
        benchmarks.read_text() + "\n### A study\n\n| y |\n|---|\n| 3 |\n\n## Later section\n\n| b |\n|---|\n| 2 |\n"
    )
    append_table_row(benchmarks, section, header, "| second |")  # into its own table, not the study's after it
    append_table_row(benchmarks, "## Later section", "| c |\n|---|", "| third |")  # a second table in a section
    lines = benchmarks.read_text().splitlines()
    assert lines.index(section) > lines.index("| 1 |")
    assert lines.index("| first |") == lines.index(section) + 4  # after the header and its rule
    assert lines.index("| second |") == lines.index("| first |") + 1
    assert (
        lines.index("| second |")
        < lines.index("### A study")
        < lines.index("| 3 |")
        < lines.index("## Later section")
        < lines.index("| 2 |")
    )
    assert lines[-5:] == ["| 2 |", "", "| c |", "|---|", "| third |"]


def test_the_rss_slope_and_its_error_are_those_of_least_squares():
    rng = np.random.default_rng(0)
    seconds = np.arange(0, 1800, 30.0)
    swinging = (
        1000 + 0.5 * seconds / 60 + rng.choice([0, 0, 0, 300], seconds.size)
    )  # a leak of 0.5 MB/min under batch peaks
    fit = stats.linregress(seconds / 60, swinging)
    slope, stderr = rss_slope(list(zip(seconds, swinging)))
    assert slope == pytest.approx(fit.slope) and stderr == pytest.approx(fit.stderr)
    assert rss_slope([(0, 1000), (30, 1000), (60, 1000)]) == (0, 0) and rss_slope([(0, 1), (30, 2)]) is None


def test_the_robust_slope_ignores_one_sample_dips_and_finds_a_leak_under_them():
    """An allocator handing memory back shows as single low samples: they swing least squares, not Theil-Sen."""
    seconds = np.arange(0, 1800, 30.0)
    dips = np.isin(np.arange(seconds.size), [3, 8, 12, 17, 22])  # early in the run, as after a warm-up
    flat = np.where(dips, 1000.0, 1340.0)
    leaking = flat + 2.0 * seconds / 60  # 2 MB/min under the same dips
    flat_slope, low, high = robust_rss_slope(list(zip(seconds, flat)))
    assert flat_slope == 0 and low <= 0 <= high
    assert rss_slope(list(zip(seconds, flat)))[0] > 1  # least squares reads early dips as growth
    leak_slope, low, high = robust_rss_slope(list(zip(seconds, leaking)))
    assert leak_slope == pytest.approx(2.0) and low <= 2.0 <= high and low > 1
    assert robust_rss_slope([(0, 1), (30, 2)]) is None
    trend = memory_trend(list(zip(seconds, leaking)), warm_up_s=300)
    assert trend["robust_slope_mb_per_min"] == pytest.approx(2.0) and len(trend["robust_slope_95_mb_per_min"]) == 2


def test_the_soaks_keys_live_as_long_as_the_pods(tmp_path):
    # A 60-minute soak on TorchServe's default lifetime (60 min) got 400 InvalidKeyException for its last 4 minutes.
    assert int(soak_overrides(tmp_path)["token_expiration_min"]) >= 365 * 24 * 60


def test_a_short_soak_of_mixed_models_writes_its_report_and_fails_nothing_outside_the_kill(model_store, tmp_path):
    report_path = tmp_path / "report.json"  # given as its folder, which the soak must accept
    command = [
        sys.executable,
        "-m",
        "loadtest.soak",
        "--models",
        "pose_oracle",
        "segmenter_oracle",
        "--duration",
        "60s",
        "--users",
        "2",
        "--singles",
        "10",
        "--warm-up",
        "10",
        "--interval",
        "5",
        "--kill-at",
        "0.5",
        "--store",
        str(model_store),
        "--no-export",
        "--report",
        str(tmp_path),
        "--no-record",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["answers"] > 50 and report["failures_outside_kill"] == {}, done.stdout
    assert set(report["answers_per_s_by_model"]) == {"pose_oracle", "segmenter_oracle"}
    assert report["mixed_ratio"] > 0 and len(report["per_minute"]) >= 1
    kill = report["kill"]
    assert kill["model"] == "pose_oracle" and kill["ready_s"] is not None and kill["ready_s"] < 60
    assert "frontend" in report["memory"] and any(name.startswith("pose_oracle worker") for name in report["memory"])
    if shutil.which(
        "jstat"
    ):  # a JDK's: the frontend's heap, whose old generation would grow with a leak in the frontend
        heap = report["frontend_heap"]
        assert (
            set(heap) == {"committed", "old generation used"}
            and 0 < heap["old generation used"]["last_mb"] < heap["committed"]["last_mb"]
        )
    assert report["log_bytes"] >= 0 and "answers/s" in done.stdout
    assert report["priming_rounds"] == 2 and "priming: 2 rounds" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine make gpu-check runs the check itself")
def test_the_gpu_check_skips_cleanly_without_a_gpu():
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.gpu_check", "--budget", "5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA device here" in done.stdout and "skipped" in done.stdout


def test_the_worker_protocol_bench_reads_what_torchserves_worker_reads():
    """Its frame is one TorchServe's worker parses, and each of its readers gets the same request from it."""
    body = bytes(range(256)) * 1000
    frame = predict_frame(body, "image/jpeg")
    receiving, sending = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with receiving, sending:
        sender = threading.Thread(target=sending.sendall, args=(frame * 3,))  # more than the socket holds
        sender.start()
        command, (request,) = retrieve_msg(receiving)
        assert command == b"I" and request["parameters"][0]["value"] == body
        assert {"name": b"content-length", "value": str(len(body)).encode()} in request["headers"]
        (copied,) = read_one_copy(receiving, len(frame))()["batch"]
        _, (buffered,) = retrieve_msg(BufferedSocket(receiving))
        sender.join()
    for other in (copied, buffered):
        assert other["headers"] == request["headers"] and other["requestId"] == request["requestId"]
        assert [(p["name"], p["contentType"], bytes(p["value"])) for p in other["parameters"]] == [
            (p["name"], p["contentType"], p["value"]) for p in request["parameters"]
        ]
