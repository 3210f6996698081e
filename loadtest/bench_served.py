"""Served vs raw: how close TorchServe with our handler comes to the model's own speed (docs/architecture.md, Measuring), per
compiled format.

    python -m loadtest.bench_served --model pose_resnet50 [--protocol rest|grpc] [--duration 60s]
        [--formats pt2 torchscript] [--users N] [--batch-size B --max-batch-delay MS --workers W --threads T]
        [--netty-threads N]

For each format (default: ``.pt2`` and TorchScript for models torch.export takes, else
TorchScript) the model is exported (timed), then measured both ways, one after the other
on the same machine:

1. raw: the archive's compiled model in this process (with the workers' environment,
   ``runtime.torchserve.WORKER_ENVIRONMENT``), called on the exact inputs the
   handler prepares from batches of the load-test photos (every photo equally often, as
   the load sends them), at the served batch size and the worker's torch threads:
   images/s = images / the sum of each batch's median seconds per call, times the
   number of workers (each as fast as alone: an upper bound when they share cores);
2. served: the same archive in TorchServe (production config, token auth on, loopback
   ports), driven by the closed-loop load (loadtest/load.py) at saturation (2 x batch size
   x workers clients, back to back) with the same photos, every answer checked: images/s =
   answered requests per second.

Requests carry no options (the model's default answer), so every request is one image
and one model input, as in the raw run. This VM's speed drifts by tens of percent within
minutes, so the formats take turns (``--rounds``, default 2): raw runs alternate, then one
server per format is started (timed: TorchServe and the model's workers ready) and load
windows alternate between them; figures are means over the rounds. Each format's served
figure is divided by the faster raw figure of the run. Prints a row per format and appends
them to docs/benchmarks.md.
"""

import argparse
import contextlib
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from export.archive import SERVING_FLAGS, add_serving_arguments, serving_overrides
from export.registry import RECIPES
from loadtest.load import Window, grpc_turns, parse_duration, rest_turns, run
from loadtest.machine import describe_machine, median_seconds
from loadtest.photos import SIZES, photo_pool
from loadtest.results import BENCHMARKS, append_table_row
from loadtest.scenarios import requests_for
from runtime.torchserve import REPO, WORKER_ENVIRONMENT, TorchServe, loopback_overrides
from tests.fixtures.in_process import load_handler

RAW_BUDGET_S = 30.0
WARM_UP_CALLS = 3  # measured on pose_resnet50 here: calls 1 to 4 ran at 40 to 70% of the later speed
SECTION = "## Served vs raw, per compiled format (`make bench`)"
TABLE_HEADER = (
    "| date | machine | model | format | protocol | batch | delay ms | workers | threads | users | export s | start s "
    "| raw img/s | served img/s | served / faster raw | p50 / p95 / p99 ms | failures | mean batch | command |\n"
    "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"
)


def raw_images_per_second(archive: Path, repeats: int, budget_s: float = RAW_BUDGET_S) -> tuple[float, int]:
    """Images/s of the bare model call on served batches of the photo pool, and the torch threads it ran with."""
    with tempfile.TemporaryDirectory(prefix="bench-raw-") as work:
        zipfile.ZipFile(archive).extractall(work)
        config = yaml.safe_load((Path(work) / "model-config.yaml").read_text())
        handler, context, request_processor = load_handler(Path(work), config)
        batch_size = config["batchSize"]
        photos = photo_pool()
        # The load sends every photo of the pool equally often; so do these batches,
        # so models whose cost follows the image size (style transfer) see the served mix.
        batches = []
        for first in range(0, math.lcm(len(photos), batch_size), batch_size):
            rows = [{"body": bytearray(photos[(first + i) % len(photos)].data)} for i in range(batch_size)]
            context.request_processor = [request_processor({"body": {"content-type": "image/jpeg"}}) for _ in rows]
            batch = handler.preprocess(rows)
            assert not batch.errors, batch.errors
            batches.append(batch.inputs)
        with torch.inference_mode():
            for _ in range(
                WARM_UP_CALLS
            ):  # TorchScript's profiling executor and the allocator settle over the first calls
                start = time.perf_counter()
                handler.forward(batches[0])
            affordable = int(
                budget_s / (time.perf_counter() - start) / len(batches)
            )  # slow models (detectors on CPU) get fewer calls
            calls = max(1, min(repeats, affordable))
            seconds = sum(
                median_seconds(lambda: handler.forward(inputs), calls, torch.device("cpu")) for inputs in batches
            )
        return batch_size * len(batches) / seconds, torch.get_num_threads()


