"""The serving stack's CPU cost per request (issue 11): every handler family around a near-free stand-in model.

    python -m loadtest.bench_stack [--rows pose detector ...] [--images jpeg640 ...] [--window 20]
        [--clients 12] [--allocator tuned|glibc|jemalloc=PATH|tcmalloc=PATH] [--set key=value ...] [--jvm=OPTION ...]

On a GPU node the model is cheap; the CPU each request costs around it decides how many
requests a node answers. One TorchServe (production config, loopback ports) serves every
family's real handler and config around a stand-in model (tests/fixtures/standins.py) plus a
handler that answers ``{}`` without reading the body ("TorchServe alone"). For each row
and photo, ``--clients`` closed-loop clients send the same photo back to back; after a
warm-up, the CPU time the operating system accounts to TorchServe's processes (front end,
workers and the children they waited for) over ``--window`` seconds is divided by the
requests answered in it. The clients share the cores but are not counted.

Each row's headline is that cost in units of one full-size OpenCV decode of the same photo
timed in this run (one thread, tuned allocator): machine-independent, unlike milliseconds.
A breakdown per stage (read, decode, pre-processing, model, post-processing, encoding) comes
from the same handler run in this process on batches of the served size.
"""

import argparse
import ctypes
import shlex
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from export.archive import write_archive
from export.recipe import POSE_SERVING
from handlers.core.stages import CLOCK, STAGES
from loadtest.accounting import cost_per_answer
from loadtest.load import Request, grpc_turns, rest_turns, v2_grpc_request, v2_grpc_turns, v2_request
from loadtest.machine import describe_machine
from loadtest.photos import Photo, photo
from loadtest.results import write_report
from runtime.torchserve import ALLOCATOR_ENVIRONMENT, REPO, WORKER_ENVIRONMENT, TorchServe, loopback_overrides
from tests.fixtures.in_process import load_handler
from tests.fixtures.standins import ALONE, alone_package, standin_packages

# Issue 11's targets, in full decodes of the same JPEG: at 640x480 and at 1920x1080.
POSE_TARGETS, JSON_TARGETS, PICTURE_TARGETS = (
    {"jpeg640": 2.0, "jpeg1920": 0.8},
    {"jpeg640": 2.5, "jpeg1920": 1.2},
    {"jpeg640": 3.5, "jpeg1920": 2.5},
)


@dataclass(frozen=True)
class Row:
    """One line of the table: a served model, the options its requests carry, and its targets."""

    name: str
    model: str
    options: dict[str, str] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    # How it is sent: "predictions" (REST), "grpc" (our client's Predictions call), or the Open Inference Protocol as
    # tritonclient sends it, "v2" (REST, the binary extension) or "v2_grpc" (ModelInfer, raw_input_contents).
    protocol: str = "predictions"

    def request(self, photo: Photo) -> Request:
        """What each of the row's requests carries."""
        if self.protocol == "v2":
            return v2_request(photo.data, self.options)
        if self.protocol == "v2_grpc":
            return v2_grpc_request(self.model, photo.data, self.options)
        return Request(photo.data, photo.content_type, self.options)

    def turns(self, server: TorchServe, photo: Photo, clients: int) -> list:
        """The closed-loop clients that send the row's requests to ``server``."""
        token = server.token("inference")
        if self.protocol == "v2_grpc":
            return v2_grpc_turns(server.grpc_target, token, [self.request(photo)], clients)
        if self.protocol == "grpc":
            return grpc_turns(server.grpc_target, token, self.model, [self.request(photo)], clients)
        path = f"/v2/models/{self.model}/infer" if self.protocol == "v2" else f"/predictions/{self.model}"
        return rest_turns(f"{server.inference_url}{path}", token, [self.request(photo)], clients)


