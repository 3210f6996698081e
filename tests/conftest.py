"""Shared fixtures: a model store with oracle and real archives, and a real TorchServe serving it."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from export.archive import REPO, write_archive
from oracles import oracle_packages
from tools.server import TorchServe

ORACLES = ["pose_oracle", "detector_oracle", "keypoint_oracle", "pipeline_oracle"]
# Real architectures with random weights: they must load and answer in a worker, offline.
REAL_MODELS = ["pose_resnet50", "person_detector_mobilenet", "keypoint_rcnn"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def loopback_overrides(store: Path) -> dict[str, str]:
    """Free loopback ports for every API, and the test model store: all a test may change in the production config."""
    inference, management, metrics, grpc, grpc_management = free_ports(5)
    return {
        "inference_address": f"http://127.0.0.1:{inference}",
        "management_address": f"http://127.0.0.1:{management}",
        "metrics_address": f"http://127.0.0.1:{metrics}",
        "grpc_inference_address": "127.0.0.1",
        "grpc_inference_port": str(grpc),
        "grpc_management_port": str(grpc_management),
        "model_store": str(store),
    }


def server_overrides(store: Path) -> dict[str, str]:
    """The only differences from config.properties in tests: free loopback ports and token auth off."""
    return {**loopback_overrides(store), "disable_token_authorization": "true"}


@pytest.fixture(scope="session")
def export_log() -> list[str]:
    return []


@pytest.fixture(scope="session")
def model_store(tmp_path_factory, export_log) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    for package in oracle_packages():
        write_archive(package, store)
    result = subprocess.run(
        [sys.executable, "-m", "export", *REAL_MODELS, "--weights", "random", "--store", str(store)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    export_log.append(result.stderr)
    return store


@pytest.fixture(scope="session")
def server(model_store, tmp_path_factory):
    instance = TorchServe(
        tmp_path_factory.mktemp("torchserve"), ORACLES + REAL_MODELS, model_store, overrides=server_overrides(model_store)
    )
    instance.start()
    try:
        instance.wait_ready(timeout=300)
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def http() -> requests.Session:
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
    return session