@dataclass
class FormatRun:
    """One format's archive and figures: export and start seconds, raw and served (means over the rounds)."""

    format: str
    archive: Path
    export_s: float
    config: dict
    raws: list[float] = field(default_factory=list)
    threads: int = 0
    start_s: float = 0.0
    server: TorchServe | None = None
    served_threads: int = 0
    windows: list[Window] = field(default_factory=list)

    @property
    def raw(self) -> float:
        """Images/s of all workers (each as fast as alone: an upper bound when they share cores)."""
        return statistics.mean(self.raws) * self.config["minWorkers"]

    @property
    def served(self) -> float:
        return statistics.mean(window.per_s for window in self.windows)

    def users(self, asked: int | None) -> int:
        """Requests in flight: ``asked``, or two batches per worker."""
        return asked or 2 * self.config["batchSize"] * self.config["minWorkers"]

    def window(self, asked: str | None) -> float:
        """A window's seconds: ``asked`` (60s, 2m), or long enough for 6 full batches and at least 30 s."""
        return parse_duration(asked) if asked else max(30, round(6 * self.config["batchSize"] / self.raw))


def served(server: TorchServe, model: str, protocol: str, users: int, warm_up_s: float, seconds: float) -> Window:
    """``users`` clients of ``protocol`` back to back, sending each load-test photo with no options (one image and one
    model input per request, as in the raw run), every answer checked: the window after ``warm_up_s``."""
    requests, token = requests_for(model, photo_pool(), draws=1, plain=True), server.token("inference")
    if protocol == "rest":
        turns = rest_turns(f"{server.inference_url}/predictions/{model}", token, requests, users)
    else:
        turns = grpc_turns(server.grpc_target, token, model, requests, users)
    return run(turns, warm_up_s, seconds)


