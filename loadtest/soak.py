"""The mixed-model soak: `make soak [DURATION=30m]` (BENCH_ARGS: --models --users --priming --singles --kill-at --env
--jvm --no-record).

One TorchServe (production config, token authorization on with the pod's key lifetime, loopback ports) serves several
models; the closed-loop load (loadtest/load.py) drives all of them at once, ``--users`` clients per model, half
over REST and half over gRPC, every answer checked. First
each model is primed: ``--priming`` rounds of one full batch of each load-test photo (the
largest photos in full batches are a worker's peak; an allocator that first meets it late in
the run takes a step up there, which a slope would read as growth). Then each model runs
alone for ``--singles`` seconds with the same users, for the throughput the mixed run is
judged against. During the mixed run:

- each process's resident memory (the Java frontend, every worker) is sampled every 30 s;
  the slope after warm-up tells a leak from a plateau: least squares (MB/min, with its standard
  error), and Theil-Sen's median of the pairwise slopes (with its 95 % interval), which a few
  one-sample dips (an allocator handing memory back) or batch-sized peaks do not move;
  the frontend's heap too (``jstat -gc``, where a JDK provides it): how much the JVM has committed,
  and its old generation's occupancy, which grows only if the frontend keeps objects alive;
- one worker is killed once (``kill -9``, at ``--kill-at`` of the run): the requests it lost
  (failures of its model from the kill until it answers again) and the seconds until its
  model has a worker again and answers again;
- failures by code, outside and inside the kill's window; p50/p99 and requests per minute;
- the bytes TorchServe's logs grew by;
- throughput: the mixed run's answers/s against the single runs combined by each model's
  share of the mixed requests (1 / sum(share / single throughput): what the server would
  do if it time-shared perfectly between the models).

The report is printed and written as JSON (``--report``), and a row is appended to
docs/benchmarks.md (unless ``--no-record``).
"""

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from humanserve_client import RestClient, ServerError
from loadtest.accounting import MemorySampler
from loadtest.load import ClosedLoop, Outcome, grpc_turns, parse_duration, percentile, rest_turns
from loadtest.machine import describe_machine
from loadtest.photos import Photo, photo_pool
from loadtest.results import BENCHMARKS, RESULTS, append_table_row
from loadtest.scenarios import Scenario, requests_for, scenario_for
from runtime.torchserve import (
    DEFAULT_STORE,
    REPO,
    THREADS_VARIABLE,
    WORKER_ENVIRONMENT,
    TorchServe,
    allocator_in,
    loopback_overrides,
    read_properties,
)

DEFAULT_MODELS = ["pose_resnet50", "pose_pipeline", "person_segmenter_lraspp", "style_candy"]
POD_PROPERTIES = REPO / "k8s" / "base" / "pod.properties"
SECTION = "## Mixed-model soak (`make soak`, issue 18)"
TABLE_HEADER = (
    "| date | machine | minutes | models | users | answers/s | mixed / time-shared singles | failures outside the kill "
    "| kill: lost, model ready s, answering s | worst RSS slope MB/min | log MB | command |\n"
    "|---|---|---:|---|---:|---:|---:|---|---|---|---:|---|"
)


def soak_overrides(store: Path) -> dict[str, str]:
    """The tests' loopback ports, and the pod's key lifetime: with TorchServe's 60 minutes every request of a longer
    soak got 400."""
    return {
        **loopback_overrides(store),
        "token_expiration_min": read_properties(POD_PROPERTIES)["token_expiration_min"],
    }


def _centred_minutes(samples: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray] | None:
    """(seconds, MB) samples as minutes about their mean and MB; None under 3 samples or all at one time (no slope)."""
    if len(samples) < 3:
        return None
    seconds, megabytes = np.array(samples).T
    minutes = seconds / 60 - (seconds / 60).mean()
    return (minutes, megabytes) if float(minutes @ minutes) > 0 else None


