"""Run Locust headless against one model and summarise it: `make loadtest MODEL=... USERS=... DURATION=...
PROTOCOL=...`.

Uses the server that `make start` / `make serve` runs (config.properties addresses, key in
run/key_file.json); when none answers, starts one for MODEL and stops it afterwards.
Writes Locust's HTML report and CSV statistics to loadtest/results/<time>-<model>-<protocol>/
and prints one line: throughput, p50/p95/p99 latency, failures, and how full batches were.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest.results import RESULTS
from runtime.torchserve import DEFAULT_RUN_DIR, DEFAULT_STORE, PRODUCTION_CONFIG, REPO, TorchServe

USER_CLASSES = {"rest": "RestUser", "grpc": "GrpcUser"}


@dataclass(frozen=True)
class LoadResult:
    """The aggregate of one Locust run."""

    requests: int
    failures: int
    throughput: float  # answered requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch_size: float | None
    report_dir: Path

    def summary(self, model: str, protocol: str, users: int) -> str:
        batch = f", mean batch {self.mean_batch_size:.1f}" if self.mean_batch_size else ""
        return (
            f"{model} over {protocol}, {users} users: {self.throughput:.2f} req/s, "
            f"p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, "
            f"{self.failures} failures of {self.requests}{batch}; report in {self.report_dir}"
        )


def locust_command(
    server: TorchServe, models: list[str], protocols: list[str], users: int, duration: str, report_dir: Path
) -> list[str]:
    """Locust headless against ``server``: ``users`` back-to-back users of ``protocols``' classes over ``models``,
    report in ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(REPO / "loadtest" / "locustfile.py"),
        *[USER_CLASSES[p] for p in protocols],
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        duration,
        "--host",
        server.inference_url,
        "--grpc-target",
        f"127.0.0.1:{server.properties['grpc_inference_port']}",
        "--model",
        ",".join(models),
        "--csv",
        str(report_dir / "locust"),
        "--html",
        str(report_dir / "report.html"),
        "--only-summary",
        "--stop-timeout",
        "30",
        "--loglevel",
        "WARNING",
    ]


def locust_environment(server: TorchServe) -> dict[str, str]:
    """What Locust needs from its environment: this repository's modules and the server's inference key."""
    return {**os.environ, "PYTHONPATH": str(REPO), "HUMANSERVE_TOKEN": server.token("inference") or ""}


def run_locust(
    server: TorchServe, model: str, protocol: str, users: int, duration: str, report_dir: Path, plain: bool = False
) -> LoadResult:
    """Drive ``model`` on ``server`` with ``users`` back-to-back Locust users for ``duration`` (``plain``: no
    options)."""
    command = locust_command(server, [model], [protocol], users, duration, report_dir)
    command += ["--batch-report", str(report_dir / "batches.json"), *(["--plain"] if plain else [])]
    finished = subprocess.run(command, cwd=REPO, env=locust_environment(server), capture_output=True, text=True)
    (report_dir / "locust.log").write_text(finished.stdout + finished.stderr)
    stats = report_dir / "locust_stats.csv"
    if not stats.exists():
        raise RuntimeError(f"locust wrote no statistics (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
    with stats.open() as file:
        total = next(row for row in csv.DictReader(file) if row["Name"] == "Aggregated")
    batches = report_dir / "batches.json"
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    seconds = float(total["Request Count"]) / float(total["Requests/s"]) if float(total["Requests/s"]) else 0
    return LoadResult(
        requests=requests,
        failures=failures,
        throughput=(requests - failures) / seconds if seconds else 0.0,
        p50_ms=float(total["50%"]),
        p95_ms=float(total["95%"]),
        p99_ms=float(total["99%"]),
        mean_batch_size=json.loads(batches.read_text())["mean_batch_size"] if batches.exists() else None,
        report_dir=report_dir,
    )


def warm_up(
    server: TorchServe, model: str, protocol: str, users: int = 4, duration: str = "10s", plain: bool = False
) -> None:
    """Load before the measured run, so the first batches' one-off costs stay out of the figures."""
    run_locust(server, model, protocol, users, duration, RESULTS / ".warm-up", plain)


def running_server() -> TorchServe | None:
    """The server of `make start` / `make serve`, if it answers."""
    server = TorchServe(DEFAULT_RUN_DIR, [], DEFAULT_STORE, PRODUCTION_CONFIG)
    return server if server.healthy() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pose_resnet50")
    parser.add_argument("--users", type=int, default=16, help="requests in flight")
    parser.add_argument("--duration", default="60s", help="Locust run time, e.g. 30s, 2m")
    parser.add_argument("--protocol", choices=sorted(USER_CLASSES), default="rest")
    args = parser.parse_args()

    server, started = running_server(), False
    if server is None:
        print(f"no server answers at config.properties' address: starting one for {args.model}", flush=True)
        subprocess.run([sys.executable, "-m", "export", args.model, "--if-stale"], cwd=REPO, check=True)
        server, started = TorchServe(DEFAULT_RUN_DIR, [args.model]), True
        server.start(detach=True)
    try:
        if started:
            server.wait_ready(600)
        elif not server.model_ready(args.model):
            sys.exit(
                f"the running server does not serve {args.model}: `make stop`, then `make start MODELS={args.model}`"
            )
        warm_up(server, args.model, args.protocol)
        report_dir = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.model}-{args.protocol}"
        result = run_locust(server, args.model, args.protocol, args.users, args.duration, report_dir)
        print(result.summary(args.model, args.protocol, args.users))
        (report_dir / "summary.txt").write_text(result.summary(args.model, args.protocol, args.users) + "\n")
        if result.failures:
            sys.exit(1)
    finally:
        if started:
            server.stop()


if __name__ == "__main__":
    main()
