"""Detect-then-pose two ways on the same inputs: one handler holding both models, or a TorchServe workflow.

Both setups serve the same TorchScript models through TorchServe with the real handlers,
one setup at a time, under the same closed-loop load (CLIENTS concurrent clients for
DURATION seconds, painted JPEG photos of several sizes with 1 to 3 people each).

The detector runs a real detector network's full compute (random weights unless the torch
cache holds torchvision's) but answers with the people painted in the photo: untrained
detectors find nobody, which would leave the pose stage idle. The pose model is the real
pose_resnet50 (random weights unless checkpoints/ has the release). So the timings are
those of the real networks on a realistic number of people per photo.

    python -m loadtest.bench_pipeline [--detector person_detector_mobilenet] [--clients 4] [--duration 60]
"""

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from export.archive import Part, write_archive
from export.pose_pipeline import write_workflow
from export.registry import RECIPES
from humanserve_client import Answer
from loadtest.load import Check, Request, rest_turns, run
from loadtest.machine import describe_machine
from runtime.torchserve import TorchServe, loopback_overrides
from tests.fixtures.oracles import ORACLE_WEIGHTS, PERSON_FRAMES, DetectorOracle, paint_frames, paint_people

PHOTOS = [  # (width, height, regions holding each person's joints)
    (640, 480, [[40, 60, 200, 400], [400, 40, 560, 380]]),
    (1280, 720, [[80, 100, 330, 650], [520, 60, 760, 600], [950, 120, 1200, 680]]),
    (480, 800, [[120, 150, 330, 700]]),
]


class CostedDetector(nn.Module):
    """A real detector's full compute, answering with the people painted in the photo."""

    def __init__(self, detector: nn.Module, painted: nn.Module):
        super().__init__()
        self.detector = detector
        self.painted = painted

    def forward(self, images: list[Tensor]) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        self.detector(images)
        return self.painted(images)


def photo_jpegs() -> list[tuple[bytes, int]]:
    """Each benchmark photo as JPEG bytes, with its number of people."""
    from tests.fixtures.serving import encode

    jpegs = []
    for seed, (width, height, regions) in enumerate(PHOTOS):
        painted = paint_people(width, height, regions, seed)
        frames = [
            ([x1 - 10, y1 - 10, x2 + 10, y2 + 10], PERSON_FRAMES[p]) for p, (x1, y1, x2, y2) in enumerate(regions)
        ]
        paint_frames(painted.image, frames)
        jpegs.append((encode(painted.image, "JPEG"), len(regions)))
    return jpegs


def build_store(store: Path, detector_model: str) -> None:
    """The archives both setups serve: costed detector, pose_resnet50, the pipeline of both, the workflow."""
    detector_part = RECIPES[detector_model].parts[0].make()
    costed = Part(
        "detector",
        CostedDetector(detector_part.module, DetectorOracle()),
        detector_part.example_inputs,
        {**ORACLE_WEIGHTS, "compute": {detector_model: detector_part.weights}},
        "script",
        check_batch=2,
    )
    pose_part = RECIPES["pose_resnet50"].parts[0].make()
    write_archive(replace(RECIPES["person_detector"].package((costed,)), name="bench_detector"), store)
    write_archive(RECIPES["pose_resnet50"].package((pose_part,)), store)
    pipeline_parts = (costed, Part("pose", pose_part.module, pose_part.example_inputs, pose_part.weights))
    pipeline = RECIPES["pose_pipeline"].package(pipeline_parts)
    write_archive(pipeline, store)
    write_archive(replace(pipeline, name="pose_pipeline_2w", serving=replace(pipeline.serving, workers=2)), store)
    write_workflow(store, detector="bench_detector", pose="pose_resnet50")


# name: (models to load, register the workflow, path)
SETUPS = {
    "single": (["pose_pipeline"], False, "predictions/pose_pipeline"),
    "single-2-workers": (["pose_pipeline_2w"], False, "predictions/pose_pipeline_2w"),
    "workflow": ([], True, "wfpredict/pose_pipeline_workflow"),
}
DESCRIPTIONS = {
    "single": "single handler, 1 worker",
    "single-2-workers": "single handler, 2 workers",
    "workflow": "workflow, 1 worker per model",
}


def requests_of(jpegs: list[tuple[bytes, int]]) -> list[Request]:
    """Each photo as a request whose answer must hold its people."""

    def check(people: int) -> Check:
        def problem(answer: Answer) -> str | None:
            found = len(answer.json()["people"])
            return None if found == people else f"{found} people, {people} painted"

        return problem

    return [Request(data, "image/jpeg", check=check(people)) for data, people in jpegs]


def serve(store: Path, run_dir: Path, models: list[str], workflow: bool) -> TorchServe:
    """The production config on free loopback ports (token auth on), serving ``models`` or the workflow."""
    server = TorchServe(run_dir, models, store, overrides={**loopback_overrides(store), "load_models": ""})
    server.start()
    server.wait_ready(600)
    if workflow:
        server.register_workflow("pose_pipeline_workflow")
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--detector", default="person_detector_mobilenet", choices=["person_detector", "person_detector_mobilenet"]
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (closed loop)")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    args = parser.parse_args()
    requests = requests_of(photo_jpegs())
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
        store = Path(work) / "store"
        build_store(store, args.detector)
        rows = []
        for name in args.setups:
            models, workflow, path = SETUPS[name]
            server = serve(store, Path(work) / name, models, workflow)
            try:
                turns = rest_turns(f"{server.inference_url}/{path}", server.token("inference"), requests, args.clients)
                rows.append((DESCRIPTIONS[name], run(turns, 10, args.duration)))
            finally:
                server.stop()
    print(f"Machine: {describe_machine(torch.device('cpu'))}")
    print(f"Detector network: {args.detector}; pose: pose_resnet50; batch size 4, delay 20 ms;")
    print(
        f"{args.clients} clients, closed loop, {args.duration:.0f} s after a 10 s warm-up; JPEG photos 640x480 (2 people), 1280x720 (3), 480x800 (1)\n"
    )
    print("| setup | requests | failures | throughput img/s | p50 ms | p95 ms | mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, window in rows:
        batch = window.mean_batch()  # workflow answers do not carry X-Batch-Size
        print(
            f"| {name} | {len(window.answered)} | {len(window.failures)} | {window.per_s:.2f} | {window.ms(50):.0f} "
            f"| {window.ms(95):.0f} | {'n/a' if batch is None else f'{batch:.1f}'} |"
        )


if __name__ == "__main__":
    main()