def rss_slope(samples: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares slope of (seconds, MB) samples in MB per minute and its standard error; None under 3 samples or all
    at one time."""
    centred = _centred_minutes(samples)
    if centred is None:
        return None
    minutes, megabytes = centred
    spread = float(minutes @ minutes)
    slope = float(minutes @ megabytes) / spread
    residuals = megabytes - megabytes.mean() - slope * minutes
    return slope, float(np.sqrt(residuals @ residuals / (len(samples) - 2) / spread))


def robust_rss_slope(samples: list[tuple[float, float]]) -> tuple[float, float, float] | None:
    """Theil-Sen slope of (seconds, MB) samples in MB per minute and its 95 % interval (scipy); None where ``rss_slope``
    is."""
    centred = _centred_minutes(samples)
    if centred is None:
        return None
    fit = stats.theilslopes(centred[1], centred[0], alpha=0.95)
    return float(fit.slope), float(fit.low_slope), float(fit.high_slope)


def memory_trend(series: list[tuple[float, float]], warm_up_s: float) -> dict:
    """First, last and peak MB of a series, and its slopes after the warm-up, counted from the series' own start."""
    first = series[0][0]
    # After the run's warm-up, and after the process's own (a worker started in place of the killed one).
    after = [(at, mb) for at, mb in series if at >= first + warm_up_s]
    slope, stderr = rss_slope(after) or (None, None)
    robust, low, high = robust_rss_slope(after) or (None, None, None)
    return {
        "first_mb": round(series[0][1]),
        "last_mb": round(series[-1][1]),
        "peak_mb": round(max(mb for _, mb in series)),
        "slope_mb_per_min": slope,
        "slope_stderr_mb_per_min": stderr,
        "robust_slope_mb_per_min": robust,
        "robust_slope_95_mb_per_min": None if robust is None else [low, high],
        "samples": [[round(at), round(mb)] for at, mb in series],
    }


def load_for(server: TorchServe, models: list[str], users: int, seconds: float) -> list[Outcome]:
    """``users`` clients per model, half over REST and half over gRPC, for ``seconds``; every answer, labelled with its
    model."""
    token, photos, turns = server.token("inference"), photo_pool(), []
    for model in models:
        requests, sequence_length = requests_for(model, photos), scenario_for(model).sequence_length
        url, target = f"{server.inference_url}/predictions/{model}", server.grpc_target
        turns += rest_turns(url, token, requests, users // 2, model, sequence_length)
        turns += grpc_turns(target, token, model, requests, users - users // 2, model, sequence_length)
    with ClosedLoop(turns) as loop:
        loop.window(seconds)
    loop.check()
    if not loop.outcomes:
        raise RuntimeError(f"no answers in {seconds:.0f} s from {', '.join(models)}")
    return loop.outcomes


def prime(server: TorchServe, models: list[str], rounds: int) -> list[str]:
    """``rounds`` times, one full batch of each load-test photo to each model, answers checked; the problems found."""
    client = RestClient(server.inference_url, token=server.token("inference"), timeout_s=300)
    rng, photos, problems = random.Random(0), photo_pool(), []
    try:
        for model in models:
            scenario, batch = scenario_for(model), int(server.describe(model, customized=False)["batchSize"])
            for _ in range(rounds):
                for photo in photos:
                    requests = [(photo, scenario.options(photo, rng)) for _ in range(batch)]
                    with ThreadPoolExecutor(batch) as pool:  # sent together, so that the worker batches them
                        found = pool.map(lambda request: _problem(client, model, scenario, *request), requests)
                    problems += [f"{model}, {photo.name}: {problem}" for problem in found if problem]
    finally:
        client.close()
    return problems


def _problem(client: RestClient, model: str, scenario: Scenario, photo: Photo, options: dict[str, str]) -> str | None:
    """What is wrong with ``model``'s answer to ``photo``, or None."""
    try:
        return scenario.check(photo, options, client.predict(model, photo.data, options))
    except ServerError as error:
        return str(error)


def answers_per_second(outcomes: list[Outcome], start: float, end: float) -> float:
    """Right answers per second between ``start`` and ``end`` (Unix times)."""
    return sum(o.outcome == "ok" and start <= o.end <= end for o in outcomes) / max(end - start, 1e-9)


def log_bytes(run_dir: Path) -> int:
    return sum(path.stat().st_size for path in (run_dir / "logs").iterdir() if path.is_file())


@dataclass
class Kill:
    """The worker killed once during the mixed run, and how the server came back."""

    model: str
    pid: int
    at: float  # Unix time
    ready_s: float | None = None  # until the model had a READY worker again


def kill_worker_at(server: TorchServe, model: str, at: float, kills: list[Kill]) -> None:
    """At Unix time ``at``, kill -9 ``model``'s first worker and wait until the model has a worker again."""
    time.sleep(max(0.0, at - time.time()))
    pid = server.worker_pids(model)[0]
    os.kill(pid, signal.SIGKILL)
    kill = Kill(model, pid, time.time())
    kills.append(kill)
    while kill.ready_s is None:
        time.sleep(0.1)
        try:
            workers = server.describe(model, customized=False)["workers"]
        except Exception:  # the management API can stall while the worker restarts
            continue
        if any(w["status"] == "READY" and w.get("pid") not in (None, pid) for w in workers):
            kill.ready_s = time.time() - kill.at


def analyse(
    requests: list[Outcome],
    started: float,
    ended: float,
    warm_up_s: float,
    kill: Kill | None,
    singles: dict[str, float],
    samples: dict[str, list[tuple[float, float]]],
    heap: dict[str, list[tuple[float, float]]],
    logs: int,
    models: list[str],
) -> dict:
    """The soak's figures from its requests, memory samples (resident sets, the frontend's heap) and log growth."""
    measured = [r for r in requests if r.end >= started + warm_up_s]
    report: dict = {"requests": len(requests), "answers": sum(r.outcome == "ok" for r in requests)}
    # The kill's window: from the kill to its model's first answer after it (plus the answers already on their way).
    window_end = None
    if kill is not None:
        after = [r.end for r in requests if r.label == kill.model and r.end > kill.at and r.outcome == "ok"]
        window_end = min(after) if after else ended
        lost = Counter(
            r.outcome
            for r in requests
            if r.label == kill.model and kill.at <= r.end <= window_end and r.outcome != "ok"
        )
        report["kill"] = {
            "model": kill.model,
            "pid": kill.pid,
            "at_s": round(kill.at - started, 1),
            "lost": dict(lost),
            "ready_s": None if kill.ready_s is None else round(kill.ready_s, 2),
            "answering_s": round(window_end - kill.at, 2),
        }
    in_window = lambda r: kill is not None and r.label == kill.model and kill.at <= r.end <= window_end  # noqa: E731
    report["failures_outside_kill"] = dict(
        Counter(r.outcome for r in requests if r.outcome != "ok" and not in_window(r))
    )
    report["failures"] = dict(Counter(r.outcome for r in requests if r.outcome != "ok"))
    seconds = ended - (started + warm_up_s)
    report["answers_per_s"] = answers_per_second(measured, started + warm_up_s, ended)
    per_model = {
        model: answers_per_second([r for r in measured if r.label == model], started + warm_up_s, ended)
        for model in models
    }
    report["answers_per_s_by_model"] = per_model
    report["p50_p99_ms_by_model"] = {
        model: [round(percentile([r.seconds * 1000 for r in measured if r.label == model], q)) for q in (50, 99)]
        for model in models
    }
    if singles and report["answers_per_s"]:
        shares = {model: per_model[model] / report["answers_per_s"] for model in models}
        time_shared = 1 / sum(shares[model] / singles[model] for model in models)
        report["singles_answers_per_s"] = singles
        report["time_shared_answers_per_s"] = time_shared
        report["mixed_ratio"] = report["answers_per_s"] / time_shared
    minutes = defaultdict(list)
    for r in requests:
        minutes[int((r.end - started) // 60)].append(r)
    report["per_minute"] = [
        {
            "minute": minute,
            "requests": len(rs),
            "failures": sum(r.outcome != "ok" for r in rs),
            "p50_ms": round(percentile([r.seconds * 1000 for r in rs], 50)),
            "p99_ms": round(percentile([r.seconds * 1000 for r in rs], 99)),
        }
        for minute, rs in sorted(minutes.items())
    ]
    report["p50_ms"] = round(percentile([r.seconds * 1000 for r in measured], 50))
    report["p99_ms"] = round(percentile([r.seconds * 1000 for r in measured], 99))
    report["memory"] = {name: memory_trend(series, warm_up_s) for name, series in samples.items()}
    report["frontend_heap"] = {name: memory_trend(series, warm_up_s) for name, series in heap.items()}
    report["log_bytes"] = logs
    report["measured_s"] = round(seconds)
    return report


def summary(report: dict) -> str:
    """The report in a few lines."""
    lines = [
        f"{report['requests']} requests, {report['answers_per_s']:.2f} answers/s after warm-up, p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms",
        f"failures: {report['failures'] or 'none'}; outside the kill's window: {report['failures_outside_kill'] or 'none'}",
    ]
    lines.append(
        "by model (answers/s, p50 / p99 ms): "
        + "; ".join(
            f"{m} {report['answers_per_s_by_model'][m]:.2f}, {p50} / {p99}"
            for m, (p50, p99) in report["p50_p99_ms_by_model"].items()
        )
    )
    if "mixed_ratio" in report:
        singles = ", ".join(f"{m} {v:.2f}" for m, v in report["singles_answers_per_s"].items())
        lines.append(
            f"alone (answers/s): {singles}; time-shared {report['time_shared_answers_per_s']:.2f}; mixed / time-shared {report['mixed_ratio']:.2f}"
        )
    if "kill" in report:
        kill = report["kill"]
        lines.append(
            f"killed {kill['model']} worker {kill['pid']} at {kill['at_s']} s: lost {kill['lost'] or 'nothing'}, "
            f"a worker READY after {kill['ready_s']} s, answering again after {kill['answering_s']} s"
        )
    for label, trends in (("RSS", report["memory"]), ("frontend heap", report["frontend_heap"])):
        for name, memory in trends.items():
            lines.append(
                f"{label} {name}: {memory['first_mb']} -> {memory['last_mb']} MB (peak {memory['peak_mb']}), slope after warm-up "
                + (
                    f"{slope_text(memory)} MB/min"
                    if memory["slope_mb_per_min"] is not None
                    else "n/a (too few samples)"
                )
            )
    lines.append(f"log output: {report['log_bytes'] / 2**20:.2f} MB")
    lines.append(
        "per minute (requests, failures, p50 ms, p99 ms): "
        + "; ".join(
            f"{m['minute']}: {m['requests']}, {m['failures']}, {m['p50_ms']}, {m['p99_ms']}"
            for m in report["per_minute"]
        )
    )
    return "\n".join(lines)


def slope_text(memory: dict) -> str:
    """Both slopes with their uncertainty: batch-sized swings of RSS make a short run's least-squares slope
    uncertain."""
    low, high = memory["robust_slope_95_mb_per_min"]
    return (
        f"{memory['slope_mb_per_min']:+.2f} ± {memory['slope_stderr_mb_per_min']:.2f} "
        f"(Theil-Sen {memory['robust_slope_mb_per_min']:+.2f}, 95 % {low:+.2f} to {high:+.2f})"
    )


def record(report: dict, args: argparse.Namespace, machine: str) -> None:
    sloped = {name: m for name, m in report["memory"].items() if m["slope_mb_per_min"] is not None}
    worst = max(sloped, key=lambda name: abs(sloped[name]["robust_slope_mb_per_min"])) if sloped else None
    kill = report.get("kill")
    kill_text = (
        f"{sum(kill['lost'].values())} ({', '.join(f'{n}x {c}' for c, n in kill['lost'].items()) or '-'}), {kill['ready_s']}, {kill['answering_s']}"
        if kill
        else "no kill"
    )
    given = sys.argv[1:] + (
        [] if any(a.startswith("--priming") for a in sys.argv) else [f"--priming={args.priming}"]
    )  # rows before it had none
    command = "python -m loadtest.soak " + shlex.join(given)
    append_table_row(
        BENCHMARKS,
        SECTION,
        TABLE_HEADER,
        f"| {time.strftime('%Y-%m-%d')} | {machine} | {parse_duration(args.duration) / 60:g} | {', '.join(args.models)} | {args.users * len(args.models)} "
        f"| {report['answers_per_s']:.2f} | {report.get('mixed_ratio', float('nan')):.2f} | {sum(report['failures_outside_kill'].values())} | {kill_text} "
        f"| {f'{slope_text(sloped[worst])} ({worst})' if worst else 'n/a'} | {report['log_bytes'] / 2**20:.2f} | `{command}` |",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--duration", default="30m", help="the mixed run: 90s, 30m, 1h")
    parser.add_argument("--users", type=int, default=4, help="users per model (half REST, half gRPC)")
    parser.add_argument(
        "--priming", type=int, default=2, help="rounds of one full batch of each photo per model, first (0: none)"
    )
    parser.add_argument("--singles", type=float, default=120, help="seconds of each model alone first (0: skip)")
    parser.add_argument(
        "--warm-up",
        type=float,
        default=300,
        help="seconds before memory slopes and throughput count (at most a third of the run)",
    )
    parser.add_argument("--interval", type=float, default=30, help="seconds between memory samples")
    parser.add_argument(
        "--kill-at", type=float, default=0.5, help="when to kill a worker, as a fraction of the run (0: never)"
    )
    parser.add_argument("--kill-model", default=None, help="whose worker to kill (default: the first model)")
    parser.add_argument(
        "--store", type=Path, default=DEFAULT_STORE, help="model store (missing or stale archives are exported there)"
    )
    parser.add_argument(
        "--env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help=f"more environment for TorchServe, e.g. {THREADS_VARIABLE}=2",
    )
    parser.add_argument(
        "--jvm",
        action="append",
        default=[],
        metavar="OPTION",
        help="a JVM option for the frontend after config.properties' vmargs (repeat; write --jvm=-Xms256m)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="the JSON report file, or a folder for its report.json (default: loadtest/results/<time>-soak/report.json)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only; do not add a row to docs/benchmarks.md")
    parser.add_argument("--no-export", action="store_true", help="serve the store as it is")
    args = parser.parse_args()
    duration = parse_duration(args.duration)
    warm_up_s = min(args.warm_up, duration / 3)
    if (
        args.report is not None and args.report.is_dir()
    ):  # a folder given: the report goes inside it (found out only at the end before)
        args.report = args.report / "report.json"
    report_dir = args.report.parent if args.report else RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-soak"
    report_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_export:
        subprocess.run(
            [sys.executable, "-m", "export", *args.models, "--if-stale", "--store", str(args.store)],
            cwd=REPO,
            check=True,
        )

    environment = {**WORKER_ENVIRONMENT, **dict(item.split("=", 1) for item in args.env)}
    machine = f"{describe_machine(torch.device('cpu'))}, {allocator_in(environment)}"
    with tempfile.TemporaryDirectory(prefix="soak-") as work:
        server = TorchServe(
            Path(work),
            args.models,
            args.store,
            overrides=soak_overrides(args.store),
            environment=environment,
            jvm_options=args.jvm,
        )
        with server.running(timeout=900):
            if args.priming:
                print(f"priming: {args.priming} rounds of one full batch of each photo per model", flush=True)
                problems = prime(server, args.models, args.priming)
                if problems:
                    raise RuntimeError(
                        f"{len(problems)} priming requests failed, the server is not fit to soak; the first: {problems[0]}"
                    )
            singles = {}
            for model in args.models if args.singles else []:
                started = time.time()
                requests = load_for(server, [model], args.users, args.singles)
                ramp = min(15.0, args.singles / 4)
                singles[model] = answers_per_second(requests, started + ramp, max(r.end for r in requests))
                print(f"{model} alone: {singles[model]:.2f} answers/s", flush=True)
            logs_before = log_bytes(server.run_dir)
            started = time.time()
            sampler = MemorySampler(server, args.models, args.interval, started)
            sampler.start()
            kills: list[Kill] = []
            killer = None
            if args.kill_at:
                killer = threading.Thread(
                    target=kill_worker_at,
                    args=(server, args.kill_model or args.models[0], started + args.kill_at * duration, kills),
                    daemon=True,
                )
                killer.start()
            requests = load_for(server, args.models, args.users, duration)
            ended = max(r.end for r in requests)
            if killer is not None:
                killer.join(timeout=120)
            sampler.stopped.set()
            sampler.join()
            report = analyse(
                requests,
                started,
                ended,
                warm_up_s,
                kills[0] if kills else None,
                singles,
                sampler.samples,
                sampler.heap,
                log_bytes(server.run_dir) - logs_before,
                args.models,
            )
    report.update(
        machine=machine,
        models=args.models,
        users_per_model=args.users,
        duration_s=duration,
        warm_up_s=warm_up_s,
        environment=args.env,
        jvm_options=args.jvm,
        priming_rounds=args.priming,
    )
    report_path = args.report or report_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=1))
    print(f"Machine: {machine}\n{summary(report)}\nreport: {report_path}")
    if not args.no_record:
        record(report, args, machine)
        print(f"row added to {BENCHMARKS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
