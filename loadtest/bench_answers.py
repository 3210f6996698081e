"""What answers of each size cost TorchServe's frontend, with its answer decoding as shipped and with the agent's fix.

    python -m loadtest.bench_answers [--sizes 1000 250000 1000000 4000000 8000000] [--clients 4] [--window 8]

TorchServe 0.12's frontend decodes a worker's answer to a batch again for every chunk (at most
64 KB) it reads from the worker's socket, copying the answers already complete each time
(runtime/frontend_agent/ResponseDecoderFix.java). A handler that answers each request with as many bytes
as it asks for (tests/fixtures/sized_answers_handler.py; batches of 4 within 20 ms, as the pose models)
is served twice, without and with the agent; ``--clients`` closed-loop clients ask for one size
at a time, and the CPU time the operating system accounts to the frontend (Java) and to the
worker over ``--window`` seconds is divided by the answers in it.
"""

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from export.archive import write_archive
from export.recipe import POSE_SERVING
from loadtest.accounting import cost_per_answer
from loadtest.load import Request, rest_turns
from loadtest.machine import describe_machine
from loadtest.results import write_report
from runtime.torchserve import TorchServe, loopback_overrides
from tests.fixtures.standins import SIZED_ANSWERS as MODEL
from tests.fixtures.standins import sized_answers_package


def measure(server: TorchServe, size: int, clients: int, warm_up_s: float, window_s: float) -> dict[str, float]:
    """Core-ms per answer (frontend, others) and answers/s for answers of ``size`` bytes."""
    request = Request(json.dumps({"bytes": size, "seed": 0, "status": 200}).encode(), "application/json")
    url = f"{server.inference_url}/predictions/{MODEL}"
    turns = rest_turns(url, server.token("inference"), [request], clients)
    frontend, others, per_s = cost_per_answer(server, turns, warm_up_s, window_s)
    return {"frontend": frontend, "others": others, "per_s": per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=[1000, 250_000, 1_000_000, 4_000_000, 8_000_000],
        help="answer sizes in bytes",
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warm-up", type=float, default=2.0, help="seconds of load before each window")
    parser.add_argument("--window", type=float, default=8.0, help="seconds of load each figure is measured over")
    args = parser.parse_args()

    lines = [
        "| answer | frontend as shipped: core-ms / answer (frontend / worker) | with the agent | answers/s as shipped | with the agent |",
        "|---:|---|---|---:|---:|",
    ]
    results: dict[bool, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as work:
        store = Path(work) / "store"
        write_archive(sized_answers_package(replace(POSE_SERVING, threads=1)), store)
        for agent in (False, True):
            server = TorchServe(
                Path(work) / f"run-{agent}", [MODEL], store, overrides=loopback_overrides(store), agent=agent
            )
            with server.running(300):
                results[agent] = {}
                for size in args.sizes:
                    results[agent][size] = measured = measure(server, size, args.clients, args.warm_up, args.window)
                    print(
                        f"{'with' if agent else 'without'} the agent, {size} bytes: {measured['frontend'] + measured['others']:.2f} core-ms "
                        f"(frontend {measured['frontend']:.2f}), {measured['per_s']:.0f} answers/s",
                        flush=True,
                    )
    for size in args.sizes:
        cells = [
            f"{r[size]['frontend'] + r[size]['others']:.2f} ({r[size]['frontend']:.2f} / {r[size]['others']:.2f})"
            for r in (results[False], results[True])
        ]
        lines.append(
            f"| {size:,} B | {cells[0]} | {cells[1]} | {results[False][size]['per_s']:.0f} | {results[True][size]['per_s']:.0f} |"
        )
    header = (
        f"Command: `python -m loadtest.bench_answers --clients {args.clients} --window {args.window:g}`, {time.strftime('%Y-%m-%d %H:%M')}. "
        f"Machine: {describe_machine(torch.device('cpu'))}."
    )
    report = header + "\n\n" + "\n".join(lines) + "\n"
    print("\n" + report)
    figures = {"as shipped": results[False], "with the agent": results[True]}
    print(f"written to {write_report('bench-answers', {'header': header, 'results': figures}, report)} and its .md")


if __name__ == "__main__":
    main()
