"""Helpers for tests against a real TorchServe: the three request forms, concurrent sends, bad requests."""

import base64
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image
from test_images import pixel_bomb_png

from humanserve_client import GrpcClient, RestClient
from oracles import paint_people
from runtime.torchserve import TorchServe


def encode(image: np.ndarray, image_format: str) -> bytes:
    """An RGB array as PNG, JPEG (quality 95, no chroma subsampling), GIF..."""
    buffer = io.BytesIO()
    save_args = {"quality": 95, "subsampling": 0} if image_format == "JPEG" else {}
    Image.fromarray(image).save(buffer, format=image_format, **save_args)
    return buffer.getvalue()


def post(
    server,
    http,
    model: str,
    data: bytes,
    form: str = "raw",
    options: dict | None = None,
    image_format: str = "PNG",
    timeout: float = 300,
):
    """Send one image in one of the three request forms: raw (+ X-Option headers), multipart, json."""
    url = f"{server.inference_url}/predictions/{model}"
    options = options or {}
    if form == "raw":
        headers = {"Content-Type": f"image/{image_format.lower()}"}
        headers.update(
            {
                f"X-Option-{k.replace('_', '-')}": json.dumps(v) if not isinstance(v, str) else v
                for k, v in options.items()
            }
        )
        return http.post(url, data=data, headers=headers, timeout=timeout)
    if form == "multipart":
        fields = {k: (None, json.dumps(v) if not isinstance(v, str) else v) for k, v in options.items()}
        return http.post(
            url, files={"data": ("photo", data, f"image/{image_format.lower()}"), **fields}, timeout=timeout
        )
    return http.post(url, json={"image": base64.b64encode(data).decode(), **options}, timeout=timeout)


def send_together(jobs: list, send: Callable[[Any], Any]) -> list:
    """Run ``send(job)`` for every job at the same moment, so the server batches them together."""
    start = threading.Barrier(len(jobs), timeout=60)

    def at_once(job):
        start.wait()
        return send(job)

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(at_once, jobs))


SMALL_JPEG = encode(paint_people(200, 150, [[0, 0, 200, 150]], seed=1).image, "JPEG")
SMALL_JPEG_BASE64 = base64.b64encode(SMALL_JPEG).decode()

# (name, how to send it, expected code, expected type, words the message must contain)
BAD_REQUESTS = [
    (
        "not an image",
        dict(data=b"definitely not an image", headers={"Content-Type": "application/octet-stream"}),
        400,
        "InvalidImage",
        "not an image",
    ),
    (
        "truncated JPEG",
        dict(data=SMALL_JPEG[:700], headers={"Content-Type": "image/jpeg"}),
        400,
        "InvalidImage",
        "cannot be decoded",
    ),
    ("empty body", dict(data=b"", headers={"Content-Type": "image/jpeg"}), 400, "EmptyRequest", "empty"),
    ("bad base64", dict(json={"image": "%%% not base64 %%%"}), 400, "InvalidBase64", "base64"),
    (
        "bad JSON",
        dict(data=b'{"image": "abc", ', headers={"Content-Type": "application/json"}),
        400,
        "InvalidJSON",
        "not valid JSON",
    ),
    (
        "unknown option",
        dict(json={"image": SMALL_JPEG_BASE64, "colour": "red"}),
        400,
        "UnknownOption",
        "unknown option 'colour'",
    ),
    (
        "unknown header option",
        dict(data=SMALL_JPEG, headers={"Content-Type": "image/jpeg", "X-Option-Zoom": "2"}),
        400,
        "UnknownOption",
        "'zoom'",
    ),
    (
        "threshold out of range",
        dict(json={"image": SMALL_JPEG_BASE64, "score_threshold": 2}),
        400,
        "InvalidOption",
        "'score_threshold' must be a number from 0 to 1",
    ),
    (
        "render with json format",
        dict(json={"image": SMALL_JPEG_BASE64, "render": True, "format": "json"}),
        400,
        "InvalidOption",
        "render",
    ),
    (
        "GIF",
        dict(data=encode(np.zeros((8, 8, 3), np.uint8), "GIF"), headers={"Content-Type": "image/gif"}),
        415,
        "UnsupportedImageType",
        "GIF",
    ),
    (
        "pixel bomb",
        dict(data=pixel_bomb_png(50_000, 50_000), headers={"Content-Type": "image/png"}),
        413,
        "ImageTooLarge",
        "2500000000 pixels",
    ),
    ("no image field", dict(files={"format": (None, "json")}), 400, "NoImage", "no image"),
]


def check_bad_requests_beside_good_ones(
    server, http, model: str, bad_requests: list, send_good: Callable[[], Any], check_good: Callable[[Any], None]
) -> None:
    """Send bad requests together with 4 good ones: each bad one gets its code, the good ones succeed, the worker
    lives."""
    pids_before = server.worker_pids(model)
    url = f"{server.inference_url}/predictions/{model}"

    def send(job):
        return send_good() if job is None else http.post(url, timeout=300, **job[1])

    responses = send_together([None] * 4 + list(bad_requests), send)
    for response in responses[:4]:
        assert response.status_code == 200, response.text
        check_good(response)
    for (name, _, code, kind, words), response in zip(bad_requests, responses[4:]):
        body = response.json()
        assert (response.status_code, body["code"], body["type"]) == (code, code, kind), (
            f"{model}, {name}: {response.text}"
        )
        assert words in body["message"], f"{model}, {name}: {body['message']!r} lacks {words!r}"
    assert max(int(r.headers["X-Batch-Size"]) for r in responses) > 1, "bad and good requests never shared a batch"
    assert server.worker_pids(model) == pids_before, f"a bad request restarted the {model} worker"


def clients(server: TorchServe, **tokens) -> tuple[RestClient, GrpcClient]:
    """A REST and a gRPC client of ``server``, inference and management APIs, no retries."""
    ports = server.properties
    rest = RestClient(server.inference_url, server.management_url, retries=0, **tokens)
    remote = GrpcClient(
        f"127.0.0.1:{ports['grpc_inference_port']}", f"127.0.0.1:{ports['grpc_management_port']}", retries=0, **tokens
    )
    return rest, remote


def wait_for_worker(server: TorchServe, model: str, killed: int = 0, timeout: float = 60) -> None:
    """Until ``model`` has a READY worker, and not the ``killed`` one (TorchServe reports it READY until it notices the
    death)."""
    deadline = time.monotonic() + timeout
    while not server.model_ready(model) or killed in server.worker_pids(model):
        assert time.monotonic() < deadline, f"{model} has no worker {timeout} s after the kill\n{server.log_tail()}"
        time.sleep(0.2)


def run_cli(
    server: TorchServe, *args: str, program: tuple[str, ...] = (sys.executable, "-m", "humanserve_client"), **run_args
) -> subprocess.CompletedProcess:
    """Run the CLI (``program``: another install's ``humanserve`` too) against ``server``; ``run_args`` go to
    subprocess.run (cwd, env)."""
    ports = server.properties
    connection = [
        "--url",
        server.inference_url,
        "--management-url",
        server.management_url,
        "--grpc-target",
        f"127.0.0.1:{ports['grpc_inference_port']}",
        "--grpc-management-target",
        f"127.0.0.1:{ports['grpc_management_port']}",
    ]
    command, rest = args[0], args[1:]
    return subprocess.run(
        [*program, command, *connection, *rest], capture_output=True, text=True, timeout=300, **run_args
    )
