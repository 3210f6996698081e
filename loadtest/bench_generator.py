"""Threads or asyncio for the load generator (loadtest/load.py): this process's CPU per answered request of each.

    python -m loadtest.bench_generator [--clients 12] [--window 10]

One TorchServe serves the handler that answers ``{}`` without reading its request (tests/fixtures/empty_handler.py),
so the clients, not the model, are most of the work. The same closed loop is run twice on keep-alive connections
with a 640x480 JPEG: ``load.rest_turns`` on threads, and the same HTTP/1.1 requests from asyncio streams on one
thread. Each figure is the CPU time of this process over the window divided by the answers in it.
"""

import argparse
import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from export.archive import write_archive
from export.recipe import POSE_SERVING
from loadtest.load import ClosedLoop, Request, rest_turns
from loadtest.machine import describe_machine
from loadtest.photos import photo
from runtime.torchserve import TorchServe, loopback_overrides
from tests.fixtures.standins import ALONE, alone_package


def threads(url: str, token: str, request: Request, clients: int, warm_up_s: float, window_s: float) -> tuple:
    with ClosedLoop(rest_turns(url, token, [request], clients)) as load:
        load.window(warm_up_s)
        cpu = time.process_time()
        window = load.window(window_s)
        cpu = time.process_time() - cpu
    load.check()
    return cpu, len(window.answered), len(window.failures)


def asyncio_loop(url: str, token: str, request: Request, clients: int, warm_up_s: float, window_s: float) -> tuple:
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.split(":")
    head = (
        f"POST /{path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: {request.content_type}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(request.body)}\r\n\r\n"
    ).encode()
    counts = {"answered": 0, "failed": 0, "measuring": False}

    async def client(until: float) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.monotonic() < until:
            writer.write(head + request.body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            if counts["measuring"]:
                counts["answered" if status == 200 else "failed"] += 1
        writer.close()

    async def main() -> float:
        until = time.monotonic() + warm_up_s + window_s
        tasks = [asyncio.create_task(client(until)) for _ in range(clients)]
        await asyncio.sleep(warm_up_s)
        counts["measuring"], cpu = True, time.process_time()
        await asyncio.sleep(window_s)
        counts["measuring"], cpu = False, time.process_time() - cpu
        await asyncio.gather(*tasks)
        return cpu

    cpu = asyncio.run(main())
    return cpu, counts["answered"], counts["failed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--warm-up", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2, help="turns each generator takes (this VM's speed drifts)")
    args = parser.parse_args()
    shot = photo("astronaut", 640, 480)
    request = Request(shot.data, shot.content_type)
    with tempfile.TemporaryDirectory(prefix="bench-generator-") as work:
        store = Path(work) / "store"
        write_archive(alone_package(replace(POSE_SERVING, threads=1)), store)
        server = TorchServe(Path(work) / "run", [ALONE], store, overrides=loopback_overrides(store))
        with server.running(300):
            url, token = f"{server.inference_url}/predictions/{ALONE}", server.token("inference")
            for round_index in range(args.rounds):
                for name, generator in (("threads", threads), ("asyncio", asyncio_loop)):
                    cpu, answered, failed = generator(url, token, request, args.clients, args.warm_up, args.window)
                    print(
                        f"round {round_index + 1}, {name}: {cpu * 1000 / answered:.3f} client CPU ms / request, "
                        f"{answered / args.window:.0f} requests/s, {failed} failures",
                        flush=True,
                    )
    print(f"Machine: {describe_machine(torch.device('cpu'))}; {args.clients} clients, {args.window:g} s windows")


if __name__ == "__main__":
    main()
