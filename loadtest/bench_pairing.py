"""Pose pairing at scale: ``make bench-pairing`` (BENCH_ARGS: --patches N --views V --top K --unique-patches N).

Writes two synthetic patch sets of N patches each (random poses, boxes and joint scores,
spread over V views) as ``humanserve patches`` would, then times ``humanserve pair`` on
them: reading both CSVs, pairing, writing the pairs. Also times ``--unique`` on smaller
sets. Appends a row to docs/benchmarks.md.
"""

import argparse
import csv
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from humanserve_client.pairing import PATCH_COLUMNS, pair_files
from loadtest.machine import describe_machine
from loadtest.results import append_table_row
from runtime.torchserve import REPO

BENCHMARKS = REPO / "docs" / "benchmarks.md"
SECTION = "## Pose pairing (`make bench-pairing`, issue 14)"
TABLE_HEADER = (
    "| date | machine | patches A x B | views | top | pair s (read, pair and write) | pairs | --unique: patches, s | peak RSS MB | command |\n"
    "|---|---|---|---|---:|---|---:|---|---:|---|"
)
VIEWS = ("full-body-front", "head-and-shoulders-front", "full-body-back", "head-and-shoulders-back")


def write_patch_set(path: Path, count: int, views: int, seed: int) -> None:
    """``count`` patches with random poses in random boxes, joint scores in [0, 1), views taken in turn."""
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 1500, size=(count, 2))
    sides = rng.uniform(50, 500, size=(count, 1))
    joints = corners[:, None] + rng.uniform(0, 1, size=(count, 17, 2)) * sides[:, None]
    keypoints = np.concatenate([joints, rng.uniform(0, 1, size=(count, 17, 1))], axis=2).round(2)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PATCH_COLUMNS)
        for n in range(count):
            x1, y1 = corners[n]
            writer.writerow(
                (
                    "v.mp4",
                    n,
                    n / 24,
                    0,
                    f"p{n}.jpg",
                    f"{x1:.1f}",
                    f"{y1:.1f}",
                    f"{x1 + sides[n, 0]:.1f}",
                    f"{y1 + sides[n, 0]:.1f}",
                    0.99,
                    VIEWS[n % views],
                    json.dumps(keypoints[n].tolist()),
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=50_000, help="patches in each set")
    parser.add_argument("--views", type=int, default=4, choices=range(1, 5))
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument(
        "--unique-patches", type=int, default=4_000, help="patches per set for the --unique timing (0: skip)"
    )
    parser.add_argument("--min-joint-score", type=float, default=0.3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pairing-") as work:
        a, b, out = Path(work) / "a.csv", Path(work) / "b.csv", Path(work) / "pairs.csv"
        write_patch_set(a, args.patches, args.views, seed=1)
        write_patch_set(b, args.patches, args.views, seed=2)
        started = time.perf_counter()
        count = pair_files(a, b, out, args.top, args.min_joint_score)
        seconds = time.perf_counter() - started
        print(
            f"{args.patches} x {args.patches} patches, {args.views} views, top {args.top}: {count} pairs in {seconds:.1f} s",
            flush=True,
        )
        unique_text = "-"
        if args.unique_patches:
            write_patch_set(a, args.unique_patches, args.views, seed=3)
            write_patch_set(b, args.unique_patches, args.views, seed=4)
            started = time.perf_counter()
            pair_files(a, b, out, min_joint_score=args.min_joint_score, unique=True)
            unique_s = time.perf_counter() - started
            unique_text = f"{args.unique_patches} x {args.unique_patches}, {unique_s:.1f}"
            print(f"--unique: {args.unique_patches} x {args.unique_patches} patches in {unique_s:.1f} s", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"peak RSS {peak_mb} MB")
    if not args.no_record:
        command = f'`make bench-pairing BENCH_ARGS="--patches {args.patches} --views {args.views} --top {args.top}"`'
        append_table_row(
            BENCHMARKS,
            SECTION,
            TABLE_HEADER,
            f"| {time.strftime('%Y-%m-%d')} | {describe_machine(torch.device('cpu'))} | {args.patches:,} x {args.patches:,} | {args.views} | {args.top} "
            f"| {seconds:.1f} | {count:,} | {unique_text} | {peak_mb} | {command} |",
        )


if __name__ == "__main__":
    main()
