"""Pose tracking served by TorchServe: accuracy on synthetic videos, frames/s with concurrent sequences, a memory soak.

All three serve ``tracker_oracle``: the real tracking handler and tracker with the oracle
detector and pose models (tests/fixtures/oracles.py), archived with ``pose_tracker``'s own serving
and tracking settings. The oracles cost little, so the load figures are those of the
serving stack and the tracker, not of the networks (``make bench MODEL=pose_tracker``
times those).

- Accuracy: each scene of tests/fixtures/videos.py (people on known paths: apart, hidden for 5
  frames, crossing, walking out and back in) as one sequence, over REST and a gRPC
  stream: MOTA, IDF1 and ID switches (py-motmetrics).
- Load: N sequences at once, each a client streaming 30-frame videos back to back over
  gRPC, one frame in flight: frames/s in all and latency per frame, for each N.
- Abandoned sequences (``--abandoned N ...``): on a fresh server each time, N sequences are
  opened with one REST frame each and never ended (a crashed client), then, once they have
  idled past ``humanserve_sequence_min_idle_ms``, 4 live streams run as in Load: frames/s and
  latency against the same load with none abandoned (0 in the list).
- Soak (``--soak MINUTES``): 20 sequences for that long; the worker's resident memory every
  30 s, and its growth from the first sample after a minute's warm-up.

    python -m loadtest.bench_tracking [--sequences 1 4 16] [--duration 30] [--abandoned 0 128] [--soak 30]
"""

import argparse
import collections
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import requests
import torch

from export.archive import write_archive
from export.pose_tracker import TRACKING_CONFIG
from export.registry import RECIPES
from humanserve_client import GrpcClient, RestClient
from humanserve_client.client import SEQUENCE_HEADER
from loadtest.accounting import MemorySampler
from loadtest.load import Request, grpc_turns, run
from loadtest.machine import describe_machine
from runtime.torchserve import TorchServe, loopback_overrides
from tests.fixtures.oracles import oracle_packages
from tests.fixtures.serving import encode
from tests.fixtures.videos import SCENES, mot_scores, paint_video

MODEL = "tracker_oracle"
FRAMES_PER_VIDEO = 30


def build_store(store: Path) -> None:
    """The oracle tracker, with pose_tracker's serving (batch, delay, sequence limits) and tracking settings."""
    (package,) = [p for p in oracle_packages() if p.name == MODEL]
    tracker = RECIPES["pose_tracker"]
    write_archive(
        replace(
            package, serving=tracker.serving, handler_config={**package.handler_config, "tracking": TRACKING_CONFIG}
        ),
        store,
    )


def accuracy(rest: RestClient, remote: GrpcClient) -> list[str]:
    """A table row per scene and protocol."""
    rows = []
    for scene, (walkers, count) in SCENES.items():
        video = paint_video(320, 240, walkers, count, seed=len(scene))
        images = [encode(frame.image, "PNG") for frame in video]
        for protocol, client in (("REST", rest), ("gRPC", remote)):
            answers = [answer.json()["people"] for answer in client.stream(MODEL, [(image, {}) for image in images])]
            scores = mot_scores(video, answers)
            rows.append(
                f"| {scene} | {protocol} | {count} | {scores['mota']:.3f} | {scores['idf1']:.3f} | {scores['id_switches']} |"
            )
    return rows


def load(target: str, images: list[bytes], sequences: int, duration: float) -> dict:
    """``sequences`` concurrent streams of 30-frame videos for ``duration`` s: frames/s, latency percentiles, failures."""
    turns = grpc_turns(
        target, None, MODEL, [Request(image) for image in images], sequences, sequence_length=FRAMES_PER_VIDEO
    )
    window = run(turns, 0, duration)
    return {
        "frames": len(window.answered),
        "fps": window.per_s,
        **{f"p{q}": window.ms(q) for q in (50, 95, 99)},
        "failures": len(window.failures),
    }


def abandon(url: str, image: bytes, count: int) -> collections.Counter:
    """Open ``count`` sequences with one frame each and never end them; the answers' status codes."""
    codes: collections.Counter = collections.Counter()
    with requests.Session() as session:
        for _ in range(count):
            headers = {"Content-Type": "image/jpeg", SEQUENCE_HEADER: f"abandoned-{uuid.uuid4().hex}"}
            codes[session.post(url, data=image, headers=headers, timeout=120).status_code] += 1
    return codes