def export_format(model: str, model_format: str, overrides: list[str], work: Path) -> FormatRun:
    """Export ``model`` in ``model_format`` into its own store, timed (compiles included)."""
    store = work / model_format / "store"
    started = time.perf_counter()
    # A cache of its own: the export time is a whole compile, not a cache hit.
    environment = {**os.environ, "HUMANSERVE_COMPILE_CACHE": str(work / "compile-cache")}
    command = [sys.executable, "-m", "export", model, "--store", str(store), "--format", model_format, *overrides]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, env=environment)
    archive = store / f"{model}.mar"
    return FormatRun(
        model_format,
        archive,
        time.perf_counter() - started,
        yaml.safe_load(zipfile.ZipFile(archive).read("model-config.yaml")),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pose_resnet50")
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument(
        "--duration",
        help="each window at saturation, e.g. 60s (default: long enough for 6 full batches, at least 30s)",
    )
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=("pt2", "torchscript"),
        help="default: pt2 and torchscript where torch.export takes the model, else torchscript",
    )
    parser.add_argument("--users", type=int, help="requests in flight (default 2 x batch size x workers)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="turns each format takes, raw and served (figures are means over them)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=200,
        help=f"most timed raw calls per batch (as many as fit in {RAW_BUDGET_S:g}s, at least 1): this VM's per-call times vary 2-fold",
    )
    parser.add_argument("--no-record", action="store_true", help="print only; do not add rows to docs/benchmarks.md")
    serving = parser.add_argument_group("serving settings (default: the recipe's)")
    add_serving_arguments(serving)
    serving.add_argument(
        "--netty-threads",
        type=int,
        help="TorchServe's front-end and back-end event-loop threads (default: one per core)",
    )
    args = parser.parse_args()
    if any(os.environ.get(key) != value for key, value in WORKER_ENVIRONMENT.items()):
        # The raw run gets the workers' environment (glibc reads its malloc settings at start):
        # TorchScript's allocations run faster with it, so raw would otherwise understate it.
        os.execve(
            sys.executable,
            [sys.executable, "-m", "loadtest.bench_served", *sys.argv[1:]],
            {**os.environ, **WORKER_ENVIRONMENT},
        )
    flags = {name: flag for name, flag, _ in SERVING_FLAGS}
    overrides = [f"{flags[name]}={value}" for name, value in serving_overrides(args).items()]
    netty = (
        {"number_of_netty_threads": str(args.netty_threads), "netty_client_threads": str(args.netty_threads)}
        if args.netty_threads
        else {}
    )
    formats = args.formats or (
        ["pt2", "torchscript"] if any(part.pt2 for part in RECIPES[args.model].parts) else ["torchscript"]
    )

    with tempfile.TemporaryDirectory(prefix="bench-served-") as work, contextlib.ExitStack() as servers:
        runs = [export_format(args.model, model_format, overrides, Path(work)) for model_format in formats]
        # This VM's speed drifts by tens of percent within minutes: formats take turns, raw and served alike.
        for _ in range(args.rounds):
            for run in runs:
                per_worker, run.threads = raw_images_per_second(run.archive, args.repeats, RAW_BUDGET_S / args.rounds)
                run.raws.append(per_worker)
                print(
                    f"{run.format}: raw {per_worker:.2f} images/s per worker at batch {run.config['batchSize']} with {run.threads} torch threads",
                    flush=True,
                )
        for run in runs:
            # Every format's server runs from here on; an idle one costs next to nothing.
            server = TorchServe(
                Path(work) / run.format / "run",
                [args.model],
                run.archive.parent,
                overrides={**loopback_overrides(run.archive.parent), **netty},
            )
            started = time.perf_counter()
            servers.enter_context(server.running(600))
            run.start_s, run.server = time.perf_counter() - started, server
            run.served_threads = server.describe(args.model)["customizedMetadata"]["torch_threads"]
            # The worker's first calls are slow too: warm up for a few batches.
            served(
                server,
                args.model,
                args.protocol,
                run.users(args.users),
                max(10, 3 * run.config["batchSize"] / run.raw),
                0,
            )
        for round_index in range(args.rounds):
            for run in runs:
                users, seconds = run.users(args.users), run.window(args.duration)
                window = served(run.server, args.model, args.protocol, users, 0, seconds)
                run.windows.append(window)
                batch = f", mean batch {window.mean_batch():.1f}" if window.mean_batch() else ""
                print(
                    f"{args.model} ({run.format}, round {round_index + 1}) over {args.protocol}, {users} users: "
                    f"{window.per_s:.2f} answers/s, p50 {window.ms(50):.0f} ms, p95 {window.ms(95):.0f} ms, "
                    f"p99 {window.ms(99):.0f} ms, {len(window.failures)} failures of {len(window.outcomes)}{batch}",
                    flush=True,
                )

    fastest_raw = max(run.raw for run in runs)
    machine = describe_machine(torch.device("cpu"))
    for run in runs:
        print(
            f"{run.format}: exported in {run.export_s:.0f} s, started in {run.start_s:.1f} s; served / faster raw = {run.served:.2f} / {fastest_raw:.2f} "
            f"= {run.served / fastest_raw:.2f} (own raw {run.raw:.2f}; {machine}; worker threads {run.served_threads}, raw threads {run.threads})"
        )
        if run.served_threads != run.threads:
            print(
                f"warning: the worker ran {run.served_threads} torch threads, the raw run {run.threads}",
                file=sys.stderr,
            )
    if len(runs) == 2:
        first, second = runs
        print(
            f"{first.format} / {second.format}: raw {first.raw / second.raw:.2f}, served {first.served / second.served:.2f}"
        )
    if args.no_record:
        return
    sizes = ", ".join(f"{w}x{h}" for w, h in SIZES)
    bench_args = (
        overrides
        + ([f"--netty-threads={args.netty_threads}"] if args.netty_threads else [])
        + (["--formats", *formats] if args.formats else [])
    )
    for run in runs:
        config, windows = run.config, run.windows
        command = "make bench " + shlex.join(
            [
                f"MODEL={args.model}",
                f"PROTOCOL={args.protocol}",
                f"DURATION={run.window(args.duration):g}s",
                *([f"BENCH_ARGS={' '.join(bench_args)}"] if bench_args else []),
            ]
        )
        workers_note = (
            f" ({config['minWorkers']} x {run.raw / config['minWorkers']:.2f})" if config["minWorkers"] > 1 else ""
        )
        percentiles = " / ".join(f"{statistics.mean(w.ms(q) for w in windows):.0f}" for q in (50, 95, 99))
        batches = [w.mean_batch() for w in windows if w.mean_batch()]
        append_table_row(
            BENCHMARKS,
            SECTION,
            TABLE_HEADER,
            f"| {time.strftime('%Y-%m-%d')} | {machine} | {args.model} | {run.format} | {args.protocol} | {config['batchSize']} | {config['maxBatchDelay']} "
            f"| {config['minWorkers']} | {run.served_threads} | {run.users(args.users)} | {run.export_s:.0f} | {run.start_s:.1f} | {run.raw:.2f}{workers_note} "
            f"| {run.served:.2f} | **{run.served / fastest_raw:.2f}** | {percentiles} | {sum(len(w.failures) for w in windows)} of {sum(len(w.outcomes) for w in windows)} "
            f"| {f'{statistics.mean(batches):.1f}' if batches else 'n/a (gRPC)'} | `{command}` ({args.rounds} rounds; photos {sizes}) |",
        )
    print(f"{len(runs)} rows added to {BENCHMARKS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