ROWS = {
    "alone": Row("TorchServe alone", ALONE),
    "pose": Row("pose (whole image)", "pose_standin", targets=POSE_TARGETS),
    "pose_pipeline": Row("pose_pipeline (3 people)", "pose_pipeline_standin", targets=JSON_TARGETS),
    "blazepose": Row("pose_blazepose (3 people)", "blazepose_standin", targets=JSON_TARGETS),
    "detector": Row("person detector", "detector_standin", targets=JSON_TARGETS),
    "keypoint_rcnn": Row("keypoint_rcnn", "keypoint_rcnn_standin", targets=JSON_TARGETS),
    "segmenter": Row("segmenter mask (JSON)", "segmenter_standin", targets=JSON_TARGETS),
    "cutout": Row("segmenter cut-out (PNG)", "segmenter_standin", {"background": "transparent"}, PICTURE_TARGETS),
    "cutout_stored": Row(
        "segmenter cut-out (PNG, stored)",
        "segmenter_standin",
        {"background": "transparent", "png_compression": "0"},
        PICTURE_TARGETS,
    ),
    "cutout_webp": Row(
        "segmenter cut-out (lossless WebP)",
        "segmenter_standin",
        {"background": "transparent", "format": "webp"},
        PICTURE_TARGETS,
    ),
    "selfie": Row("selfie mask (JSON, person gate)", "selfie_standin", targets=JSON_TARGETS),
    "pose_v2": Row("pose (whole image), v2", "pose_standin", targets=POSE_TARGETS, protocol="v2"),
    "pose_grpc": Row("pose (whole image), gRPC", "pose_standin", targets=POSE_TARGETS, protocol="grpc"),
    "pose_v2_grpc": Row("pose (whole image), v2 gRPC", "pose_standin", targets=POSE_TARGETS, protocol="v2_grpc"),
    "cutout_v2": Row(
        "segmenter cut-out (PNG), v2",
        "segmenter_standin",
        {"background": "transparent"},
        PICTURE_TARGETS,
        protocol="v2",
    ),
    "cutout_grpc": Row(
        "segmenter cut-out (PNG), gRPC",
        "segmenter_standin",
        {"background": "transparent"},
        PICTURE_TARGETS,
        protocol="grpc",
    ),
    "cutout_v2_grpc": Row(
        "segmenter cut-out (PNG), v2 gRPC",
        "segmenter_standin",
        {"background": "transparent"},
        PICTURE_TARGETS,
        protocol="v2_grpc",
    ),
    "style": Row("style (JPEG)", "style_standin", targets=PICTURE_TARGETS),
    "pix2pix": Row("pix2pix (JPEG; 256x256 model, answer resized back)", "pix2pix_standin", targets=PICTURE_TARGETS),
}


def photos() -> dict[str, Photo]:
    """The astronaut as JPEG at three sizes and as a PNG (loadtest/photos.py)."""
    shots = {f"jpeg{w}": photo("astronaut", w, h) for w, h in ((640, 480), (1280, 720), (1920, 1080))}
    shots["png640"] = photo("astronaut", 640, 480, "PNG")
    return shots