def abandoned_row(store: Path, run_dir: Path, images: list[bytes], abandoned: int, duration: float) -> str:
    """A fresh server: ``abandoned`` sequences left open, then 4 live streams for ``duration`` s; a table row."""
    server = TorchServe(
        run_dir, [MODEL], store, overrides={**loopback_overrides(store), "disable_token_authorization": "true"}
    )
    with server.running(timeout=300):
        target = server.grpc_target
        load(target, images, 2, 5)  # warm-up
        codes = abandon(f"{server.inference_url}/predictions/{MODEL}", images[0], abandoned)
        time.sleep(float(server.properties.get("humanserve_sequence_min_idle_ms", 10_000)) / 1000 + 1)
        result = load(target, images, 4, duration)
    refused = sum(count for code, count in codes.items() if code != 200)
    return (
        f"| {abandoned} ({refused} refused) | 4 | {result['fps']:.1f} | {result['p50']:.0f} | {result['p99']:.0f} "
        f"| {result['frames']} | {result['failures']} |"
    )


def soak(server: TorchServe, target: str, images: list[bytes], minutes: float, sequences: int = 20) -> list[str]:
    """``sequences`` streams for ``minutes``; the worker's memory every 30 s, and its growth after a minute's
    warm-up."""
    sampler = MemorySampler(server, [MODEL], 30, time.time())
    sampler.start()
    result = load(target, images, sequences, minutes * 60)
    sampler.stopped.set()
    sampler.join()
    # pose_tracker's serving has one worker: its series (in MiB) is the longest but the frontend's.
    samples = max((series for name, series in sampler.samples.items() if name != "frontend"), key=len)
    after_warm_up = [mb for at, mb in samples if at >= 60] or [samples[-1][1]]
    growth = (after_warm_up[-1] - after_warm_up[0]) / after_warm_up[0] * 100
    lines = [
        f"{sequences} sequences for {minutes:g} min: {result['frames']} frames, {result['fps']:.1f} frames/s, "
        f"p50 {result['p50']:.0f} ms, p95 {result['p95']:.0f} ms, {result['failures']} failures",
        f"worker RSS after the first minute: {after_warm_up[0]:.0f} MiB -> {after_warm_up[-1]:.0f} MiB "
        f"({growth:+.1f} %), peak {max(mb for _, mb in samples):.0f} MiB; samples (s, MiB): "
        + ", ".join(f"{at:.0f}:{mb:.0f}" for at, mb in samples),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, nargs="+", default=[1, 4, 16], help="concurrent sequences to measure")
    parser.add_argument("--duration", type=float, default=30, help="seconds per load point")
    parser.add_argument("--soak", type=float, default=0, help="minutes of the 20-sequence soak (0: none)")
    parser.add_argument(
        "--abandoned",
        type=int,
        nargs="*",
        default=[0, 128],
        help="sequences left open before 4 live ones (2 x maxNumSequence: 128)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as work:
        store, run_dir = Path(work) / "store", Path(work) / "run"
        build_store(store)
        overrides = {**loopback_overrides(store), "disable_token_authorization": "true"}
        server = TorchServe(run_dir, [MODEL], store, overrides=overrides)
        with server.running(timeout=300):
            target = server.grpc_target
            rest, remote = RestClient(server.inference_url), GrpcClient(target)
            print(
                f"Machine: {describe_machine(torch.device('cpu'))}; serving {MODEL} with pose_tracker's settings "
                f"(batch {RECIPES['pose_tracker'].serving.batch_size}, 1 worker)\n"
            )
            print("| scene | protocol | frames | MOTA | IDF1 | ID switches |\n|---|---|---|---|---|---|")
            print("\n".join(accuracy(rest, remote)))
            images = [encode(frame.image, "JPEG") for frame in paint_video(320, 240, *SCENES["apart"])]
            load(target, images, 2, 10)  # warm-up
            print(
                "\n| concurrent sequences | frames/s | p50 ms | p95 ms | frames | failures |\n|---|---|---|---|---|---|"
            )
            for sequences in args.sequences:
                result = load(target, images, sequences, args.duration)
                print(
                    f"| {sequences} | {result['fps']:.1f} | {result['p50']:.0f} | {result['p95']:.0f} | {result['frames']} | {result['failures']} |",
                    flush=True,
                )
            if args.soak:
                print("\n" + "\n".join(soak(server, target, images, args.soak)))
        if args.abandoned:
            print(
                "\n| abandoned sequences | live sequences | frames/s | p50 ms | p99 ms | frames | failures |\n|---|---|---|---|---|---|---|"
            )
            for count in args.abandoned:
                print(
                    abandoned_row(store, Path(work) / f"run-abandoned-{count}", images, count, args.duration),
                    flush=True,
                )


if __name__ == "__main__":
    main()
