"""One prepared check for a GPU machine (issue 37): short, because GPU time is scarce and a machine takes minutes to start.

    make gpu-check        # python -m loadtest.gpu_check [--budget 480] [EXPORT FLAGS: the Makefile's GPU_SERVING]

Where torch sees no CUDA device it says so and exits 0 (CI, CPU machines: nothing to check). On a GPU:

1. the GPU-only tests: nvJPEG decodes against the CPU's (tests/test_images.py, tests/test_fuzz.py) and the CUDA
   ``.pt2`` packages of pose and a whole-image model against the CPU ones built from the same weights
   (tests/test_cuda_packages.py);
2. pose_resnet50's CUDA archive (``python -m export ... --device cuda`` with the GPU overlay's serving flags, random
   weights where the machine reaches none, as it says) served by TorchServe (production config, loopback ports);
3. for the astronaut at 640x480 and 1920x1080 JPEG: answers/s at saturation and the server's CPU core-ms per answer
   (the serving stack's cost that ``make bench-stack`` measures around stand-ins, here around the real model on the
   GPU), also in full CPU decodes of the same photo;
4. the rows written to loadtest/results/<time>-gpu-check.md (and .json), to copy into docs/benchmarks.md.

Each step prints its seconds; a step that would start past the budget is skipped, saying so, and the command fails.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from loadtest.accounting import cost_per_answer
from loadtest.bench_stack import full_decode_ms
from loadtest.load import Request, rest_turns
from loadtest.machine import describe_machine
from loadtest.photos import photo
from loadtest.results import write_report
from runtime.torchserve import REPO, TorchServe, loopback_overrides

MODEL = "pose_resnet50"
GPU_TESTS = ["tests/test_cuda_packages.py", "tests/test_images.py", "tests/test_fuzz.py", "-k", "cuda"]


class Budget:
    """The check's seconds: each step asks before it starts, with what it may take at most."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, step: str, needs_s: float) -> bool:
        if self.left() >= needs_s:
            return True
        self.skipped.append(step)
        print(f"gpu-check: SKIPPED {step}: {self.left():.0f} s left of the budget, it needs about {needs_s:.0f} s")
        return False


def timed(step: str, command: list[str], timeout_s: float) -> int:
    """Run ``command`` from the repository root, printing its seconds; its exit status (124 past ``timeout_s``)."""
    start = time.monotonic()
    print(f"gpu-check: {step}: {' '.join(command)}", flush=True)
    try:
        status = subprocess.run(command, cwd=REPO, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
        status = 124
    print(f"gpu-check: {step}: exit {status} after {time.monotonic() - start:.0f} s", flush=True)
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole check")
    parser.add_argument("--clients", type=int, default=64, help="closed-loop clients (twice the GPU batch)")
    parser.add_argument("--window", type=float, default=15, help="seconds each figure is measured over")
    args, export_flags = parser.parse_known_args()
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device here ({describe_machine(torch.device('cpu'))}): nothing to check; skipped.")
        return
    budget = Budget(args.budget)
    device = torch.device("cuda")
    failed = []
    if budget.allows("the GPU-only tests", 120):
        tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *GPU_TESTS]
        if timed("GPU-only tests", tests, budget.left() - 120) != 0:
            failed.append("the GPU-only tests")
    rows, report = [], {"machine": describe_machine(device), "model": MODEL, "rows": []}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        store = Path(work) / "store"
        export = [sys.executable, "-m", "export", MODEL, "--store", str(store), *export_flags]
        if budget.allows("the CUDA export", 100) and timed("CUDA export", export, budget.left() - 60) != 0:
            failed.append("the CUDA export")
        shots = [photo("astronaut", 640, 480), photo("astronaut", 1920, 1080)]
        needs_s = 40 + len(shots) * (args.window + 5)
        if (store / f"{MODEL}.mar").exists() and budget.allows("the served figures", needs_s):
            server = TorchServe(Path(work) / "run", [MODEL], store, overrides=loopback_overrides(store))
            with server.running(timeout=min(300, budget.left())):
                url = f"{server.inference_url}/predictions/{MODEL}"
                for shot in shots:
                    turns = rest_turns(
                        url, server.token("inference"), [Request(shot.data, shot.content_type)], args.clients
                    )
                    frontend_ms, others_ms, rate = cost_per_answer(server, turns, 5, args.window)
                    decode_ms = full_decode_ms(shot)
                    core_ms = frontend_ms + others_ms
                    row = {
                        "photo": shot.label,
                        "answers_per_s": rate,
                        "core_ms": core_ms,
                        "decodes": core_ms / decode_ms,
                    }
                    report["rows"].append(row)
                    rows.append(
                        f"| {MODEL} (CUDA .pt2) | {shot.label} | {rate:.0f} | {core_ms:.2f} | **{core_ms / decode_ms:.2f}** |"
                    )
    text = "\n".join(
        [
            f"Command: `make gpu-check`, {time.strftime('%Y-%m-%d %H:%M')}. Machine: {report['machine']}.",
            f"Export flags: {' '.join(export_flags) or 'none'}; {args.clients} clients, {args.window:g} s windows.",
            "",
            "| model | photo | answers/s | server CPU ms / answer | **x full decode** |",
            "|---|---|---:|---:|---:|",
            *rows,
            "",
            f"Failed: {', '.join(failed) or 'nothing'}. Skipped for time: {', '.join(budget.skipped) or 'nothing'}.",
        ]
    )
    print(text)
    print(f"written to {write_report('gpu-check', {**report, 'failed': failed, 'skipped': budget.skipped}, text)}")
    if failed or budget.skipped:
        sys.exit(1)


if __name__ == "__main__":
    main()