def tune_this_process_allocator() -> None:
    """The workers' malloc thresholds (runtime/torchserve.py) in this process, so reference decodes are timed alike."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters (malloc.h)
    libc.mallopt(m_mmap_threshold, int(ALLOCATOR_ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]))
    libc.mallopt(m_trim_threshold, int(ALLOCATOR_ENVIRONMENT["MALLOC_TRIM_THRESHOLD_"]))


def full_decode_ms(photo: Photo, repeats: int = 200) -> float:
    """Median ms of one full-size OpenCV decode of ``photo`` on one thread."""
    buffer = np.frombuffer(photo.data, np.uint8)
    cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


@dataclass
class Measured:
    """One row at one photo."""

    core_ms: float
    requests_per_s: float
    stages: dict[str, float]


def measure_served(
    server: TorchServe, row: Row, photo: Photo, clients: int, warm_up_s: float, window_s: float
) -> tuple[float, float, float]:
    """Server CPU core-ms per answered request (the frontend's, the rest's) and requests/s, over ``window_s`` of steady
    load."""
    turns = row.turns(server, photo, clients)
    try:
        return cost_per_answer(server, turns, warm_up_s, window_s)
    except RuntimeError as error:
        raise RuntimeError(f"{row.model} on {photo.label}: {error}") from error


def measure_in_process(archive: Path, row: Row, photo: Photo, batches: int = 30) -> dict[str, float]:
    """Mean ms per request of each handler stage, on full batches of ``photo`` in this process."""
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as work:
        zipfile.ZipFile(archive).extractall(work)
        config = yaml.safe_load((Path(work) / "model-config.yaml").read_text())
        handler, context, request_processor = load_handler(Path(work), config)

        size = config["batchSize"]
        request = row.request(photo)
        headers = {
            "body": {"content-type": request.content_type},
            **{f"X-Option-{k}": v for k, v in request.options.items()},
            **request.headers,
        }
        totals = dict.fromkeys(STAGES, 0.0)
        # The first calls warm caches and the allocator up; handle() restarts the clock.
        for repeat in range(batches + 3):
            context.request_processor = [request_processor(headers) for _ in range(size)]
            handler.handle([{"body": bytearray(request.body)} for _ in range(size)], context)
            if repeat >= 3:
                for stage, milliseconds in CLOCK.take().items():
                    totals[stage] += milliseconds
    return {stage: total / (batches * size) for stage, total in totals.items()}


def worker_environment(allocator: str, more: list[str]) -> dict[str, str]:
    """The environment TorchServe and its workers get: runtime/torchserve.py's, with ``--allocator`` and ``--env`` applied."""
    environment = {
        name: value
        for name, value in WORKER_ENVIRONMENT.items()
        if name not in ALLOCATOR_ENVIRONMENT and name != "LD_PRELOAD"
    }
    if allocator == "tuned":
        environment.update(ALLOCATOR_ENVIRONMENT)
    elif allocator != "glibc":
        name, _, library = allocator.partition("=")
        if name not in ("jemalloc", "tcmalloc") or not Path(library).exists():
            raise SystemExit(
                f"--allocator {allocator}: expected tuned, glibc, jemalloc=PATH or tcmalloc=PATH to an existing library"
            )
        environment["LD_PRELOAD"] = library
    return {**environment, **dict(item.split("=", 1) for item in more)}


