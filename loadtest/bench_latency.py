"""Per-image latency of served models: one client, sequential requests, through TorchServe and the real handler.

Each model is exported with its default weights (random offline: the same compute as
trained ones) and served with the production config on loopback ports. The photo is
scikit-image's astronaut resized to SIZE, sent as JPEG.

    python -m loadtest.bench_latency person_segmenter style_candy [--size 640x480] [--requests 20]
        [--options '{"background": "transparent"}']
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from skimage import data

from loadtest.load import ClosedLoop, Request, percentile, rest_turns
from loadtest.machine import describe_machine
from loadtest.photos import encoded
from runtime.torchserve import REPO, TorchServe, loopback_overrides


def measure(url: str, token: str, photo: bytes, options: dict, count: int) -> list[float]:
    """Seconds per request for ``count`` sequential requests after two warm-ups; every answer must be 200."""
    text = {name: value if isinstance(value, str) else json.dumps(value) for name, value in options.items()}
    with ClosedLoop(rest_turns(url, token, [Request(photo, "image/jpeg", text)], 1), turns_each=count + 2) as load:
        load.join()
    load.check()
    failures = [o.failure for o in load.outcomes if o.failure]
    if failures:
        raise RuntimeError(f"{url}: {failures[0]}")
    return [o.seconds for o in load.outcomes[2:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the photo")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--options", default="{}", help="JSON options sent with every request")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    photo, options = encoded(data.astronaut(), width, height), json.loads(args.options)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as work:
        store = Path(work) / "store"
        subprocess.run([sys.executable, "-m", "export", *args.models, "--store", str(store)], cwd=REPO, check=True)
        server = TorchServe(Path(work) / "run", args.models, store, overrides=loopback_overrides(store))
        with server.running(600):
            for model in args.models:
                times = sorted(
                    measure(
                        f"{server.inference_url}/predictions/{model}",
                        server.token("inference"),
                        photo,
                        options,
                        args.requests,
                    )
                )
                weights = server.describe(model)["customizedMetadata"]["weights"]
                rows.append(
                    (model, times, ", ".join(f"{part}: {record['source']}" for part, record in weights.items()))
                )
    print(f"\nMachine: {describe_machine(torch.device('cpu'))}; served by TorchServe (1 worker, production config)")
    print(
        f"One client, {args.requests} sequential requests after 2 warm-ups; astronaut JPEG at {width}x{height}; options {options or 'none'}\n"
    )
    print("| model | weights | mean ms | p50 ms | p95 ms |")
    print("|---|---|---:|---:|---:|")
    for model, times, weights in rows:
        print(
            f"| {model} | {weights} | {statistics.mean(times) * 1000:.0f} | {percentile(times, 50) * 1000:.0f} "
            f"| {percentile(times, 95) * 1000:.0f} |"
        )


if __name__ == "__main__":
    main()