def table(results: dict[tuple[str, str], Measured], decode_ms: dict[str, float], shots: dict[str, Photo]) -> str:
    """The markdown table: one line per row and photo."""
    lines = [
        "| handler | photo | server CPU ms / request | **x full decode** | target | x TorchServe alone | requests/s | read | decode | pre | model | post | encode |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (row_key, shot_key), measured in results.items():
        row, alone = ROWS[row_key], results.get(("alone", shot_key))
        decodes = measured.core_ms / decode_ms[shot_key]
        target = row.targets.get(shot_key)
        met = "" if target is None else f"<= {target:g} " + ("met" if decodes <= target else "**missed**")
        stages = " | ".join(
            f"{measured.stages.get(s, 0):.2f}"
            for s in ("read", "decode", "preprocess", "model", "postprocess", "encode")
        )
        versus_alone = f"{measured.core_ms / alone.core_ms:.1f}" if alone else "n/a"
        lines.append(
            f"| {row.name} | {shots[shot_key].label} | {measured.core_ms:.2f} | **{decodes:.2f}** | {met} | {versus_alone} "
            f"| {measured.requests_per_s:.0f} | {stages} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument(
        "--images",
        nargs="+",
        choices=["jpeg640", "jpeg1280", "jpeg1920", "png640"],
        default=["jpeg640", "jpeg1280", "jpeg1920", "png640"],
    )
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--warm-up", type=float, default=4.0, help="seconds of load before each window")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of load each figure is measured over")
    parser.add_argument(
        "--allocator",
        default="tuned",
        help="tuned (glibc thresholds, the default), glibc, jemalloc=PATH or tcmalloc=PATH",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per worker (default: the recipe's, torch's one per core)"
    )
    parser.add_argument(
        "--env", nargs="*", default=[], metavar="NAME=VALUE", help="more environment for TorchServe and its workers"
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="TorchServe properties over the production config"
    )
    parser.add_argument(
        "--jvm",
        action="append",
        default=[],
        metavar="OPTION",
        help="a JVM option after the production vmargs (repeat; write --jvm=-XX:...)",
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process per-stage timing")
    args = parser.parse_args()
    rows = ["alone", *[r for r in args.rows if r != "alone"]]  # every ratio needs TorchServe alone
    settings = dict(item.split("=", 1) for item in args.set)

    tune_this_process_allocator()
    cv2.setNumThreads(1)
    shots = {key: photo for key, photo in photos().items() if key in args.images}
    decode_ms = {key: full_decode_ms(photo) for key, photo in shots.items()}
    results: dict[tuple[str, str], Measured] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as work:
        store = Path(work) / "store"
        serving = replace(POSE_SERVING, threads=args.threads)
        packages = [alone_package(serving), *standin_packages(serving)]
        archives = {package.name: write_archive(package, store) for package in packages}
        models = sorted({ROWS[r].model for r in rows})
        server = TorchServe(
            Path(work) / "run",
            models,
            store,
            overrides={**loopback_overrides(store), **settings},
            environment=worker_environment(args.allocator, args.env),
            jvm_options=args.jvm,
        )
        with server.running(600):
            for row_key in rows:
                for shot_key, photo in shots.items():
                    frontend_ms, others_ms, rate = measure_served(
                        server, ROWS[row_key], photo, args.clients, args.warm_up, args.window
                    )
                    core_ms = frontend_ms + others_ms
                    results[row_key, shot_key] = Measured(core_ms, rate, {})
                    print(
                        f"{ROWS[row_key].name:28s} {photo.label:14s} {core_ms:6.2f} core-ms/request = {core_ms / decode_ms[shot_key]:.2f} full decodes ({decode_ms[shot_key]:.2f} ms), {rate:.0f} requests/s",
                        flush=True,
                    )
        if not args.no_breakdown:
            torch.set_num_threads(1)
            for (row_key, shot_key), measured in results.items():
                if row_key != "alone":
                    measured.stages = measure_in_process(archives[ROWS[row_key].model], ROWS[row_key], shots[shot_key])

    command = "make bench-stack" + (f" BENCH_ARGS={shlex.quote(shlex.join(sys.argv[1:]))}" if sys.argv[1:] else "")
    report = (
        f"Command: `{command}`, {time.strftime('%Y-%m-%d %H:%M')}. Machine: {describe_machine(torch.device('cpu'))}.\n"
        f"Allocator: {args.allocator}; more environment: {args.env or 'none'}; TorchServe settings over config.properties: {settings or 'none'}; JVM options after its vmargs: {args.jvm or 'none'}; {args.clients} clients, "
        f"{args.window:g} s windows after {args.warm_up:g} s warm-up; batch {POSE_SERVING.batch_size}, delay {POSE_SERVING.max_batch_delay_ms} ms, 1 worker.\n"
        f"Full-size OpenCV decode, one thread: "
        + ", ".join(f"{shots[k].label} {v:.2f} ms" for k, v in decode_ms.items())
        + ".\n"
        f"Stage columns: ms per request of the handler run in this process (1 torch thread, batches of {POSE_SERVING.batch_size}).\n\n"
        + table(results, decode_ms, shots)
    )
    print("\n" + report)
    figures = {
        f"{row_key} {shot_key}": {"core_ms": m.core_ms, "requests_per_s": m.requests_per_s, "stages": m.stages}
        for (row_key, shot_key), m in results.items()
    }
    path = write_report("bench-stack", {"command": command, "decode_ms": decode_ms, "results": figures}, report)
    print(f"\nwritten to {path.relative_to(REPO)} and its .md")


if __name__ == "__main__":
    main()
